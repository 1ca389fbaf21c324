// Delivery guarantees, part 2 (docs/protocol.md "Delivery" and "Publishing"): the durable log. Resume with
// `since`, the replay/live seam under load, idempotent publishing, durability across a
// restart, and pruning by HISTORY_LIMIT and HISTORY_TTL_SECONDS.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { nothingMore } from "./support/checks.mjs";

// Long enough that no redelivery interleaves with what a test awaits, unless it wants one.
const ACKS = { ACK_RETRY_INTERVAL_MS: "1000", ACK_MAX_ATTEMPTS: "3" };
// The restart test watches a round resume, so it uses short rounds.
const SHORT_ACKS = { ACK_RETRY_INTERVAL_MS: "300", ACK_MAX_ATTEMPTS: "3" };

let w;
before(async () => { w = await startWorker({ bindings: { ...ACKS, HISTORY_LIMIT: "1000" } }); });
after(async () => { await w?.stop(); });

function user() {
  const sub = roomName("u");
  return { sub, room: `user_${sub}`, token: tokenFor(sub) };
}

async function publishOk(worker, room, msg, headers) {
  const r = await worker.publish(room, msg, headers);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

async function historySeqs(worker, room, query = "") {
  const h = await worker.history(room, query);
  assert.equal(h.status, 200, JSON.stringify(h.body));
  return h.body.notifications.map((n) => n.seq);
}

const range = (from, to) => Array.from({ length: to - from + 1 }, (_, i) => from + i);

/** The next `n` frames' seqs. */
async function seqsOf(c, n, ms) {
  const out = [];
  for (let i = 0; i < n; i++) out.push((await c.next(ms)).seq);
  return out;
}

test("since replays every stored notification after it, in order, before live ones", async () => {
  const u = user();
  const pubs = [];
  for (let i = 1; i <= 5; i++) {
    pubs.push(await publishOk(w, u.room, { type: `t.${i}`, requiresAck: i === 4 }));
  }
  const c = await w.connect(u.room, { token: u.token, query: { since: "2" } });
  assert.equal(c.hello.recovered, true);
  assert.equal(c.hello.lastSeq, 5);
  const live = await publishOk(w, u.room, { type: "t.live" });
  const frames = [await c.next(), await c.next(), await c.next(), await c.next()];
  assert.deepEqual(frames.map((f) => [f.seq, f.type]), [[3, "t.3"], [4, "t.4"], [5, "t.5"], [6, "t.live"]]);
  assert.equal(live.seq, 6);
  assert.deepEqual(frames.map((f) => f.attempt), [1, 1, 1, 1]);
  assert.equal(frames[1].requiresAck, true);
  c.send({ type: "ack", notificationId: frames[1].id });
  c.send({ type: "ping" });
  assert.equal((await c.next()).type, "pong");

  const all = await w.connect(u.room, { token: u.token, query: { since: "0" } });
  assert.equal(all.hello.recovered, true);
  assert.deepEqual(await seqsOf(all, 6), range(1, 6));
  const caughtUp = await w.connect(u.room, { token: u.token, query: { since: "6" } });
  assert.equal(caughtUp.hello.recovered, true);
  assert.ok(await nothingMore(caughtUp), "nothing to replay after the last seq");
});

test("a since beyond the room's last seq is not recovered", async () => {
  const u = user();
  await publishOk(w, u.room, { type: "t.1" });
  const c = await w.connect(u.room, { token: u.token, query: { since: "7" } });
  assert.equal(c.hello.recovered, false);
  assert.equal(c.hello.lastSeq, 1);
  const live = await publishOk(w, u.room, { type: "t.2" });
  assert.equal((await c.next()).seq, live.seq, "live delivery still works");
});

test("the replay/live seam: a client resuming during a publishing burst sees every seq once, in order", async () => {
  const u = user();
  const N = 200;
  const joinAt = [40, 100, 160];
  const reached = new Map(joinAt.map((k) => {
    let resolve;
    const p = new Promise((r) => (resolve = r));
    return [k, { p, resolve }];
  }));
  const publisher = (async () => {
    for (let i = 1; i <= N; i++) {
      const r = await publishOk(w, u.room, { type: "burst", data: { i } });
      assert.equal(r.seq, i);
      reached.get(i)?.resolve();
    }
  })();
  const clients = await Promise.all(joinAt.map(async (k) => {
    await reached.get(k).p;
    // Resume from a little behind, so the replay has some length while publishing goes on.
    const since = k - 25;
    return [since, await w.connect(u.room, { token: u.token, query: { since: String(since) } })];
  }));
  await publisher;
  for (const [since, c] of clients) {
    assert.equal(c.hello.recovered, true);
    assert.ok(c.hello.lastSeq >= since + 25, `lastSeq ${c.hello.lastSeq}`);
    const seqs = await seqsOf(c, N - since);
    assert.deepEqual(seqs, range(since + 1, N), `client resuming after ${since}`);
  }
  const quiet = await Promise.all(clients.map(([, c]) => nothingMore(c)));
  assert.deepEqual(quiet, quiet.map(() => true), "no duplicates after the last seq");
});

test("the same Idempotency-Key publishes once", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const msg = { type: "job.done", data: { step: 3 } };
  const first = await publishOk(w, u.room, msg, { "idempotency-key": "step-3" });
  assert.equal(first.duplicate, false);
  const again = await publishOk(w, u.room, { ...msg, data: { step: "retried" } }, { "idempotency-key": "step-3" });
  assert.deepEqual(again, { ...first, duplicate: true });
  const f = await c.next();
  assert.deepEqual([f.id, f.seq, f.data], [first.id, first.seq, { step: 3 }]);
  assert.ok(await nothingMore(c), "the subscriber sees it once");

  const other = await publishOk(w, u.room, msg, { "idempotency-key": "step-4" });
  assert.equal(other.duplicate, false);
  assert.equal(other.seq, first.seq + 1, "a duplicate takes no seq");
  assert.notEqual(other.id, first.id);
  assert.equal((await c.next()).seq, other.seq);
  assert.deepEqual(await historySeqs(w, u.room), [first.seq, other.seq]);
});

