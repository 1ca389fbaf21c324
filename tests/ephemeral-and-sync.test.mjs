// Ephemeral publishes and in-band sync (docs/protocol.md "Publishing" and the `sync`/`synced` frames), end
// to end against workerd. An ephemeral publish reaches the sockets connected now and nothing else:
// no seq, no history, no replay, no redelivery, no counter. `sync` replays what a reconnect with
// `since` (and the same filter) would, then says `synced`.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, assertError, roundTrip, keyedHealth } from "./support/checks.mjs";

const INTERVAL = 300;
let w;
let small;
before(async () => {
  [w, small] = await Promise.all([
    startWorker({ bindings: { ACK_RETRY_INTERVAL_MS: String(INTERVAL), ACK_MAX_ATTEMPTS: "3" } }),
    startWorker({ bindings: { HISTORY_LIMIT: "5" } }),
  ]);
});
after(async () => { await Promise.all([w?.stop(), small?.stop()]); });

function user(worker = w, query = {}) {
  const sub = roomName("u");
  const room = `user_${sub}`;
  return { sub, room, connect: (q = query) => worker.connect(room, { token: tokenFor(sub), query: q }) };
}

async function publishOk(worker, room, msg, headers) {
  const r = await worker.publish(room, msg, headers);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Asserts an ephemeral publish's answer. */
function assertEphemeralAnswer(body, count) {
  assert.deepEqual(Object.keys(body).sort(), ["broadcastCount", "ephemeral", "id", "success"], JSON.stringify(body));
  assert.deepEqual([body.success, body.broadcastCount, body.ephemeral], [true, count, true], JSON.stringify(body));
  assert.ok(typeof body.id === "string" && body.id.length > 0);
}

/** The next `n` frames. */
async function take(c, n) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await c.next());
  return out;
}

/** Frames until `synced` (returned last), none skipped. */
async function syncFrames(c, since) {
  c.send({ type: "sync", since });
  const { skipped, ...synced } = await c.until((f) => f.type === "synced");
  return [...skipped, synced];
}

const notifOf = (f) => ({ id: f.id, seq: f.seq, type: f.type, data: f.data, attempt: f.attempt });

test("an ephemeral publish is sent now without seq or attempt, marked ephemeral; the answer says so", async () => {
  const u = user();
  const c = await u.connect();
  const r = await publishOk(w, u.room, {
    type: "job.progress", data: { pct: 10 }, status: "pending", requestId: "req-1", ephemeral: true,
  });
  assertEphemeralAnswer(r, 1);
  const f = await c.next();
  assert.deepEqual(Object.keys(f).sort(), ["data", "ephemeral", "id", "requestId", "requiresAck", "status", "timestamp", "type"]);
  assert.deepEqual({ ...f, timestamp: undefined }, {
    id: r.id, type: "job.progress", data: { pct: 10 }, status: "pending", requestId: "req-1",
    requiresAck: false, ephemeral: true, timestamp: undefined,
  });
  assert.match(f.timestamp, ISO_Z);

  // A chosen id is kept; ephemeral:false is an ordinary publish.
  const named = await publishOk(w, u.room, { type: "job.progress", id: "progress-20", ephemeral: true });
  assertEphemeralAnswer(named, 1);
  assert.equal(named.id, "progress-20");
  assert.deepEqual([(await c.next()).id], ["progress-20"]);
  const stored = await publishOk(w, u.room, { type: "job.done", ephemeral: false });
  assert.deepEqual([stored.seq, stored.duplicate], [1, false]);
  assert.equal((await c.next()).seq, 1);

  // Refused: with requiresAck, or a non-boolean; nothing is sent.
  const withAck = await w.publish(u.room, { type: "job.progress", ephemeral: true, requiresAck: true });
  assertError(withAck, 400, "invalid_body", "ephemeral + requiresAck");
  assertError(await w.publish(u.room, { type: "job.progress", ephemeral: "yes" }), 400, "invalid_body", "ephemeral: yes");
  assert.deepEqual(await roundTrip(c), [], "refused publishes send nothing");
  // Nobody connected: answered with a count of 0.
  const empty = user();
  assertEphemeralAnswer(await publishOk(w, empty.room, { type: "job.progress", ephemeral: true }), 0);
  c.terminate();
});

