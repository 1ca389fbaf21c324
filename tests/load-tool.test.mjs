// The load tool (bench/load.mjs, `npm run load`) run as a user runs it, as a child process
// against roomcast in workerd: its JSON line, its exit status, its message when the key or the
// secret is wrong. And the delivery checks it shares with the soak (bench/lib/load.mjs), fed
// frames that a broken server could send.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { startWorker, ROOT, API_KEY, JWT_SECRET } from "./support/harness.mjs";
import { Subscriber, Tally } from "../bench/lib/load.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

/** Runs the tool; resolves { code, stdout, stderr } (killed after 60 s). */
function load(args) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(ROOT, "bench/load.mjs"), ...args], { cwd: ROOT });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr }); });
  });
}

const small = () => ["--url", w.base, "--rooms", "2", "--sockets", "10", "--publishes", "5", "--json"];

test("10 sockets in 2 rooms, 5 publishes each: every socket gets its room's 5, once, in order", async () => {
  const r = await load([...small(), "--api-key", API_KEY, "--jwt-secret", JWT_SECRET]);
  assert.equal(r.code, 0, r.stderr);
  const lines = r.stdout.trim().split("\n");
  assert.equal(lines.length, 1, "with --json, stdout is the JSON line only (the table goes to stderr)");
  const result = JSON.parse(lines.at(-1));
  assert.deepEqual(Object.keys(result), ["published", "expected", "delivered", "lost", "duplicated", "outOfOrder", "latencyMs", "connectMs"]);
  assert.deepEqual(
    [result.published, result.expected, result.delivered, result.lost, result.duplicated, result.outOfOrder],
    [10, 50, 50, 0, 0, 0],
  );
  assert.deepEqual(Object.keys(result.latencyMs), ["p50", "p99", "max"]);
  assert.deepEqual(Object.keys(result.connectMs), ["p50", "p99"]);
  for (const v of [...Object.values(result.latencyMs), ...Object.values(result.connectMs)]) assert.ok(v >= 0, JSON.stringify(result));
  assert.ok(result.latencyMs.p50 <= result.latencyMs.p99 && result.latencyMs.p99 <= result.latencyMs.max);
  assert.match(r.stderr, /result\s+PASSED/);
  assert.match(r.stderr, /expected\s+50 notifications/);
});

test("a paced run (--rate) delivers everything too", async () => {
  const r = await load([...small(), "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--rate", "50"]);
  assert.equal(r.code, 0, r.stderr);
  const result = JSON.parse(r.stdout.trim().split("\n").at(-1));
  assert.deepEqual([result.published, result.expected, result.delivered, result.lost], [10, 50, 50, 0]);
  assert.match(r.stderr, /asked 50\/s/);
});

test("a wrong --api-key stops the run before it opens a socket, and says which setting", async () => {
  const r = await load([...small(), "--api-key", "not-the-key", "--jwt-secret", JWT_SECRET]);
  assert.equal(r.code, 2, r.stderr);
  assert.equal(r.stdout, "", "no JSON line for a run that did not happen");
  assert.match(r.stderr, /the API key was refused \(HTTP 401 unauthorized: .+\): --api-key must be one of the deployment's BROADCAST_API_KEYS/);
  assert.doesNotMatch(r.stderr, /sockets open/);
});

test("a wrong --jwt-secret, a bad URL and missing arguments are told apart", async () => {
  const secret = await load([...small(), "--api-key", API_KEY, "--jwt-secret", "another-secret-0123456789abcdef0123"]);
  assert.equal(secret.code, 2);
  assert.match(secret.stderr, /tokens signed with --jwt-secret were refused \(HTTP 401 unauthorized: .+\): it must be the deployment's JWT_SECRET/);

  const url = await load(["--url", "ws://localhost:1", "--api-key", "k", "--jwt-secret", "s"]);
  assert.equal(url.code, 2);
  assert.match(url.stderr, /--url must be an http:\/\/ or https:\/\/ URL/);

  const missing = await load(["--url", w.base, "--api-key", API_KEY]);
  assert.equal(missing.code, 2);
  assert.match(missing.stderr, /--jwt-secret is required/);

  const few = await load([...small(), "--api-key", API_KEY, "--jwt-secret", JWT_SECRET, "--sockets", "1"]);
  assert.equal(few.code, 2);
  assert.match(few.stderr, /--sockets \(1\) must be at least --rooms \(2\)/);
});

// The checks, without a socket: what the subscriber counts for frames as a broken server might send them.
function checked(frames, { firstSeq = 0 } = {}) {
  const tally = new Tally();
  const s = new Subscriber({ wsBase: "ws://unused", room: "r", token: "t", tally });
  s.receive({ type: "connected", roomId: "r", lastSeq: firstSeq }, null);
  for (const f of frames) s.receive(f.type === "batch" ? f : { id: `n${f.seq}`, attempt: 1, ...f }, null);
  return { tally, s };
}

test("checks: in order is delivered; a skipped seq is lost, or out of order when it comes later; a repeat is a duplicate", () => {
  const ok = checked([1, 2, 3].map((seq) => ({ seq })));
  assert.deepEqual([ok.tally.delivered, ok.tally.duplicated, ok.tally.outOfOrder, ok.s.lost(3)], [3, 0, 0, 0]);

  const gap = checked([1, 3].map((seq) => ({ seq })));
  assert.deepEqual([gap.tally.delivered, gap.s.lost(3), gap.s.lost(5)], [2, 1, 3], "seq 2 never came; 4 and 5 neither");

  const late = checked([1, 3, 2].map((seq) => ({ seq })));
  assert.deepEqual([late.tally.delivered, late.tally.outOfOrder, late.tally.duplicated, late.s.lost(3)], [3, 1, 0, 0]);

  const twice = checked([1, 2, 2, 1].map((seq) => ({ seq })));
  assert.deepEqual([twice.tally.delivered, twice.tally.duplicated, twice.s.lost(2)], [2, 2, 0]);

  // A redelivery (a new attempt of a requiresAck notification) is not a duplicate; the same attempt again is.
  const rounds = checked([{ seq: 1 }, { seq: 1, attempt: 2 }, { seq: 1, attempt: 2 }]);
  assert.deepEqual([rounds.tally.delivered, rounds.tally.redeliveries, rounds.tally.duplicated], [1, 1, 1]);

  // A batch is its frames, in order.
  const batched = checked([{ seq: 1 }, { type: "batch", frames: [{ id: "n2", seq: 2, attempt: 1 }, { id: "n3", seq: 3, attempt: 1 }] }, { seq: 4 }]);
  assert.deepEqual([batched.tally.delivered, batched.tally.outOfOrder, batched.s.lost(4)], [4, 0, 0]);
  const reversed = checked([{ type: "batch", frames: [{ id: "n2", seq: 2, attempt: 1 }, { id: "n1", seq: 1, attempt: 1 }] }]);
  assert.deepEqual([reversed.tally.delivered, reversed.tally.outOfOrder], [2, 1]);

  // Seqs up to the room's lastSeq at the first `connected` are not due to this subscriber.
  const before = checked([{ seq: 4 }, { seq: 5 }, { seq: 6 }], { firstSeq: 5 });
  assert.deepEqual([before.tally.frames, before.tally.delivered, before.s.lost(6)], [3, 1, 0]);
});
