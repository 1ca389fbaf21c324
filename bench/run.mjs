#!/usr/bin/env node
// roomcast benchmark: the same workloads against roomcast and four JavaScript peers, in one
// process, interleaved round-robin per workload so that drift (other load, thermal, GC) hits
// every peer alike. See docs/benchmarks.md for the method and how to read the table.
//
//   node bench/run.mjs            full run (~5-10 min)
//   node bench/run.mjs --quick    smoke (~1-2 min)
//   node bench/run.mjs --only=cpu,big      a subset of workloads: wasm, memory, cpu (1-1,000
//                                          sockets: CPU and fan-out), big (5,000), sustained,
//                                          batched (1,000 sockets, batch=1), coldstart, storm,
//                                          large (one room of 20,000 sockets: shards vs one)
//   node bench/run.mjs --out=FILE          write the JSON elsewhere (default bench/results/)
//   node bench/run.mjs --also=old:DIR,…    other roomcast builds (a directory holding index.js
//                                          and index_bg.wasm) as extra peers, interleaved with
//                                          the others: before/after figures from one run
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import zlib from "node:zlib";
import crypto from "node:crypto";
import { execFileSync } from "node:child_process";
import WebSocket from "ws";
import { PEERS, BASELINE, BENCH, ROOT, ROOMCAST_BUILD, API_KEY, Runtime, prepare } from "./lib/peers.mjs";
import { Pool, Publisher, token } from "./lib/client.mjs";
import { cpuMicros, rssKiB, machineLoad, machineJiffies, workerdChildren } from "./lib/proc.mjs";
import { percentile, median, max, mean, linearFit } from "./lib/stats.mjs";

const args = process.argv.slice(2);
const QUICK = args.includes("--quick");
const ONLY = args.find((a) => a.startsWith("--only="))?.slice(7).split(",");
const OUT = args.find((a) => a.startsWith("--out="))?.slice(6) ?? path.join(BENCH, "results", QUICK ? "quick.json" : "latest.json");
const WORKLOADS = ["wasm", "memory", "cpu", "big", "sustained", "batched", "coldstart", "storm", "large", "rows", "presence"];
// Extra roomcast builds go right after roomcast itself, so they sit beside it in the table.
for (const spec of (args.find((a) => a.startsWith("--also="))?.slice(7) ?? "").split(",").filter(Boolean)) {
  const [label, dir] = spec.split(":");
  if (!label || !dir || !fs.existsSync(path.join(dir, "index_bg.wasm"))) throw new Error(`--also=${spec}: want label:dir with a build in dir`);
  PEERS.splice(1 + PEERS.filter((p) => p.kind === "roomcast").length - 1, 0, { name: `roomcast-${label}`, kind: "roomcast", dir: path.resolve(dir) });
}
const ROOMCASTS = PEERS.filter((p) => p.kind === "roomcast");
const want = (w) => !ONLY || ONLY.includes(w);
for (const w of ONLY ?? []) if (!WORKLOADS.includes(w)) throw new Error(`unknown workload ${w}; known: ${WORKLOADS.join(", ")}`);

/** Sizes of each workload: full and quick. */
const P = QUICK
  ? {
      memory: { rounds: 1, sockets: 1000 },
      levels: [
        { sockets: 1, warmup: 50, rounds: 2, perRound: 50 },
        { sockets: 10, warmup: 20, rounds: 2, perRound: 40 },
        { sockets: 100, warmup: 10, rounds: 2, perRound: 30 },
        { sockets: 1000, warmup: 5, rounds: 1, perRound: 15 },
      ],
      big: { sockets: 2000, warmup: 3, publishes: 10 },
      sustained: { sockets: 100, rounds: 2, seconds: 1, inflight: 8 },
      batched: { sockets: 300, rounds: 1, seconds: 1, inflight: 16 },
      large: { sockets: 2000, shardSize: 250, publishes: 10, missed: 3 },
      coldstart: { reps: 1 },
      storm: { sockets: 1000, before: 20, missed: 10 },
      rows: { publishes: 100, limit: 50 },
      presence: { watchers: 300, joins: 10 },
    }
  : {
      memory: { rounds: 2, sockets: 1000 },
      levels: [
        { sockets: 1, warmup: 200, rounds: 4, perRound: 200 },
        { sockets: 10, warmup: 50, rounds: 4, perRound: 150 },
        { sockets: 100, warmup: 30, rounds: 4, perRound: 100 },
        { sockets: 1000, warmup: 10, rounds: 3, perRound: 40 },
      ],
      big: { sockets: 5000, warmup: 5, publishes: 40 },
      // Short slices so that drift hits every peer alike.
      sustained: { sockets: 100, rounds: 10, seconds: 1, inflight: 8 },
      batched: { sockets: 1000, rounds: 5, seconds: 2, inflight: 16 },
      // 16,000, not 20,000: a process here may hold at most 20,000 open files (ulimit -n), and
      // both the bench (clients) and workerd (server ends) hold one per socket.
      large: { sockets: 16000, shardSize: 2000, publishes: 30, missed: 5 },
      coldstart: { reps: 3 },
      storm: { sockets: 1000, before: 50, missed: 20 },
      rows: { publishes: 400, limit: 200 },
      presence: { watchers: 1000, joins: 40 },
    };

const log = (...a) => console.error(`[${((performance.now() - T0) / 1000).toFixed(1).padStart(6)} s]`, ...a);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const T0 = performance.now();
const rotate = (xs, r) => xs.map((_, i) => xs[(i + r) % xs.length]);

// Never outlive the time budget; never leave a workerd behind.
const started = new Set();
const budgetMs = (QUICK ? 5 : 15) * 60_000;
setTimeout(() => { console.error(`bench: over ${budgetMs / 60000} min, giving up`); process.exit(2); }, budgetMs).unref();
process.on("exit", () => { for (const pid of started) { try { process.kill(pid, "SIGKILL"); } catch {} } });
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => process.exit(130));

