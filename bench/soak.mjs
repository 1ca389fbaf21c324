#!/usr/bin/env node
// The soak: one runtime, 1,000 sockets that keep dropping and resuming with since=, publishes
// with and without acks, for 10 minutes. Not in CI (too long); run it before a release:
//
//   npm run soak                       # 10 minutes, build/ as it is
//   npm run soak -- --minutes=2        # shorter (a quick look; the figures mean less)
//
// Options: --minutes=10 (the measured run) --warmup=2 (minutes of the same load before it, not
// measured) --sockets=1000 --rooms=20 --rate=25 (publishes/s over all rooms) --ack-share=0.3
// (share of publishes with requiresAck) --churn=0.02 (share of sockets dropped per second)
// --rss-bound=25 (%) --build=build --report-every=<s> --json=<file>.
//
// Every subscriber is tracked from its first connection on: it must get every seq of its room
// published from then on exactly once (live, or replayed when it resumes with since=), in
// order. `lost` counts seqs a subscriber never got (still missing at the end, or a resume
// answered recovered:false); `outOfOrder` a seq that came after a later one; `duplicated` a
// (seq, attempt) it got twice (a redelivery has a new attempt, so it is not a duplicate). The
// sockets, the checks and the publisher are the load tool's (bench/lib/load.mjs). One socket
// per room acks every requiresAck notification; while it is away, the room's rounds go on
// (redeliveries) and may end in failed, as the rules say.
//
// It reports, over time: workerd's RSS (from /proc), the wasm memory if the room's keyed health
// reports `wasmMemoryBytes` (else n/a), sockets open, publishes, frames, reconnects, lost,
// duplicated and out-of-order counts, and publish→frame latency percentiles of live frames.
// Publishers behave as handlers do: each publish carries an Idempotency-Key and is retried with it
// when the request fails on the network (counted as retries). It exits 1 when any notification was
// lost, duplicated or out of order, a publish failed after its retries, or the mean RSS of the last
// quarter of the measured run exceeds the first quarter's by more than --rss-bound percent. The
// bound is +25 %: the runtime's heap and caches grow for the first minutes of load and then level
// off (hence the warm-up), while a leak of a few KiB per publish or per reconnect (15,000 publishes
// and over 10,000 reconnects in 10 minutes) shows far beyond it.
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import WebSocket from "ws";
import { ROOT, BENCH, API_KEY, Runtime } from "./lib/peers.mjs";
import { Publisher, Subscriber, Tally } from "./lib/load.mjs";
import { token } from "./lib/client.mjs";
import { rssKiB } from "./lib/proc.mjs";

/** RssAnon and RssFile of a process, in KiB: heap and mapped files apart. */
function rssParts(pid) {
  const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
  const kib = (name) => Number(new RegExp(`${name}:\\s+(\\d+) kB`).exec(status)?.[1] ?? NaN);
  return { anon: kib("RssAnon"), file: kib("RssFile") };
}

/** Bytes of every file under a directory. */
function diskBytes(dir) {
  let n = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    try { n += e.isDirectory() ? diskBytes(p) : fs.statSync(p).size; } catch {}
  }
  return n;
}
import { percentile, mean } from "./lib/stats.mjs";

const USAGE = "usage: node bench/soak.mjs [--minutes=10] [--warmup=2] [--sockets=1000] [--rooms=20] [--rate=25] [--ack-share=0.3] [--churn=0.02] [--rss-bound=25] [--build=build] [--report-every=<s>] [--json=<file>]";
const DEFAULTS = { minutes: 10, warmup: 2, sockets: 1000, rooms: 20, rate: 25, "ack-share": 0.3, churn: 0.02, "rss-bound": 25, build: "build", "report-every": 0, json: "" };