test("an ephemeral publish is never in history, never replayed (since, sync, offline queue) and changes no counter", async () => {
  const u = user();
  const c = await u.connect();
  const s1 = await publishOk(w, u.room, { type: "job.step", data: { n: 1 } });
  await c.next();
  const before = await keyedHealth(w, u.room);
  const e = await publishOk(w, u.room, { type: "job.step", data: { n: "e" }, ephemeral: true });
  assertEphemeralAnswer(e, 1);
  assert.equal((await c.next()).id, e.id);
  const afterE = await keyedHealth(w, u.room);
  for (const k of ["lastSeq", "publishes", "deliveries", "pendingAcks", "failedAcks", "lastBroadcastAt"]) {
    assert.deepEqual(afterE[k], before[k], `${k} changed`);
  }
  const s2 = await publishOk(w, u.room, { type: "job.step", data: { n: 2 } });
  assert.equal(s2.seq, s1.seq + 1, "the ephemeral publish took no seq");
  await c.next();

  const h = await w.history(u.room);
  assert.deepEqual(h.body.notifications.map((n) => n.id), [s1.id, s2.id]);
  assert.equal(h.body.lastSeq, 2);
  const resumed = await u.connect({ since: "0" });
  assert.deepEqual((await take(resumed, 2)).map((f) => f.id), [s1.id, s2.id]);
  assert.deepEqual(await roundTrip(resumed), [], "no ephemeral in the replay");
  const synced = await syncFrames(c, 0);
  assert.deepEqual(synced.map((f) => f.id ?? f.type), [s1.id, s2.id, "synced"]);
  const fresh = await u.connect();
  assert.deepEqual(await roundTrip(fresh), [], "a new connection gets no ephemeral publish");
  for (const x of [c, resumed, fresh]) x.terminate();
});

test("an ephemeral publish is never redelivered: retry rounds resend only the pending notification", async () => {
  const u = user();
  const c = await u.connect();
  const p = await publishOk(w, u.room, { type: "job.done", requiresAck: true });
  const e = await publishOk(w, u.room, { type: "job.progress", ephemeral: true });
  assert.deepEqual((await take(c, 2)).map((f) => [f.id, f.attempt]), [[p.id, 1], [e.id, undefined]]);
  // Rounds 2 and 3, then the notification fails: nothing else arrives in between.
  assert.deepEqual((await take(c, 2)).map((f) => [f.id, f.attempt]), [[p.id, 2], [p.id, 3]]);
  // A connection joining now gets the offline queue (the pending one, until its last round
  // ends) and never the ephemeral one.
  const late = await u.connect();
  assert.deepEqual((await roundTrip(late)).filter((f) => f.id !== p.id), [], "only the pending notification is queued");
  c.terminate();
  late.terminate();
});

test("type filters apply to ephemeral publishes", async () => {
  const u = user();
  const narrow = await u.connect({ types: "note.*" });
  const all = await u.connect();
  const job = await publishOk(w, u.room, { type: "job.progress", ephemeral: true });
  assertEphemeralAnswer(job, 1);
  assert.equal((await all.next()).id, job.id);
  assert.deepEqual(await roundTrip(narrow), [], "job.progress does not match note.*");
  const note = await publishOk(w, u.room, { type: "note.progress", ephemeral: true });
  assertEphemeralAnswer(note, 2);
  assert.equal((await all.next()).id, note.id);
  assert.equal((await narrow.next()).id, note.id);
  narrow.terminate();
  all.terminate();
});

test("Idempotency-Key is ignored on an ephemeral publish: two publishes with one key are both delivered", async () => {
  const u = user();
  const c = await u.connect();
  const key = { "idempotency-key": "progress-key" };
  const one = await publishOk(w, u.room, { type: "job.progress", data: { pct: 10 }, ephemeral: true }, key);
  const two = await publishOk(w, u.room, { type: "job.progress", data: { pct: 20 }, ephemeral: true }, key);
  assertEphemeralAnswer(one, 1);
  assertEphemeralAnswer(two, 1);
  assert.deepEqual((await take(c, 2)).map((f) => f.data.pct), [10, 20]);
  // Nothing was kept under the key: a stored publish with it is the first of its kind.
  const stored = await publishOk(w, u.room, { type: "job.done" }, key);
  assert.deepEqual([stored.seq, stored.duplicate], [1, false]);
  assert.equal((await c.next()).seq, 1);
  c.terminate();
});

test("an ephemeral publish is allowed as the message of POST /broadcast (userId and userIds)", async () => {
  const a = user();
  const b = user();
  const rid = roomName("r");
  const ca = await a.connect();
  const cb = await b.connect();
  const cr = await w.connect(`request_${rid}`, { token: tokenFor(a.sub, { rooms: [`request_${rid}`] }) });
  const r = await w.request("POST", "/broadcast", {
    headers: KEY, body: { userId: a.sub, requestId: rid, message: { type: "job.progress", data: { pct: 50 }, ephemeral: true } },
  });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body).sort(), ["rooms", "success"]);
  const rooms = r.body.rooms;
  assert.deepEqual(Object.keys(rooms).sort(), [a.room, `request_${rid}`].sort());
  for (const one of Object.values(rooms)) assertEphemeralAnswer(one, 1);
  assert.equal(rooms[a.room].id, rooms[`request_${rid}`].id);
  for (const c of [ca, cr]) {
    const f = await c.next();
    assert.deepEqual([f.id, f.ephemeral, f.requestId, "seq" in f], [rooms[a.room].id, true, rid, false]);
  }
  const many = await w.request("POST", "/broadcast", {
    headers: KEY, body: { userIds: [a.sub, b.sub], message: { type: "job.progress", ephemeral: true } },
  });
  assert.equal(many.status, 200, JSON.stringify(many.body));
  for (const room of [a.room, b.room]) assertEphemeralAnswer(many.body.rooms[room], 1);
  for (const c of [ca, cb]) assert.equal((await c.next()).id, many.body.rooms[a.room].id);
  assert.equal((await w.history(a.room)).body.lastSeq, 0);
  for (const c of [ca, cb, cr]) c.terminate();
});