async function start(peer, opts) {
  const rt = await Runtime.start(peer, opts);
  started.add(rt.pid);
  const dispose = rt.dispose.bind(rt);
  rt.dispose = async () => { await dispose(); started.delete(rt.pid); };
  return rt;
}

// ---------------------------------------------------------------------------------------------
// Results: figures[key] = { label, unit, better: "lower"|"higher", values: { peer: number } }.
const figures = {};
const raw = {};
function figure(key, label, unit, better, peer, value) {
  figures[key] ??= { label, unit, better, values: {} };
  figures[key].values[peer] = value;
}

/** Own CPU (this process and its reaped children) in µs, to tell our load from others'. */
function ownCpuMicros() {
  const f = fs.readFileSync("/proc/self/stat", "utf8");
  const x = f.slice(f.lastIndexOf(")") + 2).split(" ").map(Number);
  const ticks = x[11] + x[12] + x[13] + x[14];
  let live = 0;
  for (const pid of workerdChildren()) { try { live += cpuMicros(pid).stat; } catch {} }
  return (ticks * 1e6) / 100 + live;
}

// ---------------------------------------------------------------------------------------------
function wasmSize() {
  const wasm = fs.readFileSync(path.join(ROOMCAST_BUILD, "index_bg.wasm"));
  const gz = zlib.gzipSync(wasm, { level: 9 }).length;
  // Custom sections (the `name` section is debug info that a deploy could strip).
  const sections = [];
  let i = 8;
  const leb = () => { let n = 0, s = 0, b; do { b = wasm[i++]; n |= (b & 0x7f) << s; s += 7; } while (b & 0x80); return n >>> 0; };
  while (i < wasm.length) {
    const start = i, id = wasm[i++], len = leb(), body = i;
    let name = `#${id}`;
    if (id === 0) { const l = wasm[i]; name = wasm.subarray(i + 1, i + 1 + l).toString(); }
    sections.push({ id, name, start, end: body + len });
    i = body + len;
  }
  const names = sections.find((s) => s.id === 0 && s.name === "name");
  const stripped = names ? Buffer.concat([wasm.subarray(0, names.start), wasm.subarray(names.end)]) : wasm;
  const r = {
    raw: wasm.length, gzip: gz,
    nameSection: names ? names.end - names.start : 0,
    rawWithoutNames: stripped.length,
    gzipWithoutNames: zlib.gzipSync(stripped, { level: 9 }).length,
    js: fs.statSync(path.join(ROOMCAST_BUILD, "index.js")).size,
    sha256: crypto.createHash("sha256").update(wasm).digest("hex").slice(0, 16),
  };
  figure("wasm_raw", "wasm size, raw", "KiB", "lower", "roomcast", r.raw / 1024);
  figure("wasm_gzip", "wasm size, gzip -9", "KiB", "lower", "roomcast", r.gzip / 1024);
  figure("wasm_gzip_nonames", "wasm gzip -9 without the name section", "KiB", "lower", "roomcast", r.gzipWithoutNames / 1024);
  raw.wasm = r;
  log(`wasm: ${(r.raw / 1024).toFixed(0)} KiB raw, ${(r.gzip / 1024).toFixed(0)} KiB gzip; name section ${(r.nameSection / 1024).toFixed(0)} KiB`);
}

// ---------------------------------------------------------------------------------------------
/** RSS per 1,000 idle sockets, and how long 1,000 simultaneous handshakes take (fresh runtime). */
async function memory(rts) {
  const { rounds, sockets } = P.memory;
  const deltas = Object.fromEntries(rts.map((rt) => [rt.name, []]));
  const storms = Object.fromEntries(rts.map((rt) => [rt.name, []]));
  const connectCpu = Object.fromEntries(rts.map((rt) => [rt.name, []]));
  const pools = {};
  for (const rt of rts) {
    pools[rt.name] = new Pool(rt, "mem");
    await pools[rt.name].open(1);
    const pub = new Publisher(rt, "mem");
    for (let i = 0; i < 5; i++) await pools[rt.name].allGot((await pub.publish()).seq);
    pub.close();
  }
  await sleep(500);
  for (const rt of rts) figure("rss_base", "runtime RSS, warm, before the sockets", "MiB", "lower", rt.name, rssKiB(rt.pid) / 1024);
  for (let r = 0; r < rounds; r++) {
    for (const rt of rotate(rts, r)) {
      const before = rssKiB(rt.pid);
      const c0 = cpuMicros(rt.pid).sched;
      const t0 = performance.now();
      await pools[rt.name].open(sockets, { concurrency: sockets });
      storms[rt.name].push(performance.now() - t0);
      connectCpu[rt.name].push((cpuMicros(rt.pid).sched - c0) / sockets);
      await sleep(1500);
      const after = rssKiB(rt.pid);
      deltas[rt.name].push(((after - before) / 1024) * (1000 / sockets));
      log(`memory ${rt.name}: +${sockets} sockets in ${(performance.now() - t0 - 1500).toFixed(0)} ms, RSS ${(before / 1024).toFixed(1)} -> ${(after / 1024).toFixed(1)} MiB`);
    }
  }
  const closeCpu = {}, closeMs = {};
  for (const rt of rts) {
    figure("mem_per_1000", "RSS per 1,000 idle sockets", "MiB", "lower", rt.name, mean(deltas[rt.name]));
    figure("connect_1000", "1,000 sockets connecting at once", "ms", "lower", rt.name, mean(storms[rt.name]));
    figure("connect_cpu", "runtime CPU per connect (during those storms)", "µs", "lower", rt.name, mean(connectCpu[rt.name]));
    // Every client hangs up at once: how much CPU the runtime spends on the closes.
    const n = pools[rt.name].sockets.length;
    const c0 = cpuMicros(rt.pid).sched, t0 = performance.now();
    await pools[rt.name].close();
    const settled = await settle(rt.pid);
    closeCpu[rt.name] = (settled.cpu - c0) / n;
    closeMs[rt.name] = settled.at - t0;
    figure("close_cpu", `runtime CPU per disconnect (${n.toLocaleString("en-US")} hang up at once)`, "µs", "lower", rt.name, closeCpu[rt.name]);
    figure("close_ms", `time until the runtime is idle again after those disconnects`, "ms", "lower", rt.name, closeMs[rt.name]);
    log(`memory ${rt.name}: ${n} disconnects cost ${(closeCpu[rt.name]).toFixed(0)} µs CPU each, idle after ${closeMs[rt.name].toFixed(0)} ms`);
  }
  raw.memory = { deltas, storms, connectCpu, closeCpu, closeMs };
}

