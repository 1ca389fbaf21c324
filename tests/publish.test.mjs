// Publishing, end to end against workerd: refused bodies (415, 400, 413) take no seq, and the
// publish answer and the notification frame have the protocol's exact shape.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, assertError } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test("publish bodies: 415, 400 and 413 errors, and refused publishes take no seq", async () => {
  const room = roomName("body");
  const post = (body, headers = {}, raw = true) =>
    w.request("POST", `/rooms/${room}/broadcast`, { body, raw, headers: { ...KEY, ...headers } });
  assertError(await post('{"type":"x"}', { "content-type": "text/plain" }), 415, "unsupported_media_type", "text/plain");
  assertError(await post('{"type":"x"}'), 415, "unsupported_media_type", "no content type");
  const json = { "content-type": "application/json" };
  assertError(await post("{nope", json), 400, "invalid_json", "not JSON");
  assertError(await post('{"type":"x","requireAck":true}', json), 400, "invalid_body", "typo'd field");
  assertError(await post('{"data":{}}', json), 400, "invalid_body", "no type");
  assertError(await post('{"type":"connected"}', json), 400, "reserved_type", "reserved type");
  assertError(await post(JSON.stringify({ type: "x", data: { s: "a".repeat(1024 * 1024) } }), json),
    413, "payload_too_large", "over MAX_MESSAGE_BYTES");
  const ok = await w.publish(room, { type: "x" });
  assert.equal(ok.status, 200, JSON.stringify(ok.body));
  assert.equal(ok.body.seq, 1);
});

test("publish response and the notification frame have the protocol's exact shape", async () => {
  const room = roomName("shape");
  const c = await w.connect(room, { token: tokenFor("u1", { rooms: [room] }) });
  assert.equal(c.hello.type, "connected");
  assert.equal(c.hello.lastSeq, 0);
  assert.ok(!("recovered" in c.hello), "no `since`, so no `recovered`");

  const msg = {
    type: "note.creation.completed", data: { entityId: "note-456", title: "My Note" },
    status: "success", timestamp: "2026-01-20T12:00:00+02:00", requestId: "req-abc", requiresAck: true,
  };
  const r = await w.publish(room, msg);
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.deepEqual(Object.keys(r.body).sort(), ["broadcastCount", "duplicate", "id", "seq", "success"]);
  assert.equal(r.body.success, true);
  assert.equal(r.body.broadcastCount, 1);
  assert.equal(r.body.seq, 1);
  assert.equal(r.body.duplicate, false);
  assert.equal(typeof r.body.id, "string");
  assert.ok(r.body.id.length > 0);

  const f = await c.next();
  assert.deepEqual(f, {
    id: r.body.id, seq: 1, type: "note.creation.completed",
    data: { entityId: "note-456", title: "My Note" }, status: "success",
    // The publisher's timestamp, normalised to UTC with a Z.
    timestamp: "2026-01-20T10:00:00.000Z", requestId: "req-abc", requiresAck: true, attempt: 1,
  });

  // Defaults: data {}, status success, a server timestamp, requiresAck false; no requestId/error.
  const before = Date.now();
  const r2 = await w.publish(room, { type: "task.failed", status: "error", error: "boom", id: "my-id-1" });
  assert.equal(r2.status, 200, JSON.stringify(r2.body));
  assert.equal(r2.body.id, "my-id-1");
  assert.equal(r2.body.seq, 2);
  const f2 = await c.next();
  assert.deepEqual(Object.keys(f2).sort(),
    ["attempt", "data", "error", "id", "requiresAck", "seq", "status", "timestamp", "type"]);
  assert.deepEqual({ ...f2, timestamp: undefined }, {
    id: "my-id-1", seq: 2, type: "task.failed", data: {}, status: "error", error: "boom",
    requiresAck: false, attempt: 1, timestamp: undefined,
  });
  assert.match(f2.timestamp, ISO_Z);
  assert.ok(Math.abs(Date.parse(f2.timestamp) - before) < 60_000, f2.timestamp);

  const r3 = await w.publish(room, { type: "plain" });
  const f3 = await c.next();
  assert.deepEqual(Object.keys(f3).sort(), ["attempt", "data", "id", "requiresAck", "seq", "status", "timestamp", "type"]);
  assert.deepEqual([f3.id, f3.seq, f3.data, f3.status, f3.requiresAck], [r3.body.id, 3, {}, "success", false]);
  assert.notEqual(r3.body.id, r.body.id, "generated ids are unique");
  await c.close();
});
