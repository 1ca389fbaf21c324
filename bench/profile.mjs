#!/usr/bin/env node
// Where a peer's publish time goes: samples the V8 CPU profiler of the worker's isolate (the
// Worker and its Durable Object run in the same one) through Miniflare's inspector while
// publishing one at a time into a room with a few sockets, then prints self and inclusive
// time per function, grouped into categories.
//
//   node bench/profile.mjs [--peer=roomcast] [--sockets=1] [--publishes=2000] [--top=40] [--dir=build/]
//
// The inspector slows the isolate down somewhat and samples are 100 µs apart: read the shares,
// not the absolute times. wasm frames are named only if the build kept its name section.
import WebSocket from "ws";
import { PEERS, DIAG_PEERS, Runtime, prepare } from "./lib/peers.mjs";
import { Pool, Publisher } from "./lib/client.mjs";
import { cpuMicros } from "./lib/proc.mjs";

const arg = (k, d) => process.argv.find((a) => a.startsWith(`--${k}=`))?.split("=")[1] ?? d;
const peerName = arg("peer", "roomcast");
const sockets = Number(arg("sockets", 1));
const publishes = Number(arg("publishes", 2000));
const top = Number(arg("top", 40));
const inspectorPort = Number(arg("port", 9339));
const target = arg("target", "core:user:");
// --workload=publish (default) | connect | close: what runs while the profiler samples.
const workload = arg("workload", "publish");

prepare();
// --dir=<build dir> profiles another roomcast build (e.g. one that kept its wasm name section).
const dir = arg("dir", "");
const peer = dir
  ? { name: `roomcast@${dir}`, kind: "roomcast", dir }
  : [...PEERS, ...DIAG_PEERS].find((p) => p.name === peerName);
if (!peer) throw new Error(`no peer ${peerName}`);
const rt = await Runtime.start(peer, { inspectorPort });
setTimeout(() => { console.error("profile: timeout"); process.exit(2); }, 5 * 60_000).unref();

class Cdp {
  constructor(url) {
    this.ws = new WebSocket(url, { perMessageDeflate: false, maxPayload: 1 << 30 });
    this.id = 0;
    this.pending = new Map();
    this.ws.on("message", (d) => {
      const m = JSON.parse(d);
      const p = this.pending.get(m.id);
      if (p) { this.pending.delete(m.id); m.error ? p.reject(new Error(JSON.stringify(m.error))) : p.resolve(m.result); }
    });
    this.open = new Promise((r, j) => { this.ws.once("open", r); this.ws.once("error", j); });
  }
  send(method, params = {}) {
    const id = ++this.id;
    this.ws.send(JSON.stringify({ id, method, params }));
    return new Promise((resolve, reject) => this.pending.set(id, { resolve, reject }));
  }
}

try {
  const pool = new Pool(rt, "profile");
  await pool.open(sockets);
  const pub = new Publisher(rt, "profile");
  for (let i = 0; i < 300; i++) await pool.allGot((await pub.publish()).seq); // warm up, tier up
  const cdp = new Cdp(`ws://127.0.0.1:${inspectorPort}/${target}`);
  await cdp.open;
  await cdp.send("Profiler.enable");
  await cdp.send("Profiler.setSamplingInterval", { interval: 100 });
  const t0 = performance.now();
  let churn;
  if (workload === "close") { churn = new Pool(rt, "profile"); await churn.open(publishes, { concurrency: 50 }); }
  const c0b = cpuMicros(rt.pid).sched;
  await cdp.send("Profiler.start");
  if (workload === "publish") {
    for (let i = 0; i < publishes; i++) await pool.allGot((await pub.publish()).seq);
  } else if (workload === "connect") {
    churn = new Pool(rt, "profile");
    await churn.open(publishes, { concurrency: 50 });
  } else if (workload === "close") {
    await churn.close();
    await new Promise((r) => setTimeout(r, 1500));
  }
  const { profile } = await cdp.send("Profiler.stop");
  if (workload === "connect") await churn.close();
  const wall = performance.now() - t0;
  const cpu = cpuMicros(rt.pid).sched - c0b;
  report(profile, { wall, cpu });
  cdp.ws.close();
  pub.close();
  await pool.close();
} finally {
  await rt.dispose();
}

function report(profile, { wall, cpu }) {
  const byId = new Map(profile.nodes.map((n) => [n.id, { ...n, self: 0 }]));
  const dt = profile.timeDeltas;
  for (let i = 0; i < profile.samples.length; i++) byId.get(profile.samples[i]).self += dt[i + 1] ?? 0;
  const parent = new Map();
  for (const n of byId.values()) for (const c of n.children ?? []) parent.set(c, n.id);
  const label = (n) => {
    const f = n.callFrame;
    const name = f.functionName || "(anonymous)";
    const where = f.url ? f.url.replace(/^.*\//, "") : "";
    return where ? `${name} [${where}]` : name;
  };
  const category = (n) => {
    const f = n.callFrame;
    if (["(idle)", "(program)", "(garbage collector)", "(root)"].includes(f.functionName)) return f.functionName;
    if (f.url.startsWith("wasm://") || /^\$|wasm-function/.test(f.functionName)) return "wasm (Rust)";
    if (!f.url) return "native (runtime APIs: SQL, send, headers, console...)";
    if (/index\.js$/.test(f.url) && peer.kind === "roomcast") return "JS glue (wasm-bindgen)";
    return "JS";
  };
  const self = new Map(), incl = new Map(), cats = new Map();
  let total = 0;
  for (const n of byId.values()) {
    if (!n.self) continue;
    total += n.self;
    const l = label(n);
    self.set(l, (self.get(l) ?? 0) + n.self);
    const c = category(n);
    cats.set(c, (cats.get(c) ?? 0) + n.self);
    // Inclusive: credit every distinct function on the stack once.
    const seen = new Set();
    for (let id = n.id; id !== undefined; id = parent.get(id)) {
      const k = label(byId.get(id));
      if (seen.has(k)) continue;
      seen.add(k);
      incl.set(k, (incl.get(k) ?? 0) + n.self);
    }
  }
  const busy = total - (cats.get("(idle)") ?? 0);
  const pct = (v) => `${((100 * v) / busy).toFixed(1).padStart(5)}%`;
  const unit = workload === "publish" ? "publish" : workload;
  const us = (v) => `${(v / publishes).toFixed(1).padStart(7)} µs/${unit}`;
  console.log(`# ${peer.name}: ${publishes} × ${workload}, ${sockets} socket(s), ${(wall / publishes).toFixed(2)} ms each;`);
  console.log(`# whole process CPU ${(cpu / publishes).toFixed(0)} µs/${unit}; this isolate sampled busy ${(busy / publishes).toFixed(0)} µs/${unit} (wall time on the isolate's thread, inspector on)\n`);
  console.log("## categories (self time, share of the isolate's busy time)");
  for (const [c, v] of [...cats].sort((a, b) => b[1] - a[1])) if (c !== "(idle)") console.log(`${pct(v)} ${us(v)}  ${c}`);
  console.log(`\n## top ${top} by self time`);
  for (const [l, v] of [...self].sort((a, b) => b[1] - a[1]).slice(0, top)) if (!l.startsWith("(idle)")) console.log(`${pct(v)} ${us(v)}  ${l}`);
  console.log(`\n## top ${top} by inclusive time`);
  for (const [l, v] of [...incl].sort((a, b) => b[1] - a[1]).slice(0, top)) if (!l.startsWith("(idle)") && !l.startsWith("(root)")) console.log(`${pct(v)} ${us(v)}  ${l}`);
}