/** Waits until the runtime has been idle (< 2 ms CPU per 100 ms) and returns when and its CPU. */
async function settle(pid, limitMs = 20_000) {
  const t0 = performance.now();
  let last = cpuMicros(pid).sched, lastBusy = performance.now();
  while (performance.now() - t0 < limitMs) {
    await sleep(100);
    const now = cpuMicros(pid).sched;
    if (now - last >= 2000) lastBusy = performance.now();
    else if (performance.now() - lastBusy >= 300) return { at: lastBusy, cpu: now };
    last = now;
  }
  return { at: performance.now(), cpu: cpuMicros(pid).sched };
}

// ---------------------------------------------------------------------------------------------
/**
 * One publish at a time into a room with `sockets` sockets: each publish waits for its answer
 * and for the last socket's frame. Gives fan-out latency and the runtime's CPU per publish.
 */
async function publishBatch(rt, pool, pub, n) {
  const out = { resp: [], fanout: [], answeredFirst: 0, cpu: 0, cpuStat: 0, user: 0, sys: 0 };
  const c0 = cpuMicros(rt.pid);
  for (let i = 0; i < n; i++) {
    const r = await pub.publish();
    if (r.count !== pool.sockets.length) throw new Error(`${rt.name}: broadcastCount ${r.count}, expected ${pool.sockets.length}`);
    const tAll = await pool.allGot(r.seq);
    out.resp.push(r.ms);
    out.fanout.push(tAll - r.t0);
    if (r.t1 <= tAll) out.answeredFirst++;
  }
  const c1 = cpuMicros(rt.pid);
  out.cpu = c1.sched - c0.sched;
  out.cpuStat = c1.stat - c0.stat;
  out.user = c1.user - c0.user;
  out.sys = c1.sys - c0.sys;
  pool.reset();
  return out;
}

function merge(batches) {
  const m = { resp: [], fanout: [], answeredFirst: 0, cpu: 0, cpuStat: 0, user: 0, sys: 0, n: 0, perBatch: [] };
  for (const b of batches) {
    m.perBatch.push(b.cpu / b.resp.length);
    m.resp.push(...b.resp); m.fanout.push(...b.fanout);
    m.answeredFirst += b.answeredFirst; m.cpu += b.cpu; m.cpuStat += b.cpuStat; m.n += b.resp.length;
    m.user += b.user; m.sys += b.sys;
  }
  return m;
}

function recordLevel(name, sockets, m) {
  const s = sockets.toLocaleString("en-US");
  figure(`fanout_p50_${sockets}`, `fan-out p50 @${s} sockets`, "ms", "lower", name, median(m.fanout));
  figure(`fanout_p99_${sockets}`, `fan-out p99 @${s} sockets`, "ms", "lower", name, percentile(m.fanout, 99));
  figure(`fanout_max_${sockets}`, `fan-out max @${s} sockets`, "ms", "lower", name, max(m.fanout));
  figure(`publish_p50_${sockets}`, `publish response p50 @${s} sockets`, "ms", "lower", name, median(m.resp));
  // The median batch, so that a burst of other load during one batch does not move the figure.
  figure(`cpu_${sockets}`, `runtime CPU per publish @${s} sockets (median batch)`, "µs", "lower", name, median(m.perBatch));
  figure(`cpustat_${sockets}`, `runtime CPU per publish @${s} (utime+stime, 10 ms ticks)`, "µs", "lower", name, m.cpuStat / m.n);
  figure(`cpu_sys_share_${sockets}`, `kernel share of that CPU (stime / (utime+stime)) @${s}`, "%", "info", name, (100 * m.sys) / (m.user + m.sys));
  figure(`answered_first_${sockets}`, `publishes answered before the last socket's frame @${s}`, "%", "info", name, (100 * m.answeredFirst) / m.n);
}

