#!/usr/bin/env node
// Load-tests any running roomcast (`npm run dev`, or a deployment) from outside:
//
//   npm run load -- --url https://roomcast.example.workers.dev --api-key K --jwt-secret S \
//     --rooms 10 --sockets 1000 --publishes 100 [--rate 200] [--json]
//
// It opens --sockets WebSockets (batch=1) spread over --rooms new rooms (random ids, fresh each
// run), each with its own token (its own `sub`) signed locally with --jwt-secret, then publishes
// --publishes notifications into each room over HTTP with --api-key, at --rate publishes/s over
// all rooms when given, else as fast as --concurrency requests in flight allow. Every socket
// must receive every notification of its room exactly once and in seq order (a socket that
// drops reconnects with since=, as a client would); each room's frames must carry the ids its
// publishes were answered with.
//
// Progress goes to stderr, a table at the end (to stderr with --json), and with --json the last
// line of stdout is
//   {"published","expected","delivered","lost","duplicated","outOfOrder",
//    "latencyMs":{"p50","p99","max"},"connectMs":{"p50","p99"}}
// expected = Σ over rooms of its sockets × its answered publishes; latency = publish sent →
// frame received; connectMs = socket opened → `connected`.
//
// Exit status: 0 when every notification arrived exactly once, in order, and every publish was
// answered 200; 1 on any loss, duplicate, out-of-order or mismatched frame, failed publish, or
// the --timeout; 2 when the run could not start (bad arguments, roomcast unreachable, the API
// key or the tokens refused, sockets refused).
//
// The rooms stay behind with their history (HISTORY_LIMIT / HISTORY_TTL_SECONDS prune them).
import { randomBytes } from "node:crypto";
import { Publisher, Subscriber, Tally, describeError, mapLimit, mintToken, summary, wsBaseOf } from "./lib/load.mjs";

const USAGE = `usage: npm run load -- --url <http(s)://host> --api-key <key> --jwt-secret <secret>
  [--rooms 10] [--sockets 100] [--publishes 10] [--rate <publishes/s>] [--concurrency 32]
  [--connect-concurrency 50] [--timeout <s>] [--json]
--api-key and --jwt-secret default to $ROOMCAST_API_KEY and $ROOMCAST_JWT_SECRET.
--timeout defaults to 120 s, plus the publishing time --rate sets.`;

const SPEC = {
  url: { kind: "string" },
  "api-key": { kind: "string", env: "ROOMCAST_API_KEY" },
  "jwt-secret": { kind: "string", env: "ROOMCAST_JWT_SECRET" },
  rooms: { kind: "int", default: 10, min: 1, max: 10_000 },
  sockets: { kind: "int", default: 100, min: 1, max: 100_000 },
  publishes: { kind: "int", default: 10, min: 1, max: 100_000 },
  rate: { kind: "number", min: 0.01 },
  concurrency: { kind: "int", default: 32, min: 1, max: 1000 },
  "connect-concurrency": { kind: "int", default: 50, min: 1, max: 1000 },
  timeout: { kind: "number", min: 1 },
  json: { kind: "flag" },
};
/** At most this many publishes in one run (rooms × publishes). */
const MAX_TOTAL = 1_000_000;
/** Delivery ends when nothing has arrived for this long after the last publish was answered. */
const QUIET_MS = 10_000;