function parseArgs(argv) {
  const o = { ...DEFAULTS };
  for (const a of argv) {
    if (a === "--help" || a === "-h") { console.log(USAGE); process.exit(0); }
    const m = /^--([a-z-]+)=(.*)$/.exec(a);
    if (!m || !(m[1] in DEFAULTS)) { console.error(`soak: unknown argument ${a}\n${USAGE}`); process.exit(2); }
    const v = typeof DEFAULTS[m[1]] === "number" ? Number(m[2]) : m[2];
    if (typeof v === "number" && !(v >= 0 && Number.isFinite(v))) { console.error(`soak: --${m[1]} must be a number ≥ 0`); process.exit(2); }
    o[m[1]] = v;
  }
  if (o.sockets < o.rooms || o.rooms < 1) { console.error("soak: need at least one room and one socket per room"); process.exit(2); }
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const DURATION_MS = opts.minutes * 60_000;
const WARMUP_MS = opts.warmup * 60_000;
/** RSS samples: every 5 s, more often in a short run so each quarter has some. */
const SAMPLE_MS = Math.min(5000, Math.max(500, DURATION_MS / 40));
const REPORT_MS = opts["report-every"] > 0 ? opts["report-every"] * 1000 : Math.max(10_000, DURATION_MS / 20);
const ACK = { ACK_RETRY_INTERVAL_MS: "2000", ACK_MAX_ATTEMPTS: "3" };

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const log = (line) => console.log(line);

// A private copy of the build, so a rebuild during the run cannot change what is measured.
const buildDir = path.resolve(ROOT, opts.build);
for (const f of ["index.js", "index_bg.wasm"]) {
  if (!fs.existsSync(path.join(buildDir, f))) { console.error(`soak: ${buildDir}/${f} is missing (npm run build)`); process.exit(2); }
}
const copy = path.join(BENCH, "build/soak");
fs.mkdirSync(copy, { recursive: true });
for (const f of ["index.js", "index_bg.wasm"]) fs.copyFileSync(path.join(buildDir, f), path.join(copy, f));

// Durable Object storage in a directory of our own, so its size on disk is reported next to RSS.
const persist = fs.mkdtempSync(path.join(os.tmpdir(), "roomcast-soak-"));
const rt = await Runtime.start({ name: "roomcast", kind: "roomcast", dir: copy, bindings: ACK }, { persist });
// Keep-alive connections are dropped after 4 s idle, before workerd's 5 s (see Publisher).
const http = new Publisher({ base: rt.base, apiKey: API_KEY, maxSockets: 64, idleMs: 4000 });

// ---- state ----
const rooms = Array.from({ length: opts.rooms }, (_, i) => ({ id: `soak_${i}`, lastSeq: 0, acked: 0 }));
const stats = { publishes: 0, publishErrors: 0, publishRetries: 0, inflight: 0, reconnects: 0, allLatencies: [] };
const tally = new Tally();
const note = (msg) => tally.note(msg);
const subs = Array.from({ length: opts.sockets }, (_, i) => {
  const room = rooms[i % opts.rooms];
  const acker = i < opts.rooms;
  return Object.assign(new Subscriber({
    wsBase: rt.wsBase, room: room.id, token: token(`soak-${i}`), tally, label: `${room.id} sub ${i}`,
    // One socket per room acks what needs it; the others let the rounds go on.
    onNotification: (_s, f, ws) => {
      if (acker && f.requiresAck && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: "ack", notificationId: f.id }));
    },
    // Dropped while we did not ask for it: come back as a client would.
    onClose: (s) => setTimeout(() => { if (s.state === "away" && running.reconnect) { stats.reconnects++; s.connect(); } }, 100 + Math.random() * 1000),
  }), { i, roomState: room });
});
/** Seqs subscribers have missed so far (a gap), or for good (recovered:false). */
const lostSoFar = () => subs.reduce((n, s) => n + s.missing.size, tally.unrecovered);

// ---- the run ----
const running = { publish: true, churn: true, reconnect: true };
const samples = []; // { t, rss }
const t0 = performance.now();
const elapsed = () => performance.now() - t0;

log(`soak: ${opts.sockets} sockets in ${opts.rooms} rooms, ${opts.rate} publishes/s (${Math.round(opts["ack-share"] * 100)} % requiresAck), ` +
  `${Math.round(opts.churn * 100 * 10) / 10} % of sockets dropped per second, ${opts.minutes} min, build ${buildDir}, workerd pid ${rt.pid}`);
log(`machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? "?"}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, ${os.type()} ${os.release()}, node ${process.version}`);

// Open every socket, 100 at a time.
for (let i = 0; i < subs.length; i += 100) {
  subs.slice(i, i + 100).forEach((s) => s.connect());
  const deadline = Date.now() + 60_000;
  while (subs.slice(i, i + 100).some((s) => s.state !== "open")) {
    if (Date.now() > deadline) { console.error("soak: sockets did not open within 60 s"); process.exit(1); }
    await sleep(20);
  }
}
log(`${subs.length} sockets open after ${(elapsed() / 1000).toFixed(1)} s`);
const runStart = performance.now();
const measureStart = runStart + WARMUP_MS;
if (WARMUP_MS) log(`warm-up for ${opts.warmup} min (not measured), then ${opts.minutes} min measured; times below count from the end of the warm-up`);

