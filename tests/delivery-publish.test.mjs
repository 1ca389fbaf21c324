// Delivery guarantees, part 3 (docs/protocol.md "Publishing" and the history route): POST /broadcast to a
// user's room and a request's room in one call, and reading the log back page by page.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName, API_KEY } from "./support/harness.mjs";
import { nothingMore } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

const auth = { authorization: `Bearer ${API_KEY}` };

function broadcast(body, headers = {}) {
  return w.request("POST", "/broadcast", { body, headers: { ...auth, ...headers } });
}

test("POST /broadcast publishes to user_{userId} and request_{requestId}", async () => {
  const uid = roomName("u");
  const rid = roomName("r");
  const [userRoom, requestRoom] = [`user_${uid}`, `request_${rid}`];
  const token = tokenFor(uid, { rooms: [requestRoom] });
  const cu = await w.connect(userRoom, { token });
  const cr = await w.connect(requestRoom, { token });

  const r = await broadcast({ userId: uid, requestId: rid, message: { type: "job.done", data: { ok: 1 } } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.success, true);
  assert.deepEqual(Object.keys(r.body.rooms).sort(), [requestRoom, userRoom].sort());
  const [ru, rr] = [r.body.rooms[userRoom], r.body.rooms[requestRoom]];
  for (const one of [ru, rr]) {
    assert.deepEqual(one, { success: true, broadcastCount: 1, id: ru.id, seq: 1, duplicate: false });
  }
  const [fu, fr] = [await cu.next(), await cr.next()];
  for (const f of [fu, fr]) {
    assert.deepEqual([f.id, f.seq, f.type, f.data, f.requestId], [ru.id, 1, "job.done", { ok: 1 }, rid]);
  }

  // Without requestId only the user's room gets it.
  const solo = await broadcast({ userId: uid, message: { type: "job.other" } });
  assert.equal(solo.status, 200, JSON.stringify(solo.body));
  assert.deepEqual(Object.keys(solo.body.rooms), [userRoom]);
  assert.equal(solo.body.rooms[userRoom].seq, 2);
  assert.equal((await cu.next()).type, "job.other");
  assert.ok(await nothingMore(cr), "the request room got nothing");

  // A retried step with the same key is a duplicate in both rooms.
  const key = { "idempotency-key": `step-${rid}` };
  const once = await broadcast({ userId: uid, requestId: rid, message: { type: "job.step" } }, key);
  const twice = await broadcast({ userId: uid, requestId: rid, message: { type: "job.step" } }, key);
  assert.equal(twice.status, 200);
  for (const room of [userRoom, requestRoom]) {
    assert.deepEqual(twice.body.rooms[room], { ...once.body.rooms[room], duplicate: true });
  }
  assert.equal((await cu.next()).type, "job.step");
  assert.equal((await cr.next()).type, "job.step");
  const [qu, qr] = await Promise.all([nothingMore(cu), nothingMore(cr)]);
  assert.ok(qu && qr, "each room delivered it once");
});

test("POST /broadcast refuses a userId or requestId that makes an invalid room id", async () => {
  for (const body of [
    { userId: "a/b", message: { type: "x" } },
    { userId: "", message: { type: "x" } },
    { userId: "ok", requestId: "r 1", message: { type: "x" } },
    { userId: "ok", requestId: "", message: { type: "x" } },
  ]) {
    const r = await broadcast(body);
    assert.equal(r.status, 400, JSON.stringify(body));
    assert.equal(r.body.success, false);
    assert.equal(typeof r.body.error.code, "string");
  }
  const noKey = await w.request("POST", "/broadcast", { body: { userId: "u", message: { type: "x" } } });
  assert.equal(noKey.status, 401);
});

test("history pages oldest first with hasMore and lastSeq", async () => {
  const sub = roomName("u");
  const room = `user_${sub}`;
  const c = await w.connect(room, { token: tokenFor(sub) });
  for (let i = 1; i <= 5; i++) {
    const r = await w.publish(room, { type: "t", data: { i }, requiresAck: i === 5 });
    assert.equal(r.status, 200);
  }
  const page = async (q) => {
    const h = await w.history(room, q);
    assert.equal(h.status, 200, JSON.stringify(h.body));
    return h.body;
  };
  const p1 = await page("?since=1&limit=2");
  assert.deepEqual(
    [p1.success, p1.roomId, p1.lastSeq, p1.hasMore, p1.notifications.map((n) => n.seq)],
    [true, room, 5, true, [2, 3]],
  );
  const p2 = await page("?since=3&limit=2");
  assert.deepEqual([p2.hasMore, p2.notifications.map((n) => n.seq)], [false, [4, 5]]);
  const n2 = p1.notifications[0];
  assert.deepEqual(
    [n2.type, n2.data, n2.requiresAck, n2.deliveryStatus, n2.attempts, n2.ackedAt, n2.ackedBy],
    ["t", { i: 2 }, false, "sent", 1, null, null],
  );
  assert.equal(p2.notifications[1].deliveryStatus, "pending");
  assert.equal("attempt" in n2, false, "history carries attempts, not a frame's attempt");

  const all = await page("?limit=5000");
  assert.deepEqual([all.hasMore, all.notifications.map((n) => n.seq)], [false, [1, 2, 3, 4, 5]]);
  assert.deepEqual((await page("")).notifications.length, 5);
  assert.deepEqual(await page("?since=5"), { success: true, roomId: room, lastSeq: 5, hasMore: false, notifications: [] });

  for (const bad of ["?limit=0", "?limit=-1", "?since=x"]) {
    const h = await w.history(room, bad);
    assert.equal(h.status, 400, bad);
    assert.equal(h.body.error.code, "invalid_query", bad);
  }
  c.close();
});

test("history is readable with an API key or a token allowed in the room", async () => {
  const sub = roomName("u");
  const room = `user_${sub}`;
  await w.publish(room, { type: "t" });
  const get = (q, headers = {}) => w.request("GET", `/rooms/${room}/history${q}`, { headers });
  const token = tokenFor(sub);

  const byHeader = await get("", { authorization: `Bearer ${token}` });
  assert.equal(byHeader.status, 200, JSON.stringify(byHeader.body));
  assert.equal(byHeader.body.notifications.length, 1);
  const byQuery = await get(`?token=${encodeURIComponent(token)}`);
  assert.equal(byQuery.status, 200, JSON.stringify(byQuery.body));
  assert.equal(byQuery.body.lastSeq, 1);
  const byRooms = await get("", { authorization: `Bearer ${tokenFor("someone", { rooms: [room] })}` });
  assert.equal(byRooms.status, 200);

  const none = await get("");
  assert.equal(none.status, 401);
  assert.equal(none.body.success, false);
  const other = await get("", { authorization: `Bearer ${tokenFor(sub + "_other")}` });
  assert.equal(other.status, 403);
  assert.equal(other.body.error.code, "forbidden");
  const wrongKey = await get("", { authorization: "Bearer not-a-key-nor-a-token" });
  assert.equal(wrongKey.status, 401);
});
