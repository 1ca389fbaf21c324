// Large rooms (docs/protocol.md "Large rooms"), end to end against workerd: with ROOM_SHARD_SIZE=20 a
// room of a hundred sockets spreads over five Durable Objects and is still one room: keyed health
// lists the sockets of each, every socket gets every notification once and in order, one ack
// clears a notification on every shard, presence and client events span the shards, since, sync
// and batch=1 replays work on a shard, the caps count across shards, a restart on persisted
// storage keeps all of it, and no room id a client or publisher can send reaches a shard.
//
// Sockets are opened one Durable Object's worth at a time (each batch in parallel, the next once it
// is in): a room that grows this way fills its first Durable Object, then one shard after another,
// so socket i sits on Durable Object floor(i / 20). Each test checks that layout in health before
// it relies on it.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import {
  ISO_Z, KEY, assertError, eventually, keyedHealth, refusedUpgrade, roundTrip,
} from "./support/checks.mjs";

const SHARD = 20;
const INTERVAL = 500;
const MAX_ATTEMPTS = 3;
const BINDINGS = {
  ROOM_SHARD_SIZE: String(SHARD),
  ACK_RETRY_INTERVAL_MS: String(INTERVAL),
  ACK_MAX_ATTEMPTS: String(MAX_ATTEMPTS),
  CLIENT_EVENT_TYPES: "typing.*",
};
/** Generous per-frame wait: a hundred sockets on a busy 2-core box. */
const FRAME_MS = 10_000;

let w;
before(async () => { w = await startWorker({ bindings: BINDINGS }); });
after(async () => { await w?.stop(); });

const tok = (sub, room) => tokenFor(sub, { rooms: [room] });
const range = (lo, hi) => Array.from({ length: hi - lo + 1 }, (_, i) => lo + i);
const FULL = Array(5).fill(SHARD);

/**
 * Opens `n` sockets to `room`, SHARD at a time; `spec(i)` gives socket i's `sub` and `query`
 * (i counts from `first`).
 */
