// The Worker's routes, end to end against workerd: unknown routes, wrong methods and invalid room
// ids in the protocol's check order, liveness and room health, the demo page, and failing closed when a
// setting is missing.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { API_KEY, startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, assertError, refusedUpgrade } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

/** Connects expecting the upgrade to be refused; returns { status, headers, body }. */
const refused = (room, opts) => refusedUpgrade(w, room, opts);

test("unknown routes are 404 not_found, before any method check", async () => {
  for (const [m, p] of [["GET", "/nope"], ["GET", "/rooms/x/unknown"], ["POST", "/rooms/x/nope"],
    ["GET", "/rooms/x"], ["GET", "/rooms/x/subscribe/extra"], ["DELETE", "/nope"],
    ["PUT", "/rooms/%2F/unknown"],
    // The dev token route does not exist without DEV_MODE.
    ["POST", "/dev/token"]]) {
    assertError(await w.request(m, p), 404, "not_found", `${m} ${p}`);
  }
});

test("the demo page and the browser client are served", async () => {
  const page = await w.request("GET", "/");
  assert.equal(page.status, 200);
  assert.match(page.headers.get("content-type"), /^text\/html/);
  assert.match(page.body, /^<!doctype html/i);
  const js = await w.request("GET", "/client/roomcast.js");
  assert.equal(js.status, 200);
  assert.match(js.headers.get("content-type"), /javascript/);
  assert.ok(js.body.length > 0);
});

test("wrong methods are 405 method_not_allowed with an Allow header", async () => {
  const cases = [
    ["GET", "/broadcast", "POST"],
    ["GET", "/rooms/r/broadcast", "POST"],
    ["POST", "/rooms/r/subscribe", "GET"],
    ["DELETE", "/healthz", "GET"],
    ["PUT", "/rooms/r/history", "GET"],
    ["POST", "/rooms/r/health", "GET"],
    // The method is checked before the room id: a bad id with a wrong method is still a 405.
    ["DELETE", "/rooms/%2F/subscribe", "GET"],
    ["GET", "/rooms/.../broadcast", "POST"],
  ];
  for (const [m, p, allowed] of cases) {
    const res = await w.request(m, p, { headers: KEY });
    assertError(res, 405, "method_not_allowed", `${m} ${p}`);
    const allow = (res.headers.get("allow") ?? "").split(",").map((s) => s.trim());
    assert.ok(allow.includes(allowed), `${m} ${p}: Allow ${res.headers.get("allow")}`);
    assert.ok(!allow.includes(m), `${m} ${p}: Allow ${res.headers.get("allow")} lists ${m}`);
  }
});

test("invalid room ids are 400 invalid_room_id on every room route, before auth", async () => {
  const bad = ["%2F", "a%2Fb", "...", "a".repeat(129), "_x", "", "-x", "a%20b", "%C3%A9"];
  for (const id of bad) {
    const label = id.length > 20 ? `${id.slice(0, 8)}…(${id.length})` : JSON.stringify(id);
    // Without any credentials: 400, not 401, because the room id is checked first.
    assertError(await w.request("GET", `/rooms/${id}/subscribe`), 400, "invalid_room_id", `subscribe ${label}`);
    assertError(await w.request("GET", `/rooms/${id}/history`), 400, "invalid_room_id", `history ${label}`);
    assertError(await w.request("GET", `/rooms/${id}/health`), 400, "invalid_room_id", `health ${label}`);
    assertError(await w.request("POST", `/rooms/${id}/broadcast`, { body: { type: "x" } }),
      400, "invalid_room_id", `broadcast ${label}`);
    // And with valid credentials, still 400 (it never reaches a room).
    assertError(await w.publish(id, { type: "x" }), 400, "invalid_room_id", `keyed broadcast ${label}`);
  }
  // A WebSocket client sees the same refusal on the upgrade.
  const r = await refused("a%2Fb");
  assertError(r, 400, "invalid_room_id", "ws upgrade a%2Fb");
  // The longest valid id works.
  const longest = "a".repeat(128);
  const ok = await w.request("GET", `/rooms/${longest}/health`);
  assert.equal(ok.status, 200);
  assert.deepEqual(ok.body, { ok: true, roomId: longest });
});