async function cpuAndFanout(rts, floorRt) {
  raw.levels = {};
  for (const level of P.levels) {
    const { sockets, warmup, rounds, perRound } = level;
    const room = `lvl${sockets}`;
    const pools = {}, pubs = {}, batches = {};
    for (const rt of rts) {
      pools[rt.name] = new Pool(rt, room);
      const t0 = performance.now();
      await pools[rt.name].open(sockets);
      pubs[rt.name] = new Publisher(rt, room);
      await publishBatch(rt, pools[rt.name], pubs[rt.name], warmup);
      batches[rt.name] = [];
      log(`level ${sockets}: ${rt.name} connected in ${(performance.now() - t0).toFixed(0)} ms, warmed up`);
    }
    for (let r = 0; r < rounds; r++) {
      for (const rt of rotate(rts, r)) {
        batches[rt.name].push(await publishBatch(rt, pools[rt.name], pubs[rt.name], perRound));
      }
    }
    raw.levels[sockets] = {};
    for (const rt of rts) {
      const m = merge(batches[rt.name]);
      recordLevel(rt.name, sockets, m);
      raw.levels[sockets][rt.name] = { n: m.n, cpuMicros: m.cpu, cpuPerBatch: m.perBatch, cpuStatMicros: m.cpuStat, userMicros: m.user, sysMicros: m.sys, resp: m.resp, fanout: m.fanout, order: pools[rt.name].order };
      if (pools[rt.name].order) throw new Error(`${rt.name}: ${pools[rt.name].order} frames out of order at level ${sockets}`);
      log(`level ${sockets}: ${rt.name} fan-out p50 ${median(m.fanout).toFixed(2)} ms, CPU ${m.perBatch.map((c) => c.toFixed(0)).join(" / ")} µs/publish per batch`);
      pubs[rt.name].close();
      await pools[rt.name].close();
    }
  }
  // The floor: a request the Worker answers without a Durable Object (js-hibernating's /noop).
  const pub = new Publisher(floorRt, "floor");
  for (let i = 0; i < 100; i++) await pub.noop();
  const c0 = cpuMicros(floorRt.pid), n = P.levels[0].rounds * P.levels[0].perRound;
  for (let i = 0; i < n; i++) await pub.noop();
  const c1 = cpuMicros(floorRt.pid);
  pub.close();
  raw.floor = { requests: n, cpuMicros: c1.sched - c0.sched };
  figure("cpu_floor", "runtime CPU per request that never reaches a DO (HTTP + Miniflare floor)", "µs", "lower", floorRt.name, (c1.sched - c0.sched) / n);

  // Above the floor: what the publish itself costs, beyond the HTTP + Miniflare overhead
  // every request pays (measured on js-hibernating's Worker, the same for every peer).
  const floor = (c1.sched - c0.sched) / n;
  for (const rt of rts) {
    figure("cpu_above_floor_1", "runtime CPU per publish @1 socket above that floor", "µs", "lower", rt.name, figures.cpu_1.values[rt.name] - floor);
  }

  // CPU per extra socket: a least-squares line over the socket counts 1, 10, 100.
  for (const rt of rts) {
    const xs = [1, 10, 100];
    const ys = xs.map((x) => figures[`cpu_${x}`].values[rt.name]);
    const fit = linearFit(xs, ys);
    figure("cpu_slope", "runtime CPU per extra socket (fit over 1, 10, 100)", "µs", "lower", rt.name, fit.slope);
    figure("cpu_intercept", "runtime CPU per publish, fixed part (fit intercept)", "µs", "lower", rt.name, fit.intercept);
  }
}

// ---------------------------------------------------------------------------------------------
/** 5,000 sockets (2,000 with --quick): one peer at a time (the file-descriptor limit). */
async function fanout5000(rts) {
  const { sockets, warmup, publishes } = P.big;
  raw.big = {};
  for (const rt of rts) {
    const pool = new Pool(rt, "big");
    const t0 = performance.now();
    await pool.open(sockets, { concurrency: 250 });
    const connectMs = performance.now() - t0;
    await sleep(500);
    const rss = rssKiB(rt.pid);
    const pub = new Publisher(rt, "big");
    await publishBatch(rt, pool, pub, warmup);
    const m = merge([await publishBatch(rt, pool, pub, publishes)]);
    recordLevel(rt.name, sockets, m);
    const label = sockets.toLocaleString("en-US");
    figure(`connect_${sockets}`, `open ${label} sockets (250 handshakes in flight)`, "ms", "lower", rt.name, connectMs);
    figure(`rss_${sockets}`, `runtime RSS with ${label} sockets open`, "MiB", "lower", rt.name, rss / 1024);
    raw.big[rt.name] = { n: m.n, cpuMicros: m.cpu, resp: m.resp, fanout: m.fanout, connectMs, rssKiB: rss, order: pool.order };
    if (pool.order) throw new Error(`${rt.name}: ${pool.order} frames out of order at ${sockets}`);
    log(`${sockets}: ${rt.name} connected in ${connectMs.toFixed(0)} ms; publish p50 ${median(m.resp).toFixed(1)} ms, fan-out p50 ${median(m.fanout).toFixed(1)} ms, answered first ${m.answeredFirst}/${m.n}`);
    pub.close();
    await pool.close();
  }
}

// ---------------------------------------------------------------------------------------------
/**
 * Publishes into one room, `inflight` at a time, for a fixed duration: `sustained` with 100
 * sockets; `batched` with 1,000 sockets that ask roomcast for batch=1 (the JS peers send each
 * notification to each socket, as they always do).
 */
async function sustained(rts, kind = "sustained") {
  const { sockets, rounds, seconds, inflight } = P[kind];
  const batch = kind === "batched";
  const pools = {}, pubs = {}, acc = {};
  for (const rt of rts) {
    pools[rt.name] = new Pool(rt, kind, { batch });
    await pools[rt.name].open(sockets);
    pubs[rt.name] = new Publisher(rt, kind);
    await publishBatch(rt, pools[rt.name], pubs[rt.name], 20);
    acc[rt.name] = { published: 0, ms: 0, drainMs: 0, resp: [], cpu: 0, frames: 0, expectedFrames: 0 };
  }
  for (let r = 0; r < rounds; r++) {
    for (const rt of rotate(rts, r)) {
      const pool = pools[rt.name], pub = pubs[rt.name], a = acc[rt.name];
      const frames0 = pool.frames;
      const c0 = cpuMicros(rt.pid);
      const t0 = performance.now(), end = t0 + seconds * 1000;
      let published = 0, lastSeq = 0, tLast = t0;
      const lane = async () => {
        while (performance.now() < end) {
          const res = await pub.publish();
          published++;
          a.resp.push(res.ms);
          lastSeq = Math.max(lastSeq, res.seq);
          tLast = res.t1;
        }
      };
      await Promise.all(Array.from({ length: inflight }, lane));
      const tDrained = await pool.allGot(lastSeq, 60_000);
      const c1 = cpuMicros(rt.pid);
      // Every socket got every notification, in order, with no gap.
      const behind = pool.lastSeq.filter((s) => s !== lastSeq).length;
      if (behind || pool.order) throw new Error(`${rt.name}: sustained: ${behind} sockets not at seq ${lastSeq}, ${pool.order} out of order`);
      a.published += published; a.ms += tLast - t0; a.drainMs += tDrained - t0;
      a.cpu += c1.sched - c0.sched;
      a.frames += pool.frames - frames0; a.expectedFrames += published * sockets;
      pool.reset();
      log(`${kind} ${rt.name}: ${published} publishes in ${(tLast - t0).toFixed(0)} ms = ${((published * 1000) / (tLast - t0)).toFixed(0)}/s, all delivered after ${(tDrained - t0).toFixed(0)} ms`);
    }
  }
  raw[kind] = {};
  const what = batch ? "batch=1 " : "";
  for (const rt of rts) {
    const a = acc[rt.name];
    if (a.frames !== a.expectedFrames) throw new Error(`${rt.name}: ${kind}: ${a.frames} frames, expected ${a.expectedFrames}`);
    figure(`${kind}_rate`, `${kind} ${what}publishes/s, ${sockets} sockets, ${inflight} in flight`, "/s", "higher", rt.name, (a.published * 1000) / a.ms);
    figure(`${kind}_delivered`, `${kind} ${what}publishes/s fully delivered (to the last frame)`, "/s", "higher", rt.name, (a.published * 1000) / a.drainMs);
    figure(`${kind}_resp_p99`, `${kind} publish response p99`, "ms", "lower", rt.name, percentile(a.resp, 99));
    figure(`${kind}_cpu`, `runtime CPU per publish under ${kind} load`, "µs", "lower", rt.name, a.cpu / a.published);
    raw[kind][rt.name] = { published: a.published, ms: a.ms, drainMs: a.drainMs, frames: a.frames, batchFrames: pools[rt.name].batchFrames, cpuMicros: a.cpu };
    pubs[rt.name].close();
    await pools[rt.name].close();
  }
}