test("concurrent retries with one Idempotency-Key publish once", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const results = await Promise.all(
    Array.from({ length: 6 }, () => publishOk(w, u.room, { type: "job.done" }, { "idempotency-key": "race" })),
  );
  const firsts = results.filter((r) => !r.duplicate);
  assert.equal(firsts.length, 1, JSON.stringify(results));
  for (const r of results) assert.deepEqual(r, { ...firsts[0], duplicate: r.duplicate });
  assert.equal((await c.next()).seq, firsts[0].seq);
  assert.ok(await nothingMore(c));
});

test("a refused publish takes no seq", async () => {
  const u = user();
  const first = await publishOk(w, u.room, { type: "t", id: "same-id" }, { "idempotency-key": "key-a" });
  const clash = await w.publish(u.room, { type: "t", id: "same-id" }, { "idempotency-key": "key-b" });
  assert.equal(clash.status, 409, JSON.stringify(clash.body));
  assert.equal(clash.body.error.code, "duplicate_id");
  const invalid = await w.publish(u.room, { type: "t", requireAck: true });
  assert.equal(invalid.status, 400);
  const next = await publishOk(w, u.room, { type: "t" });
  assert.equal(next.seq, first.seq + 1);
  assert.deepEqual(await historySeqs(w, u.room), [first.seq, next.seq]);
});

test("the body's id makes a publish idempotent too", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const first = await publishOk(w, u.room, { type: "job.done", id: "job-77" });
  assert.equal(first.id, "job-77");
  // The duplicate reports the first publish's broadcastCount, even though more listen now.
  const c2 = await w.connect(u.room, { token: u.token });
  const again = await publishOk(w, u.room, { type: "job.done", id: "job-77" });
  assert.deepEqual(again, { ...first, duplicate: true });
  assert.equal((await c.next()).id, "job-77");
  const [q1, q2] = await Promise.all([nothingMore(c), nothingMore(c2)]);
  assert.ok(q1 && q2, "a duplicate delivers nothing");
  const next = await publishOk(w, u.room, { type: "job.done", id: "job-78" });
  assert.equal(next.seq, first.seq + 1);
});