test("sync replays exactly what a reconnect with since would (filters too), then synced", async () => {
  const u = user();
  const c = await u.connect();
  const narrow = await u.connect({ types: "note.*" });
  const types = ["note.a", "task.b", "note.c", "note.d", "task.e"];
  for (const [i, type] of types.entries()) await publishOk(w, u.room, { type, data: { i } });
  await take(c, 5);
  await take(narrow, 3);

  const viaSync = await syncFrames(c, 2);
  const synced = viaSync.pop();
  assert.deepEqual(synced, { type: "synced", lastSeq: 5, recovered: true });
  const viaReconnect = await u.connect({ since: "2" });
  assert.equal(viaReconnect.hello.recovered, true);
  const replayed = await take(viaReconnect, 3);
  assert.deepEqual(viaSync.map(notifOf), replayed.map(notifOf));
  assert.deepEqual(viaSync.map((f) => f.seq), [3, 4, 5]);
  assert.deepEqual(await roundTrip(viaReconnect), []);

  // The connection's filter applies, as `types` would on a reconnect.
  const filtered = await syncFrames(narrow, 0);
  assert.deepEqual(filtered.pop(), { type: "synced", lastSeq: 5, recovered: true });
  const narrowReconnect = await u.connect({ since: "0", types: "note.*" });
  assert.deepEqual(filtered.map(notifOf), (await take(narrowReconnect, 3)).map(notifOf));
  assert.deepEqual(filtered.map((f) => f.type), ["note.a", "note.c", "note.d"]);

  // Nothing after the last seq; a since beyond it is not recovered, as on a reconnect.
  assert.deepEqual(await syncFrames(c, 5), [{ type: "synced", lastSeq: 5, recovered: true }]);
  assert.deepEqual(await syncFrames(c, 9), [{ type: "synced", lastSeq: 5, recovered: false }]);
  assert.equal((await u.connect({ since: "9" })).hello.recovered, false);

  // Live delivery goes on, once.
  const live = await publishOk(w, u.room, { type: "note.f" });
  assert.equal((await c.next()).seq, live.seq);
  assert.deepEqual(await roundTrip(c), []);
  c.terminate();
  narrow.terminate();
});

test("sync says recovered:false when the log no longer reaches back (HISTORY_LIMIT)", async () => {
  const u = user(small);
  const c = await u.connect();
  for (let i = 1; i <= 10; i++) await publishOk(small, u.room, { type: "t", data: { i } });
  await take(c, 10);
  const gap = await syncFrames(c, 2);
  assert.deepEqual(gap.pop(), { type: "synced", lastSeq: 10, recovered: false });
  assert.deepEqual(gap.map((f) => f.seq), [6, 7, 8, 9, 10], "what the log still holds is replayed");
  const reconnect = await u.connect({ since: "2" });
  assert.equal(reconnect.hello.recovered, false);
  assert.deepEqual(gap.map(notifOf), (await take(reconnect, 5)).map(notifOf));
  const edge = await syncFrames(c, 5);
  assert.deepEqual(edge.pop(), { type: "synced", lastSeq: 10, recovered: true });
  assert.deepEqual(edge.map((f) => f.seq), [6, 7, 8, 9, 10]);
  c.terminate();
  reconnect.terminate();
});

test("a sync with an invalid since is invalid_message; the connection keeps working", async () => {
  const u = user();
  const c = await u.connect();
  const r = await publishOk(w, u.room, { type: "t" });
  await c.next();
  for (const bad of [{ since: -1 }, { since: "0" }, { since: 1.5 }, { since: null }, {}, { since: true },
    { since: 2 ** 53 }]) {
    c.send({ type: "sync", ...bad });
    const f = await c.next();
    assert.deepEqual([f.type, f.code], ["error", "invalid_message"], `${JSON.stringify(bad)} → ${JSON.stringify(f)}`);
  }
  assert.deepEqual((await syncFrames(c, 0)).map((f) => f.id ?? f.type), [r.id, "synced"]);
  c.terminate();
});