async function fill(worker, room, n, spec, first = 0) {
  const out = [];
  for (let i = first; i < first + n; i += SHARD) {
    const batch = range(i, Math.min(first + n, i + SHARD) - 1).map((j) => {
      const { sub, query = {} } = spec(j);
      return worker.connect(room, { token: tok(sub, room), query });
    });
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

/** Closes a test's sockets without waiting and forgets them. */
function drop(worker, clients) {
  for (const c of clients) { c.terminate(); worker.sockets.delete(c); }
}

async function publishOk(worker, room, msg, headers) {
  const r = await worker.publish(room, msg, headers);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** The next `n` frames of a client. */
async function take(c, n, ms = FRAME_MS) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await c.next(ms));
  return out;
}

/** Asserts the room's keyed health: `connections` and the sockets of each Durable Object. */
async function assertShards(worker, room, shards, what = "") {
  const h = await keyedHealth(worker, room);
  assert.deepEqual({ connections: h.connections, shards: h.shards },
    { connections: shards.reduce((a, b) => a + b, 0), shards }, `health of ${room} ${what}`);
  return h;
}

/** Asserts what the contract says of any spread: entries sum to `connections`, none above SHARD. */
async function assertSpread(worker, room, connections, what = "") {
  const h = await keyedHealth(worker, room);
  const ctx = `health of ${room} ${what}: ${JSON.stringify(h)}`;
  assert.equal(h.connections, connections, ctx);
  assert.ok(Array.isArray(h.shards) && h.shards.length > 0, ctx);
  assert.ok(h.shards.every((n) => Number.isInteger(n) && n >= 0 && n <= SHARD), ctx);
  assert.equal(h.shards.reduce((a, b) => a + b, 0), connections, ctx);
  return h;
}

/** The history entry with this id. */
async function entry(worker, room, id) {
  const h = await worker.history(room);
  assert.equal(h.status, 200, JSON.stringify(h.body));
  return h.body.notifications.find((n) => n.id === id);
}

/** Waits for the history entry with `id` to satisfy `pred` (a stored state has no frame to await). */
const entryUntil = (worker, room, id, pred, what) =>
  eventually(async () => { const e = await entry(worker, room, id); return e && pred(e) && e; }, { ms: 10_000, what });

/**
 * What reached each socket beyond what the test took, as [socket index, frames] pairs, for
 * sockets where anything did (a ping's pong is the marker: see nothingMore).
 */
async function extraFrames(clients) {
  const rest = await Promise.all(clients.map((c) => roundTrip(c)));
  return rest.map((frames, i) => [i, frames]).filter(([, frames]) => frames.length > 0);
}

/** Frames a socket was sent, with batches unpacked in order. */
const unpack = (frames) => frames.flatMap((f) => (f.type === "batch" ? f.frames : [f]));

test("keyed health: one entry for a room that never spread; 100 sockets with ROOM_SHARD_SIZE 20 are five of 20; no room id names a shard", async () => {
  const small = roomName("small");
  const few = await fill(w, small, 3, (i) => ({ sub: `s${i}` }));
  await assertShards(w, small, [3]);
  drop(w, few);

  const room = roomName("big");
  const clients = [];
  for (let k = 1; k <= 5; k++) {
    clients.push(...(await fill(w, room, SHARD, (i) => ({ sub: `s${i}` }), clients.length)));
    await assertShards(w, room, Array(k).fill(SHARD), `after ${clients.length} sockets`);
  }
  // Without the key, health says nothing about sockets.
  const open = await w.request("GET", `/rooms/${room}/health`);
  assert.equal(open.status, 200);
  assert.deepEqual(open.body, { ok: true, roomId: room });

  // Five sockets leaving the third Durable Object leave it 15; the room still counts them all.
  await Promise.all(clients.slice(40, 45).map((c) => c.close()));
  const after = await eventually(async () => {
    const h = await keyedHealth(w, room);
    return h.connections === 95 && h;
  }, { what: "connections down to 95" });
  assert.deepEqual([...after.shards].sort((a, b) => a - b), [15, 20, 20, 20, 20], JSON.stringify(after));
  // New sockets go wherever there is room, never over ROOM_SHARD_SIZE.
  clients.push(...(await fill(w, room, 10, (i) => ({ sub: `n${i}` }))));
  await assertSpread(w, room, 105, "after 10 more");

  // No room id a client or publisher can send names a shard (`#` is not allowed in a room id;
  // unencoded it is a URL fragment and never sent).
  const shard = `${room}%231`;
  assertError(await w.publish(shard, { type: "x.y" }), 400, "invalid_room_id", "publish to a shard");
  assertError(await w.request("GET", `/rooms/${shard}/health`, { headers: KEY }), 400, "invalid_room_id", "health of a shard");
  assertError(await w.history(shard), 400, "invalid_room_id", "history of a shard");
  const refused = await refusedUpgrade(w, shard, { token: tokenFor("s1", { rooms: ["*"] }) });
  assertError(refused, 400, "invalid_room_id", "subscribe to a shard");
  await assertSpread(w, room, 105, "after the attempts");
  assert.equal((await keyedHealth(w, room)).lastSeq, 0, "nothing was published");
  drop(w, clients);
});

test("every socket on every shard gets every notification once, in seq order; broadcastCount counts matching sockets on all shards", async () => {
  const room = roomName("fan");
  // Two sockets per Durable Object take only note.*.
  const filtered = (i) => i % 10 === 3;
  const clients = await fill(w, room, 100, (i) => ({ sub: `s${i}`, query: filtered(i) ? { types: "note.*" } : {} }));
  await assertShards(w, room, FULL);

  const messages = range(0, 19).map((i) => ({ type: i % 2 ? "task.done" : "note.created", data: { i } }));
  const answers = [];
  // Four rounds of five concurrent publishes.
  for (let i = 0; i < messages.length; i += 5) {
    answers.push(...(await Promise.all(messages.slice(i, i + 5).map((m) => publishOk(w, room, m)))));
  }
  const bySeq = new Map(answers.map((a, i) => [a.seq, { ...a, msg: messages[i] }]));
  assert.deepEqual([...bySeq.keys()].sort((a, b) => a - b), range(1, 20), "twenty publishes take seqs 1..20");
  for (const [seq, a] of bySeq) {
    const note = a.msg.type.startsWith("note.");
    assert.equal(a.broadcastCount, note ? 100 : 90, `seq ${seq} (${a.msg.type}) broadcastCount`);
  }
  const noteSeqs = range(1, 20).filter((s) => bySeq.get(s).msg.type.startsWith("note."));

  await Promise.all(clients.map(async (c, i) => {
    const want = filtered(i) ? noteSeqs : range(1, 20);
    const got = await take(c, want.length);
    assert.deepEqual(got.map((f) => f.seq), want,
      `socket ${i} (Durable Object ${Math.floor(i / SHARD)}); frames without a seq: ${JSON.stringify(got.filter((f) => f.seq === undefined))}`);
    for (const f of got) {
      const a = bySeq.get(f.seq);
      assert.deepEqual([f.id, f.type, f.data, f.attempt], [a.id, a.msg.type, a.msg.data, 1], `socket ${i} seq ${f.seq}`);
    }
  }));
  assert.deepEqual(await extraFrames(clients), [], "sockets with a frame too many");

  // A retried publish (same Idempotency-Key) answers the first result and reaches no shard again.
  const keyed = await publishOk(w, room, { type: "note.keyed" }, { "idempotency-key": "k-once" });
  assert.equal(keyed.broadcastCount, 100);
  const again = await publishOk(w, room, { type: "note.keyed" }, { "idempotency-key": "k-once" });
  assert.deepEqual(again, { ...keyed, duplicate: true });
  await Promise.all(clients.map(async (c, i) => assert.equal((await c.next()).seq, keyed.seq, `socket ${i}`)));

  // A socket on the fourth Durable Object narrows its filter: broadcastCount follows.
  const narrowed = clients[77];
  narrowed.send({ type: "subscribe", data: { types: ["task.*"] } });
  assert.deepEqual(await narrowed.next(), { type: "subscribed", data: { types: ["task.*"] } });
  const note = await publishOk(w, room, { type: "note.after" });
  assert.equal(note.broadcastCount, 99);
  // An ephemeral publish reaches every shard too, without a seq.
  const flash = await publishOk(w, room, { type: "note.flash", data: { pct: 50 }, ephemeral: true });
  assert.equal(flash.broadcastCount, 99);
  await Promise.all(clients.map(async (c, i) => {
    if (c === narrowed) return;
    // The contract orders notifications by seq; an ephemeral frame has none, so either order.
    const two = await take(c, 2);
    const f = two.find((x) => x.ephemeral);
    assert.deepEqual(two.filter((x) => x !== f).map((x) => x.seq), [note.seq], `socket ${i}: ${JSON.stringify(two)}`);
    assert.deepEqual([f.id, f.data, "seq" in f], [flash.id, { pct: 50 }, false], `socket ${i}: ${JSON.stringify(f)}`);
  }));
  assert.deepEqual(await extraFrames(clients), [], "sockets with a frame too many (the narrowed one included)");
  drop(w, clients);
});

test("a pending notification is redelivered on every shard; an ack from the last shard stops it everywhere and history says who", async () => {
  const room = roomName("ack");
  const clients = await fill(w, room, 100, (i) => ({ sub: `a${i}` }));
  await assertShards(w, room, FULL);
  const last = clients[99];

  const a = await publishOk(w, room, { type: "task.done", data: { n: 1 }, requiresAck: true });
  assert.equal(a.broadcastCount, 100);
  const check = (f, i, attempt) => assert.deepEqual([f.id, f.seq, f.requiresAck, f.attempt], [a.id, a.seq, true, attempt],
    `socket ${i}: ${JSON.stringify(f)}`);
  await Promise.all(clients.map(async (c, i) => check(await c.next(), i, 1)));
  // A round later every socket gets attempt 2; the socket on the last shard acks its copy at once.
  await Promise.all(clients.map(async (c, i) => {
    const f = await c.next(INTERVAL + FRAME_MS);
    check(f, i, 2);
    if (c === last) c.send({ type: "ack", notificationId: a.id });
  }));
  const acked = await entryUntil(w, room, a.id, (e) => e.deliveryStatus === "acked", "the ack recorded");
  assert.deepEqual([acked.ackedBy, acked.attempts], ["a99", 2], "acked by the last shard's socket before round 3");
  assert.match(acked.ackedAt, ISO_Z);
  assert.equal((await keyedHealth(w, room)).pendingAcks, 0);

  // The marker: B's second round comes a round after A's third would have. Between them every
  // socket gets B's first copy and nothing of A.
  const b = await publishOk(w, room, { type: "task.marker", requiresAck: true });
  await Promise.all(clients.map(async (c, i) => {
    const f = await c.until((f) => f.id === b.id && f.attempt === 2, INTERVAL + FRAME_MS);
    assert.deepEqual(f.skipped.map((s) => [s.id, s.attempt]), [[b.id, 1]], `socket ${i}`);
  }));
  clients[0].send({ type: "ack", notificationId: b.id });
  await entryUntil(w, room, b.id, (e) => e.deliveryStatus === "acked", "B acked");
  // Anything still on its way is a copy of B (its round 3 may have raced the ack), never of A.
  await Promise.all(clients.map(async (c, i) => {
    const rest = await roundTrip(c);
    assert.deepEqual(rest.filter((f) => f.id !== b.id), [], `socket ${i}`);
  }));
  const end = await entry(w, room, a.id);
  assert.deepEqual([end.deliveryStatus, end.ackedBy, end.attempts], ["acked", "a99", 2]);

  // The offline queue on a new shard: a newcomer (the 101st socket) without since gets the one
  // pending notification (not A or B, acked), and its ack clears it for the whole room.
  const c = await publishOk(w, room, { type: "task.third", requiresAck: true });
  await Promise.all(clients.map(async (x) => assert.equal((await x.next()).id, c.id)));
  const newcomer = await w.connect(room, { token: tok("newcomer", room) });
  await assertSpread(w, room, 101);
  const queued = await newcomer.next();
  assert.deepEqual([queued.id, queued.seq, queued.requiresAck], [c.id, c.seq, true], JSON.stringify(queued));
  newcomer.send({ type: "ack", notificationId: c.id });
  const third = await entryUntil(w, room, c.id, (e) => e.deliveryStatus === "acked", "the newcomer's ack recorded");
  assert.equal(third.ackedBy, "newcomer");
  assert.deepEqual((await roundTrip(newcomer)).filter((f) => f.id !== c.id), [], "nothing but copies of C");
  drop(w, [...clients, newcomer]);
});

/** Asserts a presence frame's type, user and (when given) state. */
function assertPresence(f, type, userId, state) {
  assert.deepEqual([f.type, f.userId], [type, userId], JSON.stringify(f));
  if (state !== undefined) assert.deepEqual(f.state, state, JSON.stringify(f));
  assert.match(f.timestamp, ISO_Z);
}

test("presence is the room's: a user on two shards is one user; joined, updated and left reach watchers on every shard once", async () => {
  const room = roomName("pres");
  const watch = (sub) => w.connect(room, { token: tok(sub, room), query: { presence: "1" } });
  const plain = (sub) => w.connect(room, { token: tok(sub, room) });
  const watchers = [];
  const expected = new Map(); // watcher -> users whose arrival it must hear of
  const others = [];
  let users = 0;
  // Durable Object k: watcher wk first (alone, so it hears of everyone after it), then the rest.
  for (let k = 0; k < 5; k++) {
    const wk = await watch(`w${k}`);
    users++;
    assert.equal(wk.hello.presence.count, users, `w${k} is told of every user on every shard`);
    for (const o of watchers) expected.get(o).push(`w${k}`);
    watchers.push(wk);
    expected.set(wk, []);
    const subs = range(0, k === 4 ? 17 : 18).map((j) => `f${k}_${String(j).padStart(2, "0")}`);
    if (k === 0) subs[18] = "dup"; // the user's first socket sits on the coordinator
    others.push(...(await Promise.all(subs.map(plain))));
    users += subs.length;
    for (const o of watchers) expected.get(o).push(...subs);
  }
  // Every watcher hears of every later user exactly once, whichever Durable Object they came to.
  await Promise.all(watchers.map(async (c, k) => {
    const want = expected.get(c);
    const got = await take(c, want.length);
    for (const f of got) assertPresence(f, "presence.joined", f.userId, {});
    assert.deepEqual(got.map((f) => f.userId).sort(), [...want].sort(), `w${k}`);
  }));

  const dup1 = others[18];
  // dup's second socket is the 100th: it lands on the last shard and is not a join.
  const dup2 = await plain("dup");
  await assertShards(w, room, FULL);
  dup2.send({ type: "presence.set", data: { here: true } });
  await Promise.all(watchers.map(async (c, k) => {
    assertPresence(await c.next(), "presence.updated", "dup", { here: true });
  }));
  const listed = await w.request("GET", `/rooms/${room}/presence`, { headers: KEY });
  assert.equal(listed.status, 200, JSON.stringify(listed.body));
  assert.equal(listed.body.count, users);
  assert.equal(listed.body.users.length, users);
  const dupEntry = listed.body.users.find((u) => u.userId === "dup");
  assert.deepEqual([dupEntry.connections, dupEntry.state], [2, { here: true }], JSON.stringify(dupEntry));

  // A new user on a new shard: every watcher hears of it once; its connected frame lists the room.
  const newbie = await watch("newbie");
  await assertSpread(w, room, 101);
  assert.equal(newbie.hello.presence.count, users + 1);
  assert.deepEqual(newbie.hello.presence.users.find((u) => u.userId === "dup")?.connections, 2);
  await Promise.all(watchers.map(async (c) => assertPresence(await c.next(), "presence.joined", "newbie", {})));

  // dup's first socket leaving is not a leave; the marker is newbie's presence.set.
  await dup1.close();
  await eventually(async () => {
    const p = await w.request("GET", `/rooms/${room}/presence`, { headers: KEY });
    return p.body.users.find((u) => u.userId === "dup")?.connections === 1;
  }, { what: "dup down to one connection" });
  newbie.send({ type: "presence.set", data: { n: 1 } });
  await Promise.all([...watchers, newbie].map(async (c) => assertPresence(await c.next(), "presence.updated", "newbie", { n: 1 })));

  // Its last socket leaving is: once, to every watcher.
  await dup2.close();
  await Promise.all([...watchers, newbie].map(async (c) => assertPresence(await c.next(), "presence.left", "dup")));
  newbie.send({ type: "presence.set", data: { n: 2 } });
  await Promise.all([...watchers, newbie].map(async (c) => assertPresence(await c.next(), "presence.updated", "newbie", { n: 2 })));
  const end = await w.request("GET", `/rooms/${room}/presence`, { headers: KEY });
  assert.equal(end.body.count, users);
  assert.equal(end.body.users.some((u) => u.userId === "dup"), false);
  drop(w, [...watchers, ...others, dup2, newbie]);
});

test("a client event from one shard reaches every other socket of the room on every shard, stamped with the sender's sub", async () => {
  const room = roomName("ev");
  // "twin" has a socket on the coordinator (5) and one on the last shard (85); two sockets per
  // Durable Object take only note.*, which does not match typing.*.
  const sub = (i) => (i === 5 || i === 85 ? "twin" : `e${i}`);
  const narrow = (i) => i % 10 === 7;
  const clients = await fill(w, room, 100, (i) => ({ sub: sub(i), query: narrow(i) ? { types: "note.*" } : {} }));
  await assertShards(w, room, FULL);

  const emitAndCheck = async (from, frame, event, data, userId) => {
    clients[from].send(frame);
    const receivers = range(0, 99).filter((i) => i !== from && !narrow(i));
    await Promise.all(receivers.map(async (i) => {
      const f = await clients[i].next();
      assert.deepEqual(Object.keys(f).sort(), ["data", "event", "timestamp", "type", "userId"], JSON.stringify(f));
      assert.deepEqual([f.type, f.event, f.data, f.userId], ["event", event, data, userId], `socket ${i}`);
      assert.match(f.timestamp, ISO_Z);
    }));
    // Every Durable Object has sent it to its sockets by now, so a ping's pong is a marker for
    // the sender and the narrowed sockets.
    const silent = [from, ...range(0, 99).filter(narrow)];
    await Promise.all(silent.map(async (i) => assert.deepEqual(await roundTrip(clients[i]), [], `socket ${i} gets nothing`)));
  };
  // From the middle shard; the sender's other device (on the coordinator) gets it.
  await emitAndCheck(50, { type: "emit", event: "typing.start", data: { field: "title" } }, "typing.start", { field: "title" }, "e50");
  // From the last shard, claiming to be someone else: stamped with its own sub.
  await emitAndCheck(85, { type: "emit", event: "typing.stop", userId: "mallory", sub: "mallory" }, "typing.stop", {}, "twin");
  // From the coordinator.
  await emitAndCheck(0, { type: "emit", event: "typing.start", data: { n: 0 } }, "typing.start", { n: 0 }, "e0");
  drop(w, clients);
});

test("since on a shard replays exactly the missing seqs then live ones; sync from a shard socket replays then says synced", async () => {
  const room = roomName("since");
  const clients = await fill(w, room, 100, (i) => ({ sub: `s${i}` }));
  await assertShards(w, room, FULL);
  const delivered = async (seqs, who = clients) => {
    await Promise.all(who.map(async (c, i) => {
      assert.deepEqual((await take(c, seqs.length)).map((f) => f.seq), seqs, `socket ${i}`);
    }));
  };
  for (let i = 1; i <= 5; i++) assert.equal((await publishOk(w, room, { type: "s.x", data: { i } })).seq, i);
  await delivered(range(1, 5));

  // The room is full at its level: a newcomer resuming after seq 2 lands on a new shard, while
  // three publishes are in flight.
  const inflight = Promise.all(range(6, 8).map((i) => publishOk(w, room, { type: "s.x", data: { i } })));
  const late = await w.connect(room, { token: tok("late", room), query: { since: "2" } });
  assert.equal(late.hello.recovered, true);
  await inflight;
  assert.deepEqual((await take(late, 6)).map((f) => f.seq), range(3, 8), "exactly 3..8, once each, in order");
  assert.deepEqual(await roundTrip(late), [], "nothing more");
  await delivered(range(6, 8));
  await assertSpread(w, room, 101);
  const live = await publishOk(w, room, { type: "s.x", data: { i: 9 } });
  assert.equal(live.broadcastCount, 101);
  assert.equal((await late.next()).seq, 9);
  await delivered([9]);

  // A socket of the third Durable Object leaves and comes back with since = its last seq.
  const away = clients[45];
  await away.close();
  const rest = clients.filter((c) => c !== away);
  await eventually(async () => (await keyedHealth(w, room)).connections === 100, { what: "the close counted" });
  for (const i of [10, 11]) assert.equal((await publishOk(w, room, { type: "s.x", data: { i } })).broadcastCount, 100);
  await delivered([10, 11], [...rest, late]);
  const back = await w.connect(room, { token: tok("s45", room), query: { since: "9" } });
  assert.deepEqual([back.hello.recovered, back.hello.lastSeq], [true, 11]);
  assert.deepEqual((await take(back, 2)).map((f) => f.seq), [10, 11]);
  assert.deepEqual(await roundTrip(back), [], "nothing more");
  await assertSpread(w, room, 101);

  // sync from a socket on the last shard (and from the newcomer's shard).
  for (const c of [clients[99], late]) {
    c.send({ type: "sync", since: 4 });
    const { skipped, ...synced } = await c.until((f) => f.type === "synced");
    assert.deepEqual(skipped.map((f) => f.seq), range(5, 11));
    assert.deepEqual(synced, { type: "synced", lastSeq: 11, recovered: true });
    assert.deepEqual(await roundTrip(c), [], "nothing more");
  }
  drop(w, [...rest, late, back]);
});

test("MAX_CONNECTIONS_PER_USER and MAX_CONNECTIONS_PER_ROOM count sockets on every shard", async () => {
  const capped = await startWorker({
    bindings: { ROOM_SHARD_SIZE: String(SHARD), MAX_CONNECTIONS_PER_USER: "2", MAX_CONNECTIONS_PER_ROOM: "50" },
  });
  try {
    const room = roomName("caps");
    const token = tok("cap", room);
    const first = await capped.connect(room, { token });
    const fillers = await fill(capped, room, SHARD - 1, (i) => ({ sub: `f${i}` }), 1);
    const second = await capped.connect(room, { token });
    await assertShards(capped, room, [SHARD, 1], "the user's sockets on two Durable Objects");
    const userFull = await refusedUpgrade(capped, room, { token });
    assertError(userFull, 429, "too_many_connections", "a third socket of one sub");
    assert.match(userFull.headers.get("retry-after") ?? "", /^\d+$/);
    // The probe without Upgrade says the same.
    assertError(await capped.request("GET", `/rooms/${room}/subscribe?token=${token}`), 429, "too_many_connections");

    // 21 sockets so far; 29 more make 50 over three Durable Objects.
    fillers.push(...(await fill(capped, room, 29, (i) => ({ sub: `f${i}` }), SHARD)));
    await assertShards(capped, room, [SHARD, SHARD, 10]);
    const roomFull = await refusedUpgrade(capped, room, { token: tok("one-too-many", room) });
    assertError(roomFull, 429, "room_full", "the 51st socket");
    assert.match(roomFull.headers.get("retry-after") ?? "", /^\d+$/);

    // A socket leaving a shard frees a place in the room; the user's socket leaving the
    // coordinator frees one of theirs.
    await fillers.at(-1).close();
    await first.close();
    await eventually(async () => (await keyedHealth(capped, room)).connections === 48, { what: "two closes counted" });
    const again = await capped.connect(room, { token });
    const fiftieth = await capped.connect(room, { token: tok("one-more", room) });
    await assertSpread(capped, room, 50);
    assertError(await refusedUpgrade(capped, room, { token: tok("late", room) }), 429, "room_full");
    drop(capped, [second, again, fiftieth, ...fillers]);
  } finally {
    await capped.stop();
  }
});

test("batch=1 on a shard: a replay with since=0 comes as a batch in order, each frame as it would come alone", async () => {
  const room = roomName("batch");
  const clients = await fill(w, room, 2 * SHARD, (i) => ({ sub: `s${i}` }));
  await assertShards(w, room, [SHARD, SHARD]);
  const seqs = [];
  for (let i = 0; i < 6; i++) seqs.push((await publishOk(w, room, { type: "burst", data: { i } })).seq);
  assert.deepEqual(seqs, range(1, 6));
  await Promise.all(clients.map((c) => take(c, 6)));

  // Both Durable Objects are full: these land on a third.
  const batched = await Promise.all(range(0, 2).map((i) =>
    w.connect(room, { token: tok(`b${i}`, room), query: { since: "0", batch: "1" } })));
  const plain = await w.connect(room, { token: tok("p", room), query: { since: "0" } });
  await assertShards(w, room, [SHARD, SHARD, 4]);
  const alone = await take(plain, 6);
  assert.deepEqual(alone.map((f) => f.seq), seqs, "without batch=1: each frame alone");
  for (const c of batched) {
    assert.equal(c.hello.type, "connected", `connected comes alone, before the replay: ${JSON.stringify(c.hello)}`);
    const batch = await c.next();
    assert.equal(batch.type, "batch", JSON.stringify(batch));
    assert.deepEqual(batch.frames, alone, "the batch holds the replay in order, each frame exactly as sent alone");
    assert.deepEqual(await roundTrip(c), [], "nothing more");
  }

  // A burst of concurrent publishes: whatever is batched unpacks to the same frames in order.
  const burst = await Promise.all(range(0, 9).map((i) => publishOk(w, room, { type: "burst", data: { i: 6 + i } })));
  assert.deepEqual(burst.map((a) => a.seq).sort((a, b) => a - b), range(7, 16));
  const plainBurst = await take(plain, 10);
  assert.deepEqual(plainBurst.map((f) => f.seq), range(7, 16));
  assert.ok(plainBurst.every((f) => f.type === "burst"), "without batch=1 never a batch");
  for (const c of batched) {
    const got = [];
    while (got.length < 10) got.push(...unpack([await c.next()]));
    assert.deepEqual(got, plainBurst);
    assert.deepEqual(await roundTrip(c), [], "nothing more");
  }
  drop(w, [...clients, ...batched, plain]);
});

test("a restart on persisted storage: 60 sockets over three Durable Objects resume with since and get exactly what they missed", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-shards-"));
  const room = roomName("restart");
  const bindings = { ROOM_SHARD_SIZE: String(SHARD) };
  try {
    const subs = range(0, 59).map((i) => `r${i}`);
    const lastSeen = new Map();
    const first = await startWorker({ persist: dir, bindings });
    try {
      const clients = await fill(first, room, 60, (i) => ({ sub: subs[i] }));
      await assertShards(first, room, [SHARD, SHARD, SHARD]);
      for (let i = 1; i <= 3; i++) assert.equal((await publishOk(first, room, { type: "r.x", data: { i } })).broadcastCount, 60);
      await Promise.all(clients.map(async (c, i) => {
        assert.deepEqual((await take(c, 3)).map((f) => f.seq), [1, 2, 3]);
        lastSeen.set(subs[i], 3);
      }));
      // The second Durable Object's sockets leave; two more publishes reach the other forty.
      await Promise.all(clients.slice(SHARD, 2 * SHARD).map((c) => c.close()));
      await eventually(async () => (await keyedHealth(first, room)).connections === 40, { what: "20 closes counted" });
      for (let i = 4; i <= 5; i++) assert.equal((await publishOk(first, room, { type: "r.x", data: { i } })).broadcastCount, 40);
      await Promise.all(clients.map(async (c, i) => {
        if (i >= SHARD && i < 2 * SHARD) return;
        assert.deepEqual((await take(c, 2)).map((f) => f.seq), [4, 5]);
        lastSeen.set(subs[i], 5);
      }));
    } finally {
      await first.stop();
    }

    const second = await startWorker({ persist: dir, bindings });
    try {
      // Published while nobody is connected.
      const six = await publishOk(second, room, { type: "r.x", data: { i: 6 } });
      assert.deepEqual([six.seq, six.broadcastCount], [6, 0]);
      const clients = await fill(second, room, 60, (i) => ({ sub: subs[i], query: { since: String(lastSeen.get(subs[i])) } }));
      await Promise.all(clients.map(async (c, i) => {
        const since = lastSeen.get(subs[i]);
        assert.deepEqual([c.hello.recovered, c.hello.lastSeq], [true, 6], `socket ${i}`);
        assert.deepEqual((await take(c, 6 - since)).map((f) => f.seq), range(since + 1, 6), `socket ${i} resuming after ${since}`);
      }));
      const seven = await publishOk(second, room, { type: "r.x", data: { i: 7 } });
      assert.deepEqual([seven.seq, seven.broadcastCount], [7, 60]);
      await Promise.all(clients.map(async (c, i) => { const f = await c.next(); assert.equal(f.seq, 7, `socket ${i}: ${JSON.stringify(f)}`); }));
      assert.deepEqual(await extraFrames(clients), [], "sockets with a frame too many");
      await assertSpread(second, room, 60, "after the restart");
      const h = await second.history(room);
      assert.deepEqual(h.body.notifications.map((n) => n.seq), range(1, 7));
    } finally {
      await second.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("connect storms onto shards while publishes flow: each socket gets its own connected first, then since+1.. once each, in order", async () => {
  const room = roomName("storm");
  const first = await fill(w, room, SHARD, (i) => ({ sub: `s${i}` }));
  let stop = false;
  let lastSeq = 0;
  const publishers = [0, 1].map(async (k) => {
    for (let i = 0; !stop; i++) lastSeq = Math.max(lastSeq, (await publishOk(w, room, { type: "storm.x", data: { k, i } })).seq);
  });
  const storms = [];
  try {
    await eventually(() => lastSeq >= 5, { what: "publishes flowing" });
    // Three bursts of a Durable Object's worth each, resuming a little behind; half with batch=1.
    for (let round = 0; round < 3; round++) {
      const since = lastSeq - 3;
      const burst = await Promise.all(range(0, SHARD - 1).map((j) => w.connect(room, {
        token: tok(`r${round}_${j}`, room),
        query: { since: String(since), ...(j % 2 ? { batch: "1" } : {}) },
      })));
      storms.push(...burst.map((c) => ({ c, since })));
      await eventually(() => lastSeq >= since + 10, { what: "more publishes" });
    }
  } finally {
    stop = true;
    await Promise.all(publishers);
  }
  await assertSpread(w, room, SHARD * 4);
  const ids = new Set();
  await Promise.all(storms.map(async ({ c, since }, i) => {
    assert.equal(c.hello.type, "connected", `storm socket ${i}: its first frame is its connected: ${JSON.stringify(c.hello)}`);
    assert.equal(c.hello.recovered, true);
    ids.add(c.hello.connectionId);
    const seqs = [];
    while (seqs.length < lastSeq - since) {
      for (const f of unpack([await c.next()])) {
        assert.equal(typeof f.seq, "number", `storm socket ${i} (since ${since}) after ${seqs.at(-1)}: ${JSON.stringify(f)}`);
        seqs.push(f.seq);
      }
    }
    assert.deepEqual(seqs, range(since + 1, lastSeq), `storm socket ${i} (since ${since})`);
    assert.deepEqual(await roundTrip(c), [], `storm socket ${i}: nothing more`);
  }));
  assert.equal(ids.size, storms.length, "every socket has its own connectionId");
  drop(w, [...first, ...storms.map((s) => s.c)]);
});