// ---------------------------------------------------------------------------------------------
/** A fresh runtime to the first publish answered. */
async function coldstart() {
  const acc = Object.fromEntries(PEERS.map((p) => [p.name, { total: [], ready: [], first: [] }]));
  for (let r = 0; r < P.coldstart.reps; r++) {
    for (const peer of rotate(PEERS, r)) {
      const t0 = performance.now();
      const rt = await start(peer);
      const pub = new Publisher(rt, "cold");
      const res = await pub.publish();
      const total = performance.now() - t0;
      pub.close();
      await rt.dispose();
      const a = acc[peer.name];
      a.total.push(total); a.ready.push(rt.readyMs); a.first.push(res.ms);
      log(`cold start ${peer.name}: runtime ready ${rt.readyMs.toFixed(0)} ms, first publish ${res.ms.toFixed(0)} ms`);
    }
  }
  for (const peer of PEERS) {
    const a = acc[peer.name];
    figure("cold_total", "cold start: new runtime to first publish answered", "ms", "lower", peer.name, median(a.total));
    figure("cold_first", "cold start: first publish after the runtime is up", "ms", "lower", peer.name, median(a.first));
  }
  raw.coldstart = acc;
}

// ---------------------------------------------------------------------------------------------
/** roomcast only: N sockets reconnect at once with since= after a runtime restart. */
async function storm() {
  const { sockets, before, missed } = P.storm;
  const peer = PEERS.find((p) => p.name === "roomcast");
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-bench-"));
  try {
    let rt = await start(peer, { persist: dir });
    let pool = new Pool(rt, "storm");
    await pool.open(sockets);
    let pub = new Publisher(rt, "storm");
    let seen = 0;
    for (let i = 0; i < before; i++) { const r = await pub.publish(); await pool.allGot(r.seq); seen = r.seq; }
    pub.close();
    await pool.close();
    await rt.dispose();
    // Restart on the same storage; notifications published while everyone is away.
    rt = await start(peer, { persist: dir });
    pub = new Publisher(rt, "storm");
    let last = seen;
    for (let i = 0; i < missed; i++) last = (await pub.publish()).seq;
    pool = new Pool(rt, "storm");
    const t0 = performance.now();
    const all = pool.open(sockets, { concurrency: sockets, since: seen });
    await all;
    const tConnected = performance.now() - t0;
    const tResumed = (await pool.allGot(last, 60_000)) - t0;
    if (pool.order) throw new Error(`storm: ${pool.order} frames out of order`);
    const behind = pool.lastSeq.filter((s) => s !== last).length;
    if (behind) throw new Error(`storm: ${behind} sockets not resumed to ${last}`);
    figure("storm_connected", `reconnect storm: ${sockets} sockets with since= after a restart, all connected`, "ms", "lower", "roomcast", tConnected);
    figure("storm_resumed", `reconnect storm: all ${missed} missed notifications replayed to all`, "ms", "lower", "roomcast", tResumed);
    raw.storm = { sockets, before, missed, tConnected, tResumed };
    log(`storm: ${sockets} reconnected in ${tConnected.toFixed(0)} ms, all resumed at ${tResumed.toFixed(0)} ms`);
    pub.close();
    await pool.close();
    await rt.dispose();
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

// ---------------------------------------------------------------------------------------------
/**
 * One room of `sockets` (roomcast only), spread over shards of `shardSize` and held by one
 * Durable Object: the connect storm, publish-to-last-delivery, CPU per publish (the whole
 * workerd process: here every Durable Object shares it), and a reconnect storm with since=.
 */
async function large() {
  const { sockets, shardSize, publishes, missed } = P.large;
  const base = PEERS.find((p) => p.name === "roomcast");
  raw.large = {};
  for (const [label, size] of [["sharded", shardSize], ["one DO", sockets * 2]]) {
    const name = `roomcast (${label})`;
    const rt = await start({ ...base, name, bindings: { ROOM_SHARD_SIZE: String(size) } });
    try {
      let pool = new Pool(rt, "large", { batch: true });
      const t0 = performance.now();
      await pool.open(sockets, { concurrency: 100 });
      const tConnect = performance.now() - t0;
      const shards = (await health(rt, "large")).shards ?? [];
      let pub = new Publisher(rt, "large");
      for (let i = 0; i < 3; i++) await pool.allGot((await pub.publish()).seq, 120_000);
      const lat = [], resp = [];
      const c0 = cpuMicros(rt.pid);
      let last = 0;
      for (let i = 0; i < publishes; i++) {
        const r = await pub.publish();
        if (r.count !== sockets) throw new Error(`${name}: broadcastCount ${r.count}, expected ${sockets}`);
        lat.push((await pool.allGot(r.seq, 120_000)) - r.t0);
        resp.push(r.ms);
        last = r.seq;
      }
      const cpu = cpuMicros(rt.pid).sched - c0.sched;
      if (pool.order) throw new Error(`${name}: ${pool.order} frames out of order`);
      // Everyone leaves; notifications are published; everyone comes back with since=. (A
      // fresh publisher: workerd resets the old one's kept-alive connection when thousands of
      // sockets drop at once.)
      await pool.close();
      pub.close();
      pub = new Publisher(rt, "large");
      for (let i = 0; i < missed; i++) last = (await pub.publish()).seq;
      const before = await health(rt, "large");
      pool = new Pool(rt, "large", { batch: true });
      const t1 = performance.now();
      await pool.open(sockets, { concurrency: 100, since: last - missed });
      const tResumed = (await pool.allGot(last, 120_000)) - t1;
      const after = await health(rt, "large");
      if (pool.order) throw new Error(`${name}: storm: ${pool.order} frames out of order`);
      const rowsRead = (after.sqlRowsRead ?? 0) - (before.sqlRowsRead ?? 0);
      figure(`large_connect_${label}`, `large room: ${sockets} sockets connecting at once, ${label}`, "ms", "lower", "roomcast", tConnect);
      figure(`large_p50_${label}`, `large room: publish to last delivery p50, ${label}`, "ms", "lower", "roomcast", percentile(lat, 50));
      figure(`large_p99_${label}`, `large room: publish to last delivery p99, ${label}`, "ms", "lower", "roomcast", percentile(lat, 99));
      figure(`large_resp_${label}`, `large room: publish response p50, ${label}`, "ms", "lower", "roomcast", percentile(resp, 50));
      figure(`large_cpu_${label}`, `large room: workerd CPU per publish (all its Durable Objects), ${label}`, "µs", "lower", "roomcast", cpu / publishes);
      figure(`large_storm_${label}`, `large room: reconnect storm with since=, all ${missed} missed replayed to all, ${label}`, "ms", "lower", "roomcast", tResumed);
      figure(`large_rows_${label}`, `large room: coordinator SQLite rows read per reconnecting socket, ${label}`, "rows", "lower", "roomcast", rowsRead / sockets);
      raw.large[label] = { sockets, shards, tConnect, lat, resp, cpuMicros: cpu, publishes, tResumed, rowsRead };
      log(`large ${label}: shards ${JSON.stringify(shards)}, connect ${tConnect.toFixed(0)} ms, p50 ${percentile(lat, 50).toFixed(1)} ms, p99 ${percentile(lat, 99).toFixed(1)} ms, CPU/publish ${(cpu / publishes).toFixed(0)} µs, storm ${tResumed.toFixed(0)} ms, rows read/socket ${(rowsRead / sockets).toFixed(2)}`);
      pub.close();
      await pool.close();
    } finally {
      await rt.dispose();
    }
  }
}

// ---------------------------------------------------------------------------------------------
/** A room's keyed health (roomcast builds that report SQLite rows and wasm memory). */
async function health(rt, room) {
  const res = await fetch(`${rt.base}/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
  return res.json();
}

/**
 * roomcast builds: SQLite rows written and read per publish, as the cursors count them (what
 * the platform bills), from the keyed health counters around a batch of publishes: while the
 * log fills (no deletes yet), and once it is full (every publish pushes one out, deleted in
 * batches), for a plain publish, a requiresAck one, and one with an Idempotency-Key.
 */
async function rowsPerPublish() {
  const { publishes, limit } = P.rows;
  for (const peer of ROOMCASTS) {
    const rt = await start(peer, { bindings: { HISTORY_LIMIT: String(limit) } });
    try {
      const kinds = [
        ["plain", (i) => ({ type: "note.created", data: { i } }), () => ({})],
        ["ack", (i) => ({ type: "note.created", requiresAck: true, data: { i } }), () => ({})],
        ["key", (i) => ({ type: "note.created", data: { i } }), (i) => ({ "idempotency-key": `k-${peer.name}-${i}` })],
      ];
      for (const [kind, body, headers] of kinds) {
        const room = `rows-${kind}`;
        const measure = async (from, to) => {
          const h0 = await health(rt, room);
          for (let i = from; i < to; i++) {
            const res = await fetch(`${rt.base}/rooms/${room}/broadcast`, {
              method: "POST",
              headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", ...headers(i) },
              body: JSON.stringify(body(i)),
            });
            if (res.status !== 200) throw new Error(`rows: publish ${res.status}`);
            await res.arrayBuffer();
          }
          const h1 = await health(rt, room);
          if (h1.sqlRowsWritten === undefined) return null;
          return { written: (h1.sqlRowsWritten - h0.sqlRowsWritten) / (to - from), read: (h1.sqlRowsRead - h0.sqlRowsRead) / (to - from) };
        };
        await measure(0, 1); // the room's first wake: schema, migrations
        const filling = await measure(1, limit);
        const full = await measure(limit, limit + publishes);
        if (!filling) { log(`rows ${peer.name}: the build reports no SQLite rows`); break; }
        figure(`rows_w_${kind}`, `SQLite rows written per publish (${kind}), log filling`, "rows", "lower", peer.name, filling.written);
        figure(`rows_w_${kind}_full`, `SQLite rows written per publish (${kind}), log full (deletes included)`, "rows", "lower", peer.name, full.written);
        figure(`rows_r_${kind}_full`, `SQLite rows read per publish (${kind}), log full`, "rows", "lower", peer.name, full.read);
        log(`rows ${peer.name} ${kind}: written ${filling.written.toFixed(2)} filling, ${full.written.toFixed(2)} full; read ${full.read.toFixed(2)}`);
      }
    } finally {
      await rt.dispose();
    }
  }
}

/**
 * roomcast builds with presence: what presence costs at a room's scale. `watchers` sockets of
 * distinct users connect at once with presence=1 (every join is told to everyone present: a
 * storm of n(n-1)/2 frames), against the same storm without presence; then one more user joins
 * and leaves, `joins` times, in that room of watchers.
 */
async function presenceCost() {
  const { watchers, joins } = P.presence;
  const PRESENCE = Buffer.from('"presence":{"count":');
  const JOINED = Buffer.from('"presence.joined"');
  const LEFT = Buffer.from('"presence.left"');
  for (const peer of ROOMCASTS) {
    const rt = await start(peer);
    try {
      /** Opens n sockets of distinct users; resolves when each knows about all n. */
      const storm = async (room, presence) => {
        const views = new Array(watchers).fill(0);
        let converged = 0, onConverged;
        const all = new Promise((r) => (onConverged = r));
        const sockets = [];
        const c0 = cpuMicros(rt.pid).sched, t0 = performance.now();
        await Promise.all(Array.from({ length: watchers }, (_, i) => new Promise((resolve, reject) => {
          const qs = new URLSearchParams({ token: token(`u${i}`), ...(presence ? { presence: "1" } : {}) });
          const ws = new WebSocket(`${rt.wsBase}/rooms/${room}/subscribe?${qs}`, { perMessageDeflate: false, skipUTF8Validation: true });
          sockets.push(ws);
          ws.on("error", reject);
          ws.on("message", (buf) => {
            const at = buf.indexOf(PRESENCE);
            if (buf.indexOf('"connected"') !== -1) {
              if (at !== -1) { let n = 0; for (let k = at + PRESENCE.length; buf[k] >= 48 && buf[k] <= 57; k++) n = n * 10 + buf[k] - 48; views[i] = n; }
              resolve();
            } else if (buf.indexOf(JOINED) !== -1) views[i]++;
            else if (buf.indexOf(LEFT) !== -1) views[i]--;
            else return;
            if (views[i] === watchers && ++converged === watchers) onConverged();
          });
        })));
        const connected = performance.now() - t0;
        // A build without presence sends no presence member: nothing to wait for.
        if (presence && views.some((v) => v > 0)) await all;
        const done = performance.now() - t0;
        const settled = await settle(rt.pid);
        return { sockets, views, connected, done, cpu: (settled.cpu - c0) / watchers };
      };
      const plain = await storm("presence-off", false);
      for (const ws of plain.sockets) ws.terminate();
      await settle(rt.pid);
      if (!(await health(rt, "presence-off")).ok) throw new Error("presence: no health");
      const on = await storm("presence-on", true);
      if (on.views.some((v) => v !== watchers)) { log(`presence ${peer.name}: no presence frames (older build)`); for (const ws of on.sockets) ws.terminate(); continue; }
      figure("presence_storm_ms", `${watchers} users joining at once with presence=1: until everyone sees everyone`, "ms", "lower", peer.name, on.done);
      figure("presence_storm_cpu", `runtime CPU per join in that storm (n(n-1)/2 presence frames)`, "µs", "lower", peer.name, on.cpu);
      figure("presence_storm_cpu_off", `runtime CPU per join, the same storm without presence=1`, "µs", "lower", peer.name, plain.cpu);
      // One more user joins and leaves, in a room of `watchers` presence watchers.
      let seen = 0, wantSeen = 0, onSeen;
      for (const ws of on.sockets) ws.on("message", (buf) => { if (buf.indexOf(JOINED) !== -1 || buf.indexOf(LEFT) !== -1) { if (++seen === wantSeen) onSeen(); } });
      const lat = [];
      const c0 = cpuMicros(rt.pid).sched;
      for (let k = 0; k < joins; k++) {
        for (const kind of ["join", "leave"]) {
          wantSeen = seen + watchers;
          const heard = new Promise((r) => (onSeen = r));
          const t0 = performance.now();
          if (kind === "join") {
            var extra = new WebSocket(`${rt.wsBase}/rooms/presence-on/subscribe?${new URLSearchParams({ token: token(`extra${k}`) })}`, { perMessageDeflate: false });
          } else {
            extra.terminate();
          }
          await heard;
          lat.push(performance.now() - t0);
        }
      }
      const settled = await settle(rt.pid);
      figure("presence_joinleave_cpu", `runtime CPU per join or leave, room of ${watchers} watchers`, "µs", "lower", peer.name, (settled.cpu - c0) / (2 * joins));
      figure("presence_joinleave_ms", `join or leave until all ${watchers} watchers have the frame (p50)`, "ms", "lower", peer.name, median(lat));
      log(`presence ${peer.name}: storm ${on.done.toFixed(0)} ms, ${on.cpu.toFixed(0)} µs/join (${plain.cpu.toFixed(0)} without); join/leave ${((settled.cpu - c0) / (2 * joins)).toFixed(0)} µs, p50 ${median(lat).toFixed(1)} ms`);
      for (const ws of on.sockets) ws.terminate();
    } finally {
      await rt.dispose();
    }
  }
}

// ---------------------------------------------------------------------------------------------
function fmt(v, unit) {
  if (v === undefined || Number.isNaN(v)) return "–";
  if (unit === "%") return `${v.toFixed(0)}%`;
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 100 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(3);
}

/** What the printed table shows, in order (every figure is in the JSON). */
function tableKeys() {
  const big = P.big.sockets;
  const lv = [...P.levels.map((l) => l.sockets), big];
  return [
    "# size and start",
    "wasm_raw", "wasm_gzip", "wasm_gzip_nonames", "cold_total", "cold_first",
    "# memory and connections",
    "rss_base", "mem_per_1000", `rss_${big}`, "connect_1000", "connect_cpu", "close_cpu", "close_ms", `connect_${big}`,
    "# runtime CPU per publish (workerd process, all threads)",
    ...lv.map((n) => `cpu_${n}`), "cpu_intercept", "cpu_slope",
    "cpustat_1", "cpustat_100", "cpu_sys_share_1", "cpu_sys_share_100", "cpu_sys_share_1000", "cpu_floor", "cpu_above_floor_1",
    "# fan-out latency: publish sent -> last socket has the frame",
    "fanout_p50_1", "fanout_p50_10",
    ...[100, 1000, big].flatMap((n) => [`fanout_p50_${n}`, `fanout_p99_${n}`, `fanout_max_${n}`]),
    "# publish response",
    ...lv.map((n) => `publish_p50_${n}`), `answered_first_${big}`,
    "# sustained load",
    "sustained_rate", "sustained_delivered", "sustained_resp_p99", "sustained_cpu",
    "batched_rate", "batched_delivered", "batched_resp_p99", "batched_cpu",
    "# one large room (roomcast only): shards against one Durable Object",
    ...["sharded", "one DO"].flatMap((l) => [`large_connect_${l}`, `large_p50_${l}`, `large_p99_${l}`, `large_resp_${l}`, `large_cpu_${l}`, `large_storm_${l}`, `large_rows_${l}`]),
    "# reconnect storm (roomcast only)",
    "storm_connected", "storm_resumed",
    "# SQLite rows per publish (roomcast builds that count them)",
    "rows_w_plain", "rows_w_ack", "rows_w_key", "rows_w_plain_full", "rows_w_ack_full", "rows_w_key_full",
    "rows_r_plain_full", "rows_r_ack_full", "rows_r_key_full",
    "# presence (roomcast builds with presence)",
    "presence_storm_ms", "presence_storm_cpu", "presence_storm_cpu_off", "presence_joinleave_cpu", "presence_joinleave_ms",
  ];
}

function table() {
  const names = PEERS.map((p) => p.name);
  const lines = [];
  lines.push(`| figure | unit | ${names.join(" | ")} |`);
  lines.push(`|---|---|${names.map(() => "---:").join("|")}|`);
  let section = null;
  for (const key of tableKeys()) {
    if (key.startsWith("# ")) { section = key.slice(2); continue; }
    const f = figures[key];
    if (!f || Object.values(f.values).every((v) => Number.isNaN(v))) continue;
    if (section) { lines.push(`| **${section}** | | ${names.map(() => "").join(" | ")} |`); section = null; }
    const base = f.values[BASELINE];
    const cells = names.map((n) => {
      const v = f.values[n];
      if (v === undefined) return "";
      const ratio = n !== BASELINE && base && f.unit !== "%" && Number.isFinite(v) && Number.isFinite(base) && base > 0
        ? ` (${(v / base).toFixed(2)}×)` : "";
      return fmt(v, f.unit) + ratio;
    });
    lines.push(`| ${f.label} | ${f.unit} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------------
async function main() {
  prepare({ log });
  const meta = {
    date: new Date().toISOString(),
    mode: QUICK ? "quick" : "full",
    node: process.version,
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memGiB: +(os.totalmem() / 2 ** 30).toFixed(1),
    git: (() => { try { return execFileSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT }).toString().trim(); } catch { return null; } })(),
    dirty: (() => { try { return execFileSync("git", ["status", "--porcelain", "src", "Cargo.toml"], { cwd: ROOT }).toString().trim().length > 0; } catch { return null; } })(),
    loadBefore: machineLoad(),
    params: P,
  };
  const j0 = machineJiffies(), own0 = ownCpuMicros();
  log(`bench ${meta.mode}: load average ${meta.loadBefore.load1} ${meta.loadBefore.load5} ${meta.loadBefore.load15}`);

  if (want("wasm")) wasmSize();

  if (["memory", "cpu", "big", "sustained", "batched"].some(want)) {
    const rts = [];
    for (const peer of PEERS) rts.push(await start(peer));
    try {
      if (want("memory")) await memory(rts);
      if (want("cpu")) await cpuAndFanout(rts, rts.find((r) => r.name === BASELINE));
      if (want("big")) await fanout5000(rts);
      if (want("sustained")) await sustained(rts);
      if (want("batched")) await sustained(rts, "batched");
    } finally {
      raw.runtimeLogs = Object.fromEntries(rts.map((rt) => [rt.name, { lines: rt.logLines, bytes: rt.logBytes, errors: rt.errors }]));
      for (const rt of rts) await rt.dispose();
    }
  }
  if (want("coldstart")) await coldstart();
  if (want("storm")) await storm();
  if (want("large")) await large();
  if (want("rows")) await rowsPerPublish();
  if (want("presence")) await presenceCost();

  const j1 = machineJiffies(), own1 = ownCpuMicros();
  const wallS = (performance.now() - T0) / 1000;
  const machineBusyCores = ((j1.busy - j0.busy) / (j1.total - j0.total)) * os.cpus().length;
  const ownCores = (own1 - own0) / 1e6 / wallS;
  meta.loadAfter = machineLoad();
  meta.wallSeconds = +wallS.toFixed(1);
  meta.machineBusyCores = +machineBusyCores.toFixed(2);
  meta.benchCores = +ownCores.toFixed(2);
  meta.otherCores = +Math.max(0, machineBusyCores - ownCores).toFixed(2);

  const t = table();
  console.log(`\nroomcast benchmark (${meta.mode}), ${meta.date}, git ${meta.git}${meta.dirty ? " (src modified)" : ""}`);
  console.log(`machine: ${meta.cpus} × ${meta.cpuModel}, ${meta.memGiB} GiB, Node ${meta.node}; ${meta.wallSeconds} s wall`);
  console.log(`load: average ${meta.loadBefore.load1} before, ${meta.loadAfter.load1} after; during the run the machine was busy ${meta.machineBusyCores} of ${meta.cpus} cores, this benchmark ${meta.benchCores}, everything else ${meta.otherCores}`);
  console.log(`ratios in parentheses are to ${BASELINE}; client and runtimes share the same ${meta.cpus} cores\n`);
  console.log(t);
  fs.mkdirSync(path.dirname(OUT), { recursive: true });
  fs.writeFileSync(OUT, JSON.stringify({ meta, figures, raw }, null, 1));
  console.log(`\nwrote ${path.relative(process.cwd(), OUT)}`);
}

main().then(() => process.exit(0), (e) => { console.error(e); process.exit(1); });