test("GET /healthz reports liveness and version", async () => {
  const res = await w.request("GET", "/healthz");
  assert.equal(res.status, 200);
  assert.deepEqual(Object.keys(res.body).sort(), ["ok", "version"]);
  assert.equal(res.body.ok, true);
  assert.equal(typeof res.body.version, "string");
  assert.ok(res.body.version.length > 0);
});

test("room health: anonymous liveness only, details with the API key, 401 with a wrong key", async () => {
  const room = roomName("health");
  const anon = await w.request("GET", `/rooms/${room}/health`);
  assert.equal(anon.status, 200);
  assert.deepEqual(anon.body, { ok: true, roomId: room });

  const empty = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
  assert.equal(empty.status, 200, JSON.stringify(empty.body));
  assert.equal(empty.body.ok, true);
  assert.equal(empty.body.roomId, room);
  assert.equal(empty.body.connections, 0);
  assert.equal(empty.body.pendingAcks, 0);
  assert.equal(empty.body.lastSeq, 0);
  assert.ok("lastBroadcastAt" in empty.body, JSON.stringify(empty.body));
  assert.equal(empty.body.lastBroadcastAt, null);
  assert.deepEqual([empty.body.publishes, empty.body.deliveries, empty.body.failedAcks], [0, 0, 0]);

  const c = await w.connect(room, { token: tokenFor("hu", { rooms: [room] }) });
  assert.equal((await w.publish(room, { type: "a.b" })).status, 200);
  assert.equal((await w.publish(room, { type: "a.b", requiresAck: true })).status, 200);
  const full = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
  assert.equal(full.status, 200);
  assert.equal(full.body.connections, 1);
  assert.equal(full.body.pendingAcks, 1);
  assert.equal(full.body.lastSeq, 2);
  assert.equal(full.body.publishes, 2);
  // Both publishes reached the one socket; a second socket then gets the pending one replayed.
  assert.equal(full.body.deliveries, 2);
  const d = await w.connect(room, { token: tokenFor("hv", { rooms: [room] }) });
  assert.equal((await d.next()).attempt, 1);
  const more = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
  assert.equal(more.body.deliveries, 3);
  await d.close();
  assert.match(full.body.lastBroadcastAt, ISO_Z);
  assert.ok(Math.abs(Date.parse(full.body.lastBroadcastAt) - Date.now()) < 60_000);

  const wrong = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: "Bearer nope" } });
  assertError(wrong, 401, "unauthorized", "wrong key");
  const notBearer = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: API_KEY } });
  assertError(notBearer, 401, "unauthorized", "key without Bearer");
  await c.close();
});

test("without BROADCAST_API_KEYS / JWT_SECRET the routes fail closed with 503 naming the setting", async () => {
  const bare = await startWorker({ bindings: { BROADCAST_API_KEYS: undefined, JWT_SECRET: undefined } });
  try {
    const pub = await bare.publish("r1", { type: "x" });
    assertError(pub, 503, "not_configured", "publish");
    assert.match(pub.body.error.message, /BROADCAST_API_KEYS/);
    const bc = await bare.request("POST", "/broadcast", { headers: KEY, body: { userId: "u1", message: { type: "x" } } });
    assertError(bc, 503, "not_configured", "POST /broadcast");
    assert.match(bc.body.error.message, /BROADCAST_API_KEYS/);

    const sub = await bare.request("GET", "/rooms/user_u1/subscribe", {
      headers: { authorization: `Bearer ${tokenFor("u1")}` },
    });
    assertError(sub, 503, "not_configured", "subscribe");
    assert.match(sub.body.error.message, /JWT_SECRET/);
    // A real WebSocket client gets the same answer on its upgrade.
    let err;
    try { (await bare.connect("user_u1")).terminate(); } catch (e) { err = e; }
    assert.equal(err?.status, 503);
    assert.match(err.body.error.message, /JWT_SECRET/);
    // Liveness does not depend on settings.
    assert.equal((await bare.request("GET", "/healthz")).status, 200);
  } finally {
    await bare.stop();
  }
});