/** One publish, retried with its Idempotency-Key while the request fails on the network. */
async function publishOnce(room, msg, key) {
  const r = await http.publish(room.id, msg, key, {
    onRetry: (e) => { stats.publishRetries++; note(`publish ${room.id} retried after ${e.code ?? e.message}`); },
  });
  if (r.status !== 200) throw new Error(`HTTP ${r.status} ${JSON.stringify(r.body).slice(0, 200)}`);
  return r.body;
}

async function publisher() {
  let k = 0;
  const every = 1000 / opts.rate;
  let next = performance.now();
  while (running.publish) {
    next += every;
    const room = rooms[k % rooms.length];
    const requiresAck = Math.random() < opts["ack-share"];
    k++;
    if (stats.inflight < 200) {
      stats.inflight++;
      publishOnce(room, { type: requiresAck ? "soak.ack" : "soak.plain", data: { t: performance.now(), k }, requiresAck }, `soak-${k}`)
        .then((r) => {
          stats.publishes++;
          room.lastSeq = Math.max(room.lastSeq, r.seq);
        })
        .catch((e) => { stats.publishErrors++; note(`publish ${room.id}: ${e.message}`); })
        .finally(() => { stats.inflight--; });
    } else {
      stats.publishErrors++; // the runtime fell this far behind: count it, it fails the run
    }
    const wait = next - performance.now();
    if (wait > 0) await sleep(wait);
  }
}

async function churner() {
  const tick = 100;
  let debt = 0;
  while (running.churn) {
    await sleep(tick);
    debt += (opts.churn * subs.length * tick) / 1000;
    while (debt >= 1) {
      debt--;
      const s = subs[Math.floor(Math.random() * subs.length)];
      if (s.state !== "open") continue;
      // Half close politely, half just vanish (a phone losing signal).
      s.drop({ terminate: Math.random() >= 0.5 });
      setTimeout(() => { if (running.reconnect && s.state === "away" && !s.ws) { stats.reconnects++; s.connect(); } }, Math.random() * 3000);
    }
  }
}

async function wasmBytes() {
  try {
    const r = await http.request("GET", `/rooms/${rooms[0].id}/health`);
    return typeof r.body?.wasmMemoryBytes === "number" ? r.body.wasmMemoryBytes : null;
  } catch { return null; }
}

const rows = [];
async function reporter() {
  let lastReport = performance.now();
  let lastFrames = 0;
  let lastPublishes = 0;
  while (running.publish) {
    await sleep(SAMPLE_MS);
    samples.push({ t: performance.now() - measureStart, rss: rssKiB(rt.pid) });
    if (performance.now() - lastReport < REPORT_MS - 100 && running.publish) continue;
    const secs = (performance.now() - lastReport) / 1000;
    lastReport = performance.now();
    const lat = tally.latencies;
    tally.latencies = [];
    if (performance.now() >= measureStart) for (const x of lat) stats.allLatencies.push(x);
    const wasm = await wasmBytes();
    const row = {
      t: Math.round((performance.now() - measureStart) / 1000),
      rssMiB: +(samples.at(-1).rss / 1024).toFixed(1),
      anonMiB: +(rssParts(rt.pid).anon / 1024).toFixed(1),
      storageMiB: +(diskBytes(persist) / 2 ** 20).toFixed(1),
      wasmMiB: wasm === null ? null : +(wasm / 2 ** 20).toFixed(2),
      open: subs.filter((s) => s.state === "open").length,
      publishes: stats.publishes,
      publishesPerS: +((stats.publishes - lastPublishes) / secs).toFixed(1),
      framesPerS: Math.round((tally.frames - lastFrames) / secs),
      reconnects: stats.reconnects,
      redeliveries: tally.redeliveries,
      lost: lostSoFar(),
      duplicated: tally.duplicated,
      outOfOrder: tally.outOfOrder,
      p50: +percentile(lat, 50).toFixed(1),
      p99: +percentile(lat, 99).toFixed(1),
      max: +percentile(lat, 100).toFixed(1),
    };
    lastFrames = tally.frames;
    lastPublishes = stats.publishes;
    rows.push(row);
    log(`${String(row.t).padStart(5)} s  rss ${row.rssMiB} MiB (anon ${row.anonMiB})  storage ${row.storageMiB} MiB  wasm ${row.wasmMiB ?? "n/a"}${row.wasmMiB === null ? "" : " MiB"}  open ${row.open}  ` +
      `publishes ${row.publishes} (${row.publishesPerS}/s)  frames ${row.framesPerS}/s  reconnects ${row.reconnects}  redeliveries ${row.redeliveries}  ` +
      `lost ${row.lost}  dup ${row.duplicated}  out of order ${row.outOfOrder}  latency p50 ${row.p50} p99 ${row.p99} max ${row.max} ms`);
  }
}

