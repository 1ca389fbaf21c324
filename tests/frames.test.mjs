// The socket's own frames, end to end against workerd: pings, invalid frames answered without
// harm, and clients closing (cleanly, with 4xxx codes, or vanishing) leaving the room working.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, roundTrip } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test("pings: text ping → text pong, JSON ping → pong frame; invalid frames answered, socket stays usable", async () => {
  const room = roomName("ping");
  const c = await w.connect(room, { token: tokenFor("u1", { rooms: [room] }) });
  c.send("ping");
  assert.equal(await c.next(), "pong");
  c.send({ type: "ping" });
  const pong = await c.next();
  assert.deepEqual(Object.keys(pong).sort(), ["timestamp", "type"]);
  assert.equal(pong.type, "pong");
  assert.match(pong.timestamp, ISO_Z);

  for (const bad of ["{not json", JSON.stringify({ type: "dance" }), "[1,2]", "PING"]) {
    c.send(bad);
    const err = await c.next();
    assert.equal(err.type, "error", `for ${bad}`);
    assert.equal(err.code, "invalid_message", `for ${bad}`);
    assert.equal(typeof err.message, "string");
  }
  // Still usable: pings are answered and notifications arrive.
  c.send({ type: "ping" });
  assert.equal((await c.next()).type, "pong");
  c.send("ping");
  assert.equal(await c.next(), "pong");
  const r = await w.publish(room, { type: "after.errors" });
  assert.equal(r.body.broadcastCount, 1);
  assert.equal((await c.next()).seq, r.body.seq);
  await c.close();
});

test("clients closing with 1000 or a 4xxx code leave the room working", async () => {
  const room = roomName("close");
  const tok = (s) => tokenFor(s, { rooms: [room] });
  const [a, b, stay] = await Promise.all([w.connect(room, { token: tok("a") }),
    w.connect(room, { token: tok("b") }), w.connect(room, { token: tok("s") })]);
  const r1 = await w.publish(room, { type: "close.t" });
  assert.equal(r1.body.broadcastCount, 3);
  await Promise.all([a.next(), b.next(), stay.next()]);

  const ca = await a.close(1000);
  assert.equal(ca.code, 1000);
  const r2 = await w.publish(room, { type: "close.t" });
  assert.equal(r2.status, 200, JSON.stringify(r2.body));
  assert.equal(r2.body.broadcastCount, 2);
  assert.equal((await b.next()).seq, r2.body.seq);
  assert.equal((await stay.next()).seq, r2.body.seq);

  const cb = await b.close(4000);
  assert.equal(cb.code, 4000);
  const r3 = await w.publish(room, { type: "close.t" });
  assert.equal(r3.status, 200, JSON.stringify(r3.body));
  assert.equal(r3.body.broadcastCount, 1);
  assert.equal((await stay.next()).seq, r3.body.seq);

  // A client that vanishes without a close handshake does not break the room either.
  const gone = await w.connect(room, { token: tok("g") });
  gone.terminate();
  await gone.closed;
  const r4 = await w.publish(room, { type: "close.t" });
  assert.equal(r4.status, 200, JSON.stringify(r4.body));
  assert.equal((await stay.next()).seq, r4.body.seq);
  // New clients can still join.
  const again = await w.connect(room, { token: tok("a") });
  assert.equal(again.hello.lastSeq, r4.body.seq);
  const h = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
  assert.equal(h.body.connections, 2);
  await Promise.all([stay.close(), again.close()]);
});

test("frames stamped with the client's own id and timestamp (every member it does not define is ignored)", async () => {
  const room = roomName("stamped");
  const c = await w.connect(room, { token: tokenFor("s4", { rooms: [room] }) });
  let n = 0;
  const stamped = (frame) => ({ id: `m${++n}`, timestamp: new Date().toISOString(), ...frame });
  // More than the ten invalid frames that would close the socket, if these were refused.
  for (let i = 0; i < 12; i++) {
    c.send(stamped({ type: "ping" }));
    const pong = await c.next();
    assert.equal(pong.type, "pong", JSON.stringify(pong));
  }
  c.send(stamped({ type: "subscribe", data: { types: ["memory.*"], channels: ["memories"] } }));
  assert.deepEqual(await c.next(), { type: "subscribed", data: { types: ["memory.*"] } });
  const r = await w.publish(room, { type: "memory.created", requiresAck: true });
  const got = await c.next();
  assert.equal(got.id, r.body.id);
  c.send(stamped({ type: "ack", notificationId: got.id }));
  c.send(stamped({ type: "sync", since: r.body.seq }));
  const synced = await c.until((f) => f.type === "synced");
  assert.deepEqual(synced.skipped, [], "the ack took, so nothing pending is replayed; no error");
  assert.deepEqual({ lastSeq: synced.lastSeq, recovered: synced.recovered }, { lastSeq: r.body.seq, recovered: true });
  const h = await w.request("GET", `/rooms/${room}/history`, { headers: KEY });
  assert.equal(h.body.notifications[0].deliveryStatus, "acked");
  // A defined member of the wrong type is still refused.
  c.send(stamped({ type: "sync", since: "0" }));
  assert.equal((await c.next()).code, "invalid_message");
  await c.close();
});

test("batch=1: a replay arrives as one batch frame in seq order; without batch=1 never a batch", async () => {
  const room = roomName("batch");
  const seqs = [];
  for (let i = 0; i < 5; i++) seqs.push((await w.publish(room, { type: "burst", data: { i } })).body.seq);
  const batched = await w.connect(room, { token: tokenFor("b", { rooms: [room] }), query: { since: "0", batch: "1" } });
  assert.equal(batched.hello.type, "connected");
  const batch = await batched.next();
  assert.equal(batch.type, "batch", JSON.stringify(batch));
  assert.deepEqual(batch.frames.map((f) => f.seq), seqs);
  assert.ok(batch.frames.every((f) => f.type === "burst" && f.attempt === 1));
  // A frame with nothing queued before it goes alone, at once.
  const live = await w.publish(room, { type: "burst", data: { i: 5 } });
  assert.equal((await batched.next()).seq, live.body.seq);

  const plain = await w.connect(room, { token: tokenFor("p", { rooms: [room] }), query: { since: "0" } });
  for (const s of [...seqs, live.body.seq]) assert.equal((await plain.next()).seq, s);
  assert.deepEqual(await roundTrip(plain), []);
  await Promise.all([batched.close(), plain.close()]);
});
