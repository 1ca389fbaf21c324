// Delivery guarantees, part 1 (docs/protocol.md "Delivery"): requiresAck redelivery rounds, acks, the
// offline queue, and type filters on live, replayed and redelivered notifications.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { nothingMore } from "./support/checks.mjs";

// Short enough to keep the file fast, long enough that an ack sent on receipt beats the next round.
const INTERVAL = 500;
const MAX_ATTEMPTS = 3;
// Timers and socket hops jitter a little early and, on a busy 2-core box, a lot late.
const EARLY = 60;
const LATE = 2000;
const ISO_Z = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,3})?Z$/;

let w;
before(async () => {
  w = await startWorker({
    bindings: { ACK_RETRY_INTERVAL_MS: String(INTERVAL), ACK_MAX_ATTEMPTS: String(MAX_ATTEMPTS) },
  });
});
after(async () => { await w?.stop(); });

/** A fresh user: its own room `user_{sub}` and a token for it. */
function user() {
  const sub = roomName("u");
  return { sub, room: `user_${sub}`, token: tokenFor(sub) };
}

async function publishOk(room, msg, headers) {
  const r = await w.publish(room, msg, headers);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Sends a JSON ping and awaits its pong: every frame sent before it has been processed. */
async function roundTrip(c) {
  c.send({ type: "ping" });
  const pong = await c.next();
  assert.equal(pong.type, "pong", JSON.stringify(pong));
}

/** The history entry with this id. */
async function entry(room, id) {
  const h = await w.history(room);
  assert.equal(h.status, 200, JSON.stringify(h.body));
  return h.body.notifications.find((n) => n.id === id);
}

/**
 * Polls history until the entry with `id` satisfies `pred`: a retry round's end has no frame of
 * its own to await, so the stored state is the observable event.
 */
async function entryUntil(room, id, pred, ms = 5000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const e = await entry(room, id);
    if (e && pred(e)) return e;
    if (Date.now() > deadline) assert.fail(`history entry ${id} never matched: ${JSON.stringify(e)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

test("an unacked notification is redelivered every interval, then marked failed", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const pub = await publishOk(u.room, { type: "task.done", data: { n: 1 }, requiresAck: true });
  assert.equal(pub.broadcastCount, 1);

  const times = [];
  for (let attempt = 1; attempt <= MAX_ATTEMPTS; attempt++) {
    const f = await c.next(INTERVAL + LATE);
    times.push(Date.now());
    assert.deepEqual(
      [f.id, f.seq, f.type, f.requiresAck, f.attempt, f.data],
      [pub.id, pub.seq, "task.done", true, attempt, { n: 1 }],
    );
  }
  for (let i = 1; i < times.length; i++) {
    const gap = times[i] - times[i - 1];
    assert.ok(gap >= INTERVAL - EARLY, `round ${i + 1} came after ${gap} ms, before the interval`);
    assert.ok(gap <= INTERVAL + LATE, `round ${i + 1} came after ${gap} ms`);
  }
  assert.ok(await c.quiet(INTERVAL * 3), "no send beyond ACK_MAX_ATTEMPTS");

  const e = await entryUntil(u.room, pub.id, (e) => e.deliveryStatus !== "pending");
  assert.equal(e.deliveryStatus, "failed");
  assert.equal(e.attempts, MAX_ATTEMPTS);
  assert.equal(e.ackedAt, null);
  assert.equal(e.ackedBy, null);
  assert.equal(e.requiresAck, true);

  // A late ack still proves it was seen: the failed notification becomes acked.
  c.send({ type: "ack", notificationId: pub.id });
  await roundTrip(c);
  const late = await entry(u.room, pub.id);
  assert.deepEqual([late.deliveryStatus, late.attempts, late.ackedBy], ["acked", MAX_ATTEMPTS, u.sub]);
});

test("an ack by notificationId stops redelivery and is recorded with its sub", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const pub = await publishOk(u.room, { type: "task.done", requiresAck: true });
  const f = await c.next();
  assert.equal(f.attempt, 1);
  const before = Date.now();
  c.send({ type: "ack", notificationId: f.id });
  await roundTrip(c);

  const e = await entry(u.room, pub.id);
  assert.equal(e.deliveryStatus, "acked");
  assert.equal(e.ackedBy, u.sub);
  assert.match(e.ackedAt, ISO_Z);
  assert.ok(Math.abs(Date.parse(e.ackedAt) - before) < 5000, e.ackedAt);
  assert.equal(e.attempts, 1);

  // Acking again and acking ids the room never had are harmless: no error frame, no change.
  c.send({ type: "ack", notificationId: f.id });
  c.send({ type: "ack", notificationId: "no-such-id" });
  c.send({ type: "ack", ids: ["nope-1", f.id] });
  await roundTrip(c);
  assert.ok(await c.quiet(INTERVAL * 2.5), "no redelivery after the ack, no error frames");
  assert.deepEqual(await entry(u.room, pub.id), e, "a second ack changes nothing");
});

test("an ack with ids:[…] clears several notifications at once", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  const a = await publishOk(u.room, { type: "x.a", requiresAck: true });
  const b = await publishOk(u.room, { type: "x.b", requiresAck: true });
  const got = [await c.next(), await c.next()];
  assert.deepEqual(got.map((f) => [f.id, f.attempt]), [[a.id, 1], [b.id, 1]]);
  c.send({ type: "ack", ids: [a.id, b.id] });
  await roundTrip(c);
  assert.ok(await c.quiet(INTERVAL * 2.5), "neither is redelivered");
  for (const p of [a, b]) {
    const e = await entry(u.room, p.id);
    assert.equal(e.deliveryStatus, "acked");
    assert.equal(e.ackedBy, u.sub);
  }
});

test("one device acking clears the notification for the user's other devices", async () => {
  const u = user();
  const phone = await w.connect(u.room, { token: u.token });
  const laptop = await w.connect(u.room, { token: u.token });
  const pub = await publishOk(u.room, { type: "task.done", requiresAck: true });
  assert.equal(pub.broadcastCount, 2);
  const [fp, fl] = [await phone.next(), await laptop.next()];
  assert.deepEqual([fp.id, fp.attempt, fl.id, fl.attempt], [pub.id, 1, pub.id, 1]);

  phone.send({ type: "ack", notificationId: pub.id });
  await roundTrip(phone);
  const [qp, ql] = await Promise.all([phone.quiet(INTERVAL * 2.5), laptop.quiet(INTERVAL * 2.5)]);
  assert.ok(ql, "the other device gets no redelivery");
  assert.ok(qp, "the acking device gets no redelivery");
  assert.equal((await entry(u.room, pub.id)).deliveryStatus, "acked");
});

test("offline queue: a pending notification waits for a connection, then its rounds start", async () => {
  const u = user();
  const pending = await publishOk(u.room, { type: "task.done", requiresAck: true });
  const plain = await publishOk(u.room, { type: "task.progress" });
  assert.equal(pending.broadcastCount, 0);
  assert.equal(plain.broadcastCount, 0);

  // Longer than all its rounds would take: with nobody to send to, no round is spent.
  await new Promise((r) => setTimeout(r, INTERVAL * MAX_ATTEMPTS + 200));
  const waiting = await entry(u.room, pending.id);
  assert.deepEqual([waiting.deliveryStatus, waiting.attempts], ["pending", 0]);

  const c = await w.connect(u.room, { token: u.token });
  assert.equal(c.hello.lastSeq, plain.seq);
  assert.equal(c.hello.recovered, undefined, "recovered is only reported for a since");
  const first = await c.next();
  assert.deepEqual([first.id, first.attempt], [pending.id, 1]);
  const second = await c.next(INTERVAL + LATE);
  assert.deepEqual([second.id, second.attempt], [pending.id, 2], "redelivery goes on from the connection");
  // The non-ack notification published while offline is not part of the offline queue.
  c.send({ type: "ack", notificationId: pending.id });
  await roundTrip(c);
  assert.ok(await c.quiet(INTERVAL * 2), "nothing else arrives");
  const e = await entry(u.room, pending.id);
  assert.deepEqual([e.deliveryStatus, e.attempts], ["acked", 2]);
  const p = await entry(u.room, plain.id);
  assert.deepEqual([p.deliveryStatus, p.attempts], ["sent", 0]);
});

test("a device connecting mid-round gets the current attempt, then the room's next round", async () => {
  const u = user();
  const first = await w.connect(u.room, { token: u.token });
  const pub = await publishOk(u.room, { type: "task.done", requiresAck: true });
  assert.equal((await first.next()).attempt, 1);
  const late = await w.connect(u.room, { token: u.token });
  const f = await late.next();
  assert.deepEqual([f.id, f.attempt], [pub.id, 1]);
  const [a, b] = await Promise.all([first.next(INTERVAL + LATE), late.next(INTERVAL + LATE)]);
  assert.deepEqual([a.attempt, b.attempt], [2, 2], "one round for everyone, counted once");
  late.send({ type: "ack", notificationId: pub.id });
  await roundTrip(late);
  assert.ok(await first.quiet(INTERVAL * 2));
  assert.equal((await entry(u.room, pub.id)).attempts, 2);
});

test("types=note.* receives note.created and note.a.b, not notes.x", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token, query: { types: "note.*" } });
  const skipped = await publishOk(u.room, { type: "notes.x" });
  assert.equal(skipped.broadcastCount, 0, "a filtered-out connection is not counted");
  const a = await publishOk(u.room, { type: "note.created" });
  const b = await publishOk(u.room, { type: "note.a.b" });
  await publishOk(u.room, { type: "note" });
  assert.deepEqual([(await c.next()).seq, (await c.next()).seq], [a.seq, b.seq]);
  assert.ok(await nothingMore(c));
});

test("subscribe and unsubscribe frames change the filter and say so", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token });
  // The first subscribe narrows an unfiltered connection.
  c.send({ type: "subscribe", data: { types: ["note.*"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["note.*"] } });
  await publishOk(u.room, { type: "task.created" });
  const n1 = await publishOk(u.room, { type: "note.created" });
  assert.equal((await c.next()).seq, n1.seq);

  c.send({ type: "subscribe", data: { types: ["task.created"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["note.*", "task.created"] } });
  const t = await publishOk(u.room, { type: "task.created" });
  assert.equal((await c.next()).seq, t.seq);

  c.send({ type: "unsubscribe", data: { types: ["note.*"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["task.created"] } });
  await publishOk(u.room, { type: "note.updated" });
  const t2 = await publishOk(u.room, { type: "task.created" });
  assert.equal((await c.next()).seq, t2.seq, "note.updated was filtered out");

  // Removing the last pattern leaves the empty filter: every type again.
  c.send({ type: "unsubscribe", data: { types: ["task.created"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: [] } });
  const any = await publishOk(u.room, { type: "anything.else" });
  assert.equal((await c.next()).seq, any.seq);
});

test("filters apply to replay and to the offline queue", async () => {
  const u = user();
  const seqs = {};
  for (const type of ["note.a", "task.a", "note.b", "task.b"]) {
    seqs[type] = (await publishOk(u.room, { type, requiresAck: type === "note.b" || type === "task.b" })).seq;
  }
  const r = await w.connect(u.room, { token: u.token, query: { since: "0", types: "note.*" } });
  assert.equal(r.hello.recovered, true);
  const got = [await r.next(), await r.next()];
  assert.deepEqual(got.map((f) => [f.type, f.seq]), [["note.a", seqs["note.a"]], ["note.b", seqs["note.b"]]]);
  r.send({ type: "ack", notificationId: got[1].id });
  await roundTrip(r);
  r.close();

  // task.b is still pending: a plain connection filtered to task.* gets only it.
  const q = await w.connect(u.room, { token: u.token, query: { types: "task.*" } });
  const f = await q.next();
  assert.deepEqual([f.type, f.attempt], ["task.b", 1]);
  q.send({ type: "ack", notificationId: f.id });
  await roundTrip(q);
  assert.ok(await nothingMore(q));
});

test("filters apply to redelivery: unsubscribing stops a pending type's rounds", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token, query: { types: "note.*,task.*" } });
  const other = await w.connect(u.room, { token: u.token, query: { types: "note.*" } });
  const pub = await publishOk(u.room, { type: "task.x", requiresAck: true });
  assert.equal(pub.broadcastCount, 1, "only the matching connection counts");
  assert.equal((await c.next()).attempt, 1);
  c.send({ type: "unsubscribe", data: { types: ["task.*"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["note.*"] } });
  const [qc, qo] = await Promise.all([c.quiet(INTERVAL * 2.5), other.quiet(INTERVAL * 2.5)]);
  assert.ok(qc, "no redelivery of a type the connection no longer wants");
  assert.ok(qo, "nor to a connection that never wanted it");
  const e = await entry(u.room, pub.id);
  assert.deepEqual([e.deliveryStatus, e.attempts], ["pending", 1], "a round with nobody to send to is not a round");
});

test("resuming with since: a pending notification the client saw but did not ack gets its next round", async () => {
  const u = user();
  const c1 = await w.connect(u.room, { token: u.token });
  const pub = await publishOk(u.room, { type: "task.done", requiresAck: true });
  assert.equal((await c1.next()).attempt, 1);
  await c1.close(); // the device drops before acking
  // Let round 1 end with nobody connected: that is the situation under test.
  await new Promise((r) => setTimeout(r, INTERVAL + 200));
  const c2 = await w.connect(u.room, { token: u.token, query: { since: String(pub.seq) } });
  assert.equal(c2.hello.recovered, true);
  const f = await c2.next(INTERVAL + LATE);
  assert.deepEqual([f.id, f.attempt], [pub.id, 2]);
  c2.send({ type: "ack", notificationId: pub.id });
  await roundTrip(c2);
});

test("resuming with since: a pending notification nobody was sent yet is delivered", async () => {
  const u = user();
  // Published while nobody was connected; the client resumes after a later seq (it read
  // history, or a filtered connection skipped this type).
  const pending = await publishOk(u.room, { type: "task.y", requiresAck: true });
  const later = await publishOk(u.room, { type: "note.x" });
  const c = await w.connect(u.room, { token: u.token, query: { since: String(later.seq) } });
  const f = await c.next();
  assert.deepEqual([f.id, f.attempt], [pending.id, 1]);
  c.send({ type: "ack", notificationId: pending.id });
  await roundTrip(c);
});

test("widening a filter delivers the pending notifications it newly matches at once", async () => {
  const u = user();
  const c = await w.connect(u.room, { token: u.token, query: { types: "note.*" } });
  const other = await w.connect(u.room, { token: u.token, query: { types: "task.*" } });
  const queued = await publishOk(u.room, { type: "job.done", requiresAck: true });
  assert.equal(queued.broadcastCount, 0, "nobody wants job.* yet: it waits in the offline queue");
  const running = await publishOk(u.room, { type: "task.done", requiresAck: true });
  assert.equal((await other.next()).attempt, 1);

  // Widening to job.* and task.*: the queued one starts its first round (a new round, so every
  // matching connection gets it); the running one comes to this connection at its current attempt.
  c.send({ type: "subscribe", data: { types: ["job.*", "task.*"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["note.*", "job.*", "task.*"] } });
  const got = [await c.next(), await c.next()];
  assert.deepEqual(
    got.map((f) => [f.id, f.attempt]).sort(),
    [[queued.id, 1], [running.id, 1]].sort(),
  );
  // Acked at once: the room's next round (INTERVAL) would otherwise come into the checks below.
  c.send({ type: "ack", ids: [queued.id, running.id] });
  await roundTrip(c);
  const e = await entry(u.room, queued.id);
  assert.deepEqual([e.deliveryStatus, e.attempts], ["acked", 1], "the queued one counted one round");
  assert.ok(await other.quiet(INTERVAL + 300), "acked: nothing more, and the running round was not re-sent");

  // Narrowing delivers nothing; subscribing to a type the filter already matches delivers nothing.
  const again = await publishOk(u.room, { type: "job.again", requiresAck: true });
  assert.equal(again.broadcastCount, 1);
  assert.equal((await c.next()).id, again.id);
  c.send({ type: "unsubscribe", data: { types: ["job.*"] } });
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["note.*", "task.*"] } });
  c.send({ type: "subscribe", data: { types: ["task.done"] } });
  assert.equal((await c.next()).type, "subscribed");
  c.send({ type: "ack", notificationId: again.id });
  await roundTrip(c);
});