const loops = [publisher(), churner(), reporter()];
await sleep(WARMUP_MS + DURATION_MS);
running.publish = false;
running.churn = false;
await Promise.all(loops);
while (stats.inflight > 0) await sleep(20);

// ---- the end: everyone comes back and catches up ----
for (const s of subs) if (s.state === "away" && !s.ws) { stats.reconnects++; s.connect(); }
const settleDeadline = Date.now() + 60_000;
const behind = () => subs.filter((s) => s.state !== "open" || s.lastSeq < s.roomState.lastSeq);
while (behind().length && Date.now() < settleDeadline) await sleep(100);
running.reconnect = false;
const missing = behind();
const lost = subs.reduce((n, s) => n + s.lost(s.roomState.lastSeq), tally.unrecovered);
if (missing.length) note(`${missing.length} sockets still behind 60 s after the end`);

const quarter = (from, to) => mean(samples.filter((x) => x.t >= from * DURATION_MS && x.t < to * DURATION_MS).map((x) => x.rss));
const firstQ = quarter(0, 0.25);
const lastQ = quarter(0.75, 1.01);
const growth = ((lastQ - firstQ) / firstQ) * 100;
const all = stats.allLatencies;
const wasmEnd = await wasmBytes();
const result = {
  command: `node bench/soak.mjs ${process.argv.slice(2).join(" ")}`.trim(),
  options: opts,
  machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, memGiB: Math.round(os.totalmem() / 2 ** 30), kernel: os.release(), node: process.version, load: os.loadavg() },
  publishes: stats.publishes, publishErrors: stats.publishErrors, publishRetries: stats.publishRetries, frames: tally.frames, reconnects: stats.reconnects,
  redeliveries: tally.redeliveries, lost, duplicated: tally.duplicated, outOfOrder: tally.outOfOrder, connectErrors: tally.connectErrors,
  latencyMs: { measured: "live frames after the warm-up", p50: percentile(all, 50), p90: percentile(all, 90), p99: percentile(all, 99), max: percentile(all, 100), n: all.length },
  rssMiB: { firstQuarter: firstQ / 1024, lastQuarter: lastQ / 1024, growthPct: growth, bound: opts["rss-bound"] },
  wasmMiB: wasmEnd === null ? null : wasmEnd / 2 ** 20,
  rows,
  errors: tally.errors,
};
const failures = [];
if (lost) failures.push(`${lost} lost`);
if (tally.duplicated) failures.push(`${tally.duplicated} duplicated`);
if (tally.outOfOrder) failures.push(`${tally.outOfOrder} out of order`);
if (stats.publishErrors) failures.push(`${stats.publishErrors} publishes failed`);
if (Number.isNaN(growth)) failures.push("too few RSS samples to compare the quarters (a longer --minutes)");
else if (!(growth <= opts["rss-bound"])) failures.push(`RSS grew ${growth.toFixed(1)} % from the first quarter to the last (bound ${opts["rss-bound"]} %)`);
result.pass = failures.length === 0;

log(`\nsoak ${result.pass ? "PASSED" : "FAILED"}${failures.length ? `: ${failures.join(", ")}` : ""}`);
log(`  ${stats.publishes} publishes (${stats.publishRetries} retried with their key after a network error), ${tally.frames} notification frames, ${stats.reconnects} reconnects, ${tally.redeliveries} redeliveries; lost ${lost}, duplicated ${tally.duplicated}, out of order ${tally.outOfOrder}`);
log(`  latency publish→frame (live frames, n=${all.length}): p50 ${result.latencyMs.p50.toFixed(1)} ms, p90 ${result.latencyMs.p90.toFixed(1)} ms, p99 ${result.latencyMs.p99.toFixed(1)} ms, max ${result.latencyMs.max.toFixed(1)} ms`);
log(`  workerd RSS: first quarter ${(firstQ / 1024).toFixed(1)} MiB, last quarter ${(lastQ / 1024).toFixed(1)} MiB (${growth >= 0 ? "+" : ""}${growth.toFixed(1)} %, bound +${opts["rss-bound"]} %); wasm memory ${wasmEnd === null ? "n/a (health has no wasmMemoryBytes)" : `${(wasmEnd / 2 ** 20).toFixed(2)} MiB`}`);
for (const e of tally.errors) log(`  ! ${e}`);

const out = opts.json || path.join(BENCH, "results", `soak-${new Date().toISOString().replace(/[:.]/g, "-")}.json`);
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
log(`  result: ${path.relative(process.cwd(), out)}`);

for (const s of subs) s.close({ terminate: true });
http.close();
await rt.dispose();
fs.rmSync(persist, { recursive: true, force: true });
process.exit(result.pass ? 0 : 1);