function usage(msg) {
  process.stderr.write(`load: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

/** `--name value` and `--name=value`; flags take no value. */
function parseArgs(argv) {
  const o = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === "--help" || a === "-h") { process.stdout.write(`${USAGE}\n`); process.exit(0); }
    const m = /^--([a-z-]+)(?:=(.*))?$/s.exec(a);
    if (!m || !(m[1] in SPEC)) usage(`unknown argument ${a}`);
    const [, name, inline] = m;
    const spec = SPEC[name];
    if (spec.kind === "flag") {
      if (inline !== undefined) usage(`--${name} takes no value`);
      o[name] = true;
      continue;
    }
    const raw = inline ?? argv[++i];
    if (raw === undefined) usage(`--${name} needs a value`);
    if (spec.kind === "string") { o[name] = raw; continue; }
    const v = Number(raw);
    if (!Number.isFinite(v) || (spec.kind === "int" && !Number.isInteger(v))) usage(`--${name} must be ${spec.kind === "int" ? "an integer" : "a number"}, not ${JSON.stringify(raw)}`);
    if (v < spec.min || (spec.max !== undefined && v > spec.max)) usage(`--${name} must be between ${spec.min} and ${spec.max ?? "∞"}, not ${v}`);
    o[name] = v;
  }
  for (const [name, spec] of Object.entries(SPEC)) {
    if (o[name] === undefined && spec.env && process.env[spec.env]) o[name] = process.env[spec.env];
    if (o[name] === undefined && spec.default !== undefined) o[name] = spec.default;
  }
  for (const name of ["url", "api-key", "jwt-secret"]) if (!o[name]) usage(`--${name} is required`);
  try { wsBaseOf(o.url); } catch { usage(`--url must be an http:// or https:// URL, not ${JSON.stringify(o.url)}`); }
  if (o.sockets < o.rooms) usage(`--sockets (${o.sockets}) must be at least --rooms (${o.rooms}): every room needs a socket`);
  if (o.rooms * o.publishes > MAX_TOTAL) usage(`--rooms × --publishes is ${o.rooms * o.publishes}; at most ${MAX_TOTAL} in one run`);
  o.url = o.url.replace(/\/+$/, "");
  o.timeout ??= 120 + (o.rate ? (o.rooms * o.publishes) / o.rate : 0);
  return o;
}

const opts = parseArgs(process.argv.slice(2));
const err = (line) => process.stderr.write(`${line}\n`);
const out = opts.json ? err : (line) => process.stdout.write(`${line}\n`);

const runId = randomBytes(4).toString("hex");
const tally = new Tally();
const publisher = new Publisher({ base: opts.url, apiKey: opts["api-key"], maxSockets: opts.concurrency });
const wsBase = wsBaseOf(opts.url);
const rooms = Array.from({ length: opts.rooms }, (_, i) => ({
  id: `load_${runId}_${i}`,
  subs: [],
  published: 0, // publishes answered 200
  lastSeq: 0, // the highest seq answered
  answered: new Map(), // seq -> id, from the answers
  received: new Map(), // seq -> id, from the first frame of that seq
}));
// Tokens may enter this run's rooms only; one `sub` per socket, so no per-user limit applies.
const tokenRooms = [`load_${runId}_*`];
const ttl = Math.ceil(opts.timeout) + 600;
const stats = { publishErrors: 0, publishRetries: 0, mismatched: 0, reconnects: 0 };
let finishing = false;
let timedOut = false;
const t0 = performance.now();
const secs = () => ((performance.now() - t0) / 1000).toFixed(1);

/** Stops at once: the run could not be made. */
function fatal(msg, code = 2) {
  err(`load: ${msg}`);
  finishing = true;
  for (const r of rooms) for (const s of r.subs) s.close({ terminate: true });
  publisher.close();
  process.exit(code);
}

/** Resolves at --timeout: what is still in flight then is not waited for. */
const deadline = new Promise((resolve) => setTimeout(() => { timedOut = true; resolve(); }, opts.timeout * 1000).unref());

// ---- checks before anything is opened: reachable, the key, the tokens ----
const probeRoom = rooms[0].id;
let health;
try {
  health = await publisher.request("GET", `/rooms/${probeRoom}/health`);
} catch (e) {
  fatal(`cannot reach ${opts.url}: ${e.code ?? e.message}${opts.url.includes("localhost:8787") || opts.url.includes("127.0.0.1:8787") ? " (is `npm run dev` running?)" : ""}`);
}
if (health.status === 401) fatal(`the API key was refused (${describeError(health.status, health.body)}): --api-key must be one of the deployment's BROADCAST_API_KEYS`);
if (health.status !== 200 || typeof health.body?.lastSeq !== "number") fatal(`GET ${opts.url}/rooms/${probeRoom}/health answered ${describeError(health.status, health.body)}: is --url a roomcast?`);

const sampleToken = mintToken(opts["jwt-secret"], { sub: `load-${runId}-probe`, ttl, rooms: tokenRooms });
// The subscribe URL without Upgrade answers what the upgrade would get: 426 when it would be accepted.
const probe = await publisher.request("GET", `/rooms/${probeRoom}/subscribe?token=${encodeURIComponent(sampleToken)}`, undefined, {}, { auth: false })
  .catch((e) => fatal(`cannot reach ${opts.url}: ${e.code ?? e.message}`));
if (probe.status === 401) fatal(`tokens signed with --jwt-secret were refused (${describeError(probe.status, probe.body)}): it must be the deployment's JWT_SECRET`);
if (probe.status !== 426) fatal(`a socket would be refused: ${describeError(probe.status, probe.body)}`);

// ---- sockets ----
const subs = Array.from({ length: opts.sockets }, (_, j) => {
  const room = rooms[j % opts.rooms];
  const sub = new Subscriber({
    wsBase, room: room.id, tally, label: `${room.id} socket ${j}`,
    token: mintToken(opts["jwt-secret"], { sub: `load-${runId}-${j}`, ttl, rooms: tokenRooms }),
    onDelivered: (s, f) => checkId(room, s, f),
    onClose: (s, code, reason) => {
      if (finishing) return;
      tally.note(`${s.label} closed ${code}${reason ? ` ${reason}` : ""}; reconnecting with since=${s.lastSeq}`);
      reconnect(s, code === 4008 ? 0 : 500);
    },
  });
  room.subs.push(sub);
  return sub;
});

/**
 * A socket that dropped comes back as a client's would (at once after an idle close). A failed
 * attempt closes too, and so comes back here.
 */
function reconnect(s, delayMs) {
  setTimeout(async () => {
    if (finishing || s.state !== "away") return;
    stats.reconnects++;
    const r = await s.connect();
    if (!r.ok && !finishing) tally.note(`${s.label}: reconnect failed: ${r.message}`);
  }, delayMs);
}

/** Every socket of a room sees the same id at a seq, and it is the id that seq's publish was answered with. */
function checkId(room, s, f) {
  const first = room.received.get(f.seq);
  if (first === undefined) room.received.set(f.seq, f.id);
  else if (first !== f.id) { stats.mismatched++; tally.note(`${s.label}: seq ${f.seq} is ${f.id}, another socket got ${first}`); }
}

const progress = setInterval(() => {
  const open = subs.filter((s) => s.state === "open").length;
  const published = rooms.reduce((n, r) => n + r.published, 0);
  err(`load: ${secs()} s  open ${open}/${subs.length}  published ${published}/${opts.rooms * opts.publishes}  delivered ${tally.delivered} (due ${expected()})`);
}, 1000);
progress.unref();

function expected() { return rooms.reduce((n, r) => n + r.subs.length * r.published, 0); }

err(`load: run ${runId}: ${opts.sockets} sockets in ${opts.rooms} rooms, ${opts.publishes} publishes per room${opts.rate ? ` at ${opts.rate}/s` : ""}, against ${opts.url} (timeout ${Math.round(opts.timeout)} s)`);
let refused = null;
await Promise.race([deadline, mapLimit(subs, opts["connect-concurrency"], async (s) => {
  if (refused || timedOut) return;
  const r = await s.connect();
  if (!r.ok && !refused) refused = `${s.label}: ${r.message}`;
})]);
if (refused) fatal(`a socket could not connect: ${refused}`);
if (timedOut) fatal(`sockets not all connected within --timeout ${opts.timeout} s`, 1);
const connectedAt = performance.now();
err(`load: ${subs.length} sockets open after ${secs()} s`);

// ---- publishes: room by room in turn, each a fresh Idempotency-Key (which becomes its id) ----
const total = opts.rooms * opts.publishes;
let nextPublish = 0;
let lastAnswerAt = performance.now();
const keyOf = (k) => `load-${runId}-${k}`;

async function publishOne(i) {
  const room = rooms[i % opts.rooms];
  const k = Math.floor(i / opts.rooms);
  const message = { type: "load.test", data: { t: performance.now(), k } };
  let r;
  try {
    r = await publisher.publish(room.id, message, keyOf(k), { onRetry: (e) => { stats.publishRetries++; tally.note(`publish ${room.id} #${k} retried after ${e.code ?? e.message}`); } });
  } catch (e) {
    stats.publishErrors++;
    tally.note(`publish ${room.id} #${k}: ${e.code ?? e.message}`);
    return;
  }
  lastAnswerAt = performance.now();
  if (r.status === 401 || r.status === 403) fatal(`publish refused (${describeError(r.status, r.body)}): --api-key must be one of the deployment's BROADCAST_API_KEYS`);
  if (r.status !== 200 || typeof r.body?.seq !== "number") {
    stats.publishErrors++;
    tally.note(`publish ${room.id} #${k}: ${describeError(r.status, r.body)}`);
    return;
  }
  room.published++;
  room.answered.set(r.body.seq, r.body.id);
  room.lastSeq = Math.max(room.lastSeq, r.body.seq);
}

const publishStart = performance.now();
await Promise.race([deadline, mapLimit(Array.from({ length: opts.concurrency }), opts.concurrency, async () => {
  while (nextPublish < total && !timedOut) {
    const i = nextPublish++;
    if (opts.rate) {
      const wait = publishStart + (i * 1000) / opts.rate - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      if (timedOut) return;
    }
    await publishOne(i);
  }
})]);
const publishSecs = (performance.now() - publishStart) / 1000;

// ---- delivery: until everything due has arrived, nothing arrives any more, or the timeout ----
let lastDelivered = -1;
let lastProgressAt = performance.now();
while (tally.delivered < expected() && !timedOut) {
  if (tally.delivered !== lastDelivered) { lastDelivered = tally.delivered; lastProgressAt = performance.now(); }
  if (performance.now() - Math.max(lastProgressAt, lastAnswerAt) > QUIET_MS) break;
  await new Promise((r) => setTimeout(r, 50));
}
finishing = true;
clearInterval(progress);

// ---- results ----
for (const r of rooms) {
  for (const [seq, id] of r.received) {
    const want = r.answered.get(seq);
    if (want !== undefined && want !== id) { stats.mismatched++; tally.note(`${r.id}: seq ${seq} arrived as ${id}, its publish was answered as ${want}`); }
  }
}
const published = rooms.reduce((n, r) => n + r.published, 0);
const lost = rooms.reduce((n, r) => n + r.subs.reduce((m, s) => m + s.lost(r.lastSeq), 0), 0);
const result = {
  published,
  expected: expected(),
  delivered: tally.delivered,
  lost,
  duplicated: tally.duplicated,
  outOfOrder: tally.outOfOrder,
  latencyMs: summary(tally.latencies),
  connectMs: summary(tally.connectMs, { p50: 50, p99: 99 }),
};

const failures = [];
if (lost) failures.push(`${lost} lost`);
if (tally.duplicated) failures.push(`${tally.duplicated} duplicated`);
if (tally.outOfOrder) failures.push(`${tally.outOfOrder} out of order`);
if (stats.mismatched) failures.push(`${stats.mismatched} frames with another id than their seq's publish`);
if (tally.unrecovered) failures.push(`${tally.unrecovered} resumes answered recovered:false`);
if (stats.publishErrors) failures.push(`${stats.publishErrors} publishes failed`);
if (published + stats.publishErrors < total) failures.push(`${total - published - stats.publishErrors} publishes not sent`);
if (timedOut) failures.push(`stopped at --timeout ${opts.timeout} s`);

const ms = (x) => (x === null ? "n/a" : `${x} ms`);
const row = (k, v) => out(`  ${k.padEnd(14)} ${v}`);
out("");
out(`roomcast load ${runId}: ${opts.url}`);
row("sockets", `${subs.length} in ${opts.rooms} rooms; connect p50 ${ms(result.connectMs.p50)}, p99 ${ms(result.connectMs.p99)}; ${tally.drops} dropped, ${stats.reconnects} reconnects`);
row("publishes", `${published} of ${total} answered in ${publishSecs.toFixed(1)} s (${(published / Math.max(publishSecs, 1e-3)).toFixed(1)}/s${opts.rate ? `, asked ${opts.rate}/s` : ""}); ${stats.publishErrors} failed, ${stats.publishRetries} retried`);
row("expected", `${result.expected} notifications (sockets × publishes, per room)`);
row("delivered", `${result.delivered}`);
row("lost", `${result.lost}`);
row("duplicated", `${result.duplicated}`);
row("out of order", `${result.outOfOrder}`);
row("latency", `p50 ${ms(result.latencyMs.p50)}, p99 ${ms(result.latencyMs.p99)}, max ${ms(result.latencyMs.max)} (publish sent → frame received)`);
row("duration", `${secs()} s (${((connectedAt - t0) / 1000).toFixed(1)} s connecting)`);
row("result", failures.length ? `FAILED: ${failures.join(", ")}` : "PASSED");
for (const e of tally.errors) out(`  ! ${e}`);
if (opts.json) process.stdout.write(`${JSON.stringify(result)}\n`);

for (const s of subs) s.close();
publisher.close();
process.exitCode = failures.length ? 1 : 0;
// Sockets closing politely can wait on their peers; nothing else is left to do.
setTimeout(() => process.exit(), 1000).unref();
