// Many-user publish (docs/protocol.md "Publishing", POST /broadcast with userIds), end to end against
// workerd: every user's room gets the same id, bad lists are refused whole, a room that fails
// makes the answer 207 naming it, and a retry after a lost answer delivers once per user.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startWorker, tokenFor, roomName, API_KEY } from "./support/harness.mjs";
import { KEY, assertError, roundTrip } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

const broadcast = (body, headers = {}) => w.request("POST", "/broadcast", { body, headers: { ...KEY, ...headers } });

/** `n` fresh users, each with its room name. */
const users = (n) => Array.from({ length: n }, () => roomName("m")).map((sub) => ({ sub, room: `user_${sub}` }));

/** Connects each user to its own room. */
const connectAll = (list) => Promise.all(list.map((u) => w.connect(u.room, { token: tokenFor(u.sub) })));

/** Asserts one room's stored-publish answer inside POST /broadcast. */
function assertRoomOk(one, id, { seq = 1, count = 1, duplicate = false } = {}) {
  assert.deepEqual(one, { success: true, broadcastCount: count, id, seq, duplicate });
}

test("userIds: every user's room and the request_ room get the same id, and every user the frame", async () => {
  const list = users(3);
  const rid = roomName("r");
  const requestRoom = `request_${rid}`;
  const clients = await connectAll(list);
  const cr = await w.connect(requestRoom, { token: tokenFor(list[0].sub, { rooms: [requestRoom] }) });

  const r = await broadcast({ userIds: list.map((u) => u.sub), requestId: rid, message: { type: "job.done", data: { ok: 1 } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body).sort(), ["rooms", "success"]);
  assert.equal(r.body.success, true);
  assert.deepEqual(Object.keys(r.body.rooms).sort(), [...list.map((u) => u.room), requestRoom].sort());
  const id = r.body.rooms[list[0].room].id;
  assert.ok(typeof id === "string" && id.length > 0);
  for (const one of Object.values(r.body.rooms)) assertRoomOk(one, id);
  for (const c of [...clients, cr]) {
    const f = await c.next();
    assert.deepEqual([f.id, f.seq, f.type, f.data, f.requestId], [id, 1, "job.done", { ok: 1 }, rid]);
  }

  // The id is the body's id, else the Idempotency-Key.
  const byBody = await broadcast({ userIds: list.map((u) => u.sub), message: { type: "job.done", id: `body-${rid}` } });
  assert.equal(byBody.status, 200, JSON.stringify(byBody.body));
  assert.deepEqual(Object.keys(byBody.body.rooms).sort(), list.map((u) => u.room).sort(), "no requestId: user rooms only");
  for (const one of Object.values(byBody.body.rooms)) assertRoomOk(one, `body-${rid}`, { seq: 2 });
  const byKey = await broadcast({ userIds: list.map((u) => u.sub), message: { type: "job.done" } }, { "idempotency-key": `key-${rid}` });
  assert.equal(byKey.status, 200, JSON.stringify(byKey.body));
  for (const one of Object.values(byKey.body.rooms)) assertRoomOk(one, `key-${rid}`, { seq: 3 });
  for (const c of clients) assert.deepEqual([(await c.next()).id, (await c.next()).id], [`body-${rid}`, `key-${rid}`]);
  assert.deepEqual(await roundTrip(cr), [], "the request room got only the publish that named it");
  for (const c of [...clients, cr]) c.terminate();
});

test("userIds: 100 distinct users are accepted; duplicates, more than 100, none, or userId with userIds are 400 and publish nothing", async () => {
  const hundred = users(100);
  const r = await broadcast({ userIds: hundred.map((u) => u.sub), message: { type: "all.hands" } });
  assert.equal(r.status, 200, JSON.stringify(r.body).slice(0, 300));
  assert.equal(Object.keys(r.body.rooms).length, 100);
  const id = r.body.rooms[hundred[0].room].id;
  for (const u of hundred) assertRoomOk(r.body.rooms[u.room], id, { count: 0 });
  for (const u of [hundred[0], hundred[99]]) {
    assert.deepEqual((await w.history(u.room)).body.notifications.map((n) => [n.id, n.type]), [[id, "all.hands"]]);
  }

  const [a, b] = users(2);
  const [ca] = await connectAll([a]);
  const bad = {
    "a repeated id": { userIds: [a.sub, b.sub, a.sub], message: { type: "x" } },
    "101 ids": { userIds: [a.sub, ...users(100).map((u) => u.sub)], message: { type: "x" } },
    "no ids": { userIds: [], message: { type: "x" } },
    "userId and userIds": { userId: a.sub, userIds: [b.sub], message: { type: "x" } },
    "userIds not a list": { userIds: a.sub, message: { type: "x" } },
    "a non-string id": { userIds: [a.sub, 7], message: { type: "x" } },
    "an id making a bad room id": { userIds: [a.sub, "b/c"], message: { type: "x" } },
    "no message": { userIds: [a.sub] },
  };
  for (const [what, body] of Object.entries(bad)) assertError(await broadcast(body), 400, "invalid_body", what);
  assert.deepEqual(await roundTrip(ca), [], "a refused call delivers nothing");
  assert.equal((await w.history(a.room)).body.lastSeq, 0);
  ca.terminate();
});

test("a room that fails makes the answer 207 with success:false and that room's error; the others are delivered once", async () => {
  const [a, b, c] = users(3);
  const clients = await connectAll([a, b, c]);
  const id = `clash-${a.sub}`;
  // b's room already holds a notification with this id, under another key: it refuses (409).
  const earlier = await w.publish(b.room, { type: "other.thing", id }, { "idempotency-key": `other-${a.sub}` });
  assert.equal(earlier.status, 200, JSON.stringify(earlier.body));
  assert.equal((await clients[1].next()).id, id);

  const body = { userIds: [a.sub, b.sub, c.sub], message: { type: "job.done", id } };
  const key = { "idempotency-key": `batch-${a.sub}` };
  const r = await broadcast(body, key);
  assert.equal(r.status, 207, JSON.stringify(r.body));
  assert.equal(r.body.success, false);
  assert.deepEqual(Object.keys(r.body.rooms).sort(), [a.room, b.room, c.room].sort());
  assertRoomOk(r.body.rooms[a.room], id);
  assertRoomOk(r.body.rooms[c.room], id);
  const failed = r.body.rooms[b.room];
  assert.deepEqual(Object.keys(failed).sort(), ["error", "success"], JSON.stringify(failed));
  assert.equal(failed.success, false);
  assert.equal(failed.error.code, "duplicate_id");
  assert.ok(failed.error.message.length > 0);
  for (const cl of [clients[0], clients[2]]) assert.equal((await cl.next()).type, "job.done");
  assert.deepEqual(await roundTrip(clients[1]), [], "the failed room delivered nothing");

  // Retrying with the same key: the rooms that have it answer duplicate:true and send nothing.
  const retry = await broadcast(body, key);
  assert.equal(retry.status, 207, JSON.stringify(retry.body));
  assertRoomOk(retry.body.rooms[a.room], id, { duplicate: true });
  assertRoomOk(retry.body.rooms[c.room], id, { duplicate: true });
  assert.equal(retry.body.rooms[b.room].error.code, "duplicate_id");
  for (const cl of clients) assert.deepEqual(await roundTrip(cl), []);
  for (const cl of clients) cl.terminate();
});

test("a userIds publish retried after a lost answer delivers exactly once per user; the retry is duplicate:true in every room", async () => {
  // A loopback proxy that forwards the first request, waits for the whole answer (the publish is
  // done), then drops the caller's connection instead of answering: a lost answer.
  let lose = 1;
  let forwarded = 0;
  const proxy = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const ch of req) chunks.push(ch);
    const upstream = await fetch(w.base + req.url, {
      method: req.method,
      headers: { "content-type": req.headers["content-type"], authorization: req.headers.authorization, "idempotency-key": req.headers["idempotency-key"] },
      body: Buffer.concat(chunks),
    });
    const text = await upstream.text();
    forwarded++;
    if (lose-- > 0) {
      req.socket.destroy();
      return;
    }
    res.writeHead(upstream.status, { "content-type": "application/json" });
    res.end(text);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
  try {
    const list = users(4);
    const rid = roomName("r");
    const requestRoom = `request_${rid}`;
    // Three users are online; the fourth gets it from history later.
    const clients = await connectAll(list.slice(0, 3));
    const cr = await w.connect(requestRoom, { token: tokenFor(list[0].sub, { rooms: [requestRoom] }) });
    const call = () => fetch(`http://127.0.0.1:${proxy.address().port}/broadcast`, {
      method: "POST",
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", "idempotency-key": `retry-${rid}` },
      body: JSON.stringify({ userIds: list.map((u) => u.sub), requestId: rid, message: { type: "job.done", data: { step: 3 } } }),
    });
    await assert.rejects(call(), "the first answer is lost");
    assert.equal(forwarded, 1, "the lost call did reach the worker");

    const retry = await call();
    assert.equal(retry.status, 200);
    const body = await retry.json();
    assert.equal(body.success, true, JSON.stringify(body));
    const rooms = [...list.map((u) => u.room), requestRoom];
    assert.deepEqual(Object.keys(body.rooms).sort(), rooms.sort());
    for (const room of rooms) {
      const one = body.rooms[room];
      assert.deepEqual([one.success, one.duplicate, one.id, one.seq], [true, true, `retry-${rid}`, 1], `${room}: ${JSON.stringify(one)}`);
    }
    for (const c of [...clients, cr]) {
      const f = await c.next();
      assert.deepEqual([f.id, f.seq, f.data], [`retry-${rid}`, 1, { step: 3 }]);
      assert.deepEqual(await roundTrip(c), [], "delivered once");
    }
    for (const room of rooms) {
      assert.deepEqual((await w.history(room)).body.notifications.map((n) => n.id), [`retry-${rid}`], room);
    }
    for (const c of [...clients, cr]) c.terminate();
  } finally {
    proxy.closeAllConnections();
    await new Promise((r) => proxy.close(r));
  }
});
