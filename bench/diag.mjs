#!/usr/bin/env node
// Prices roomcast's per-publish work in plain JS: runtime CPU per publish at 1 socket for
// roomcast, js-durable and js-durable reshaped step by step (bench/peers/js-shaped.js), all
// interleaved round-robin. The difference between two rows is what that step costs.
//
//   node bench/diag.mjs [--rounds=5] [--per=300] [--sockets=1] [--roomcast=label:dir,...]
//
// --roomcast adds roomcast builds from other directories (each holding index.js and
// index_bg.wasm), e.g. variants built from a patched copy of src/, to price a change.
import { PEERS, DIAG_PEERS, Runtime, prepare } from "./lib/peers.mjs";
import { Pool, Publisher } from "./lib/client.mjs";
import { cpuMicros } from "./lib/proc.mjs";

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
/** Waits until the runtime is idle again; returns its CPU then. */
async function settle(pid) {
  let last = cpuMicros(pid).sched, quiet = 0;
  for (let i = 0; i < 200 && quiet < 3; i++) {
    await sleep(100);
    const now = cpuMicros(pid).sched;
    quiet = now - last < 2000 ? quiet + 1 : 0;
    last = now;
  }
  return last;
}
import { median } from "./lib/stats.mjs";

const str = (k, d) => process.argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3) ?? d;
const arg = (k, d) => Number(str(k, d));
const extra = (str("roomcast", "") || "").split(",").filter(Boolean).map((s) => {
  const [label, dir] = s.split(":");
  return { name: `roomcast-${label}`, kind: "roomcast", dir };
});
const only = str("peers", "")?.split(",").filter(Boolean);
const rounds = arg("rounds", 5), per = arg("per", 300), sockets = arg("sockets", 1);
const churn = arg("churn", 500); // sockets opened then closed per round, to price connect/close
setTimeout(() => { console.error("diag: timeout"); process.exit(2); }, 8 * 60_000).unref();

prepare();
const peers = [
  PEERS.find((p) => p.name === "roomcast"),
  PEERS.find((p) => p.name === "js-hibernating"),
  PEERS.find((p) => p.name === "js-durable"),
  ...DIAG_PEERS,
  ...extra,
].filter((p) => !only?.length || only.includes(p.name) || p.name === "js-durable" || extra.includes(p));
const rts = [];
try {
  for (const p of peers) rts.push(await Runtime.start(p));
  const state = {};
  for (const rt of rts) {
    const pool = new Pool(rt, "diag");
    await pool.open(sockets);
    const pub = new Publisher(rt, "diag");
    for (let i = 0; i < 300; i++) await pool.allGot((await pub.publish()).seq);
    state[rt.name] = { pool, pub, cpu: [], resp: [], fanout: [], connect: [], close: [] };
  }
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < rts.length; k++) {
      const rt = rts[(k + r) % rts.length], s = state[rt.name];
      const c0 = cpuMicros(rt.pid).sched;
      for (let i = 0; i < per; i++) {
        const res = await s.pub.publish();
        const t = await s.pool.allGot(res.seq);
        s.resp.push(res.ms); s.fanout.push(t - res.t0);
      }
      s.cpu.push((cpuMicros(rt.pid).sched - c0) / per);
      s.pool.reset();
      if (churn) {
        const extra = new Pool(rt, `churn${r}`);
        const a = await settle(rt.pid);
        await extra.open(churn, { concurrency: 50 });
        const b = await settle(rt.pid);
        await extra.close();
        const c = await settle(rt.pid);
        s.connect.push((b - a) / churn);
        s.close.push((c - b) / churn);
      }
    }
  }
  const base = median(state["js-durable"].cpu);
  console.log(`runtime CPU per publish, ${sockets} socket(s), median of ${rounds} rounds × ${per}`);
  console.log("| peer | CPU µs/publish | vs js-durable | publish p50 ms | fan-out p50 ms | CPU µs/connect | CPU µs/close | log lines |");
  console.log("|---|---:|---:|---:|---:|---:|---:|---:|");
  for (const rt of rts) {
    const s = state[rt.name], c = median(s.cpu);
    console.log(`| ${rt.name} | ${c.toFixed(0)} | ${c - base >= 0 ? "+" : ""}${(c - base).toFixed(0)} | ${median(s.resp).toFixed(2)} | ${median(s.fanout).toFixed(2)} | ${median(s.connect).toFixed(0)} | ${median(s.close).toFixed(0)} | ${rt.logLines} |`);
  }
  for (const rt of rts) { state[rt.name].pub.close(); await state[rt.name].pool.close(); }
} finally {
  for (const rt of rts) await rt.dispose();
}
process.exit(0);