test("a pending notification, seq and idempotency survive a restart", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-delivery-"));
  const u = user();
  let w1;
  let w2;
  try {
    w1 = await startWorker({ bindings: SHORT_ACKS, persist: dir });
    // A second user is mid-round (attempt 1 sent, unacked) when the runtime stops.
    const v = user();
    const cv = await w1.connect(v.room, { token: v.token });
    const inFlight = await publishOk(w1, v.room, { type: "job.done", requiresAck: true });
    assert.equal((await cv.next()).attempt, 1);
    const pending = await publishOk(w1, u.room, { type: "job.done", requiresAck: true }, { "idempotency-key": "k-pend" });
    await publishOk(w1, u.room, { type: "job.progress" });
    await publishOk(w1, u.room, { type: "job.progress" });
    await w1.stop();
    w1 = undefined;

    w2 = await startWorker({ bindings: SHORT_ACKS, persist: dir });
    const c = await w2.connect(u.room, { token: u.token });
    assert.equal(c.hello.lastSeq, 3);
    const f = await c.next();
    assert.deepEqual([f.id, f.seq, f.attempt], [pending.id, 1, 1]);
    c.send({ type: "ack", notificationId: f.id });
    const again = await publishOk(w2, u.room, { type: "job.done", requiresAck: true }, { "idempotency-key": "k-pend" });
    assert.deepEqual(again, { ...pending, duplicate: true });
    const next = await publishOk(w2, u.room, { type: "job.next" });
    assert.equal(next.seq, 4, "seq continues after the restart");
    assert.equal((await c.next()).seq, 4);
    assert.deepEqual(await historySeqs(w2, u.room), [1, 2, 3, 4]);

    // The in-flight one resumes its rounds from storage where they stood.
    const cv2 = await w2.connect(v.room, { token: v.token });
    const attempts = [];
    for (;;) {
      const f = await cv2.next(3000);
      assert.equal(f.id, inFlight.id);
      attempts.push(f.attempt);
      if (f.attempt === 3) break;
    }
    assert.ok(attempts[0] >= 1 && attempts[0] <= 2, `resumed at attempt ${attempts[0]}`);
    assert.deepEqual(attempts, range(attempts[0], 3));
    assert.ok(await cv2.quiet(700), "still at most ACK_MAX_ATTEMPTS sends across the restart");
  } finally {
    await w1?.stop();
    await w2?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});

test("HISTORY_LIMIT keeps the newest entries, pending ones beyond it, and resume reports the gap", async () => {
  const small = await startWorker({ bindings: { ...ACKS, HISTORY_LIMIT: "5" } });
  try {
    const a = user();
    for (let i = 1; i <= 10; i++) await publishOk(small, a.room, { type: "t", data: { i } });
    const h = await small.history(a.room);
    assert.equal(h.body.lastSeq, 10);
    assert.deepEqual(h.body.notifications.map((n) => n.seq), range(6, 10));

    const gap = await small.connect(a.room, { token: a.token, query: { since: "2" } });
    assert.equal(gap.hello.recovered, false, "seq 3..5 are gone");
    assert.deepEqual(await seqsOf(gap, 5), range(6, 10), "what the log still holds is replayed");
    const edge = await small.connect(a.room, { token: a.token, query: { since: "5" } });
    assert.equal(edge.hello.recovered, true, "everything after 5 is still there");
    assert.deepEqual(await seqsOf(edge, 5), range(6, 10));

    // A pending notification is kept past the limit until it is acked or fails.
    const b = user();
    const pending = await publishOk(small, b.room, { type: "t", requiresAck: true });
    for (let i = 2; i <= 10; i++) await publishOk(small, b.room, { type: "t" });
    const hb = await small.history(b.room);
    assert.deepEqual(hb.body.notifications.map((n) => n.seq), [1, ...range(6, 10)]);
    assert.equal(hb.body.notifications[0].id, pending.id);
    assert.equal(hb.body.notifications[0].deliveryStatus, "pending");
    const resume = await small.connect(b.room, { token: b.token, query: { since: "0" } });
    assert.equal(resume.hello.recovered, false, "seq 2..5 are gone even though 1 is kept");
  } finally {
    await small.stop();
  }
});

test("HISTORY_TTL_SECONDS prunes old entries on a later publish, pending ones included", async () => {
  const ttl = await startWorker({ bindings: { ...ACKS, HISTORY_TTL_SECONDS: "1" } });
  try {
    const u = user();
    const pending = await publishOk(ttl, u.room, { type: "t", requiresAck: true });
    const old = await publishOk(ttl, u.room, { type: "t" });
    assert.deepEqual(await historySeqs(ttl, u.room), [pending.seq, old.seq]);
    // The TTL is the thing under test: it can only pass by waiting it out.
    await new Promise((r) => setTimeout(r, 1100));
    const fresh = await publishOk(ttl, u.room, { type: "t" });
    // A pending notification's own expiry is the TTL: nobody connected to receive it for that
    // long, so it expires (failed) and goes like any other; the offline queue cannot grow forever.
    assert.deepEqual(await historySeqs(ttl, u.room), [fresh.seq]);
    const c = await ttl.connect(u.room, { token: u.token, query: { since: "0" } });
    assert.equal(c.hello.recovered, false);
    assert.equal(c.hello.lastSeq, 3);
  } finally {
    await ttl.stop();
  }
});
