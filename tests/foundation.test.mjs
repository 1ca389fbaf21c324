// The foundation, end to end against workerd: every route error in SPEC's check order, health,
// token and API-key auth, the publish response and notification frame, pings, fan-out to 1,000
// sockets, seq under concurrency and across a runtime restart, clean closes, identity headers.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import {
  API_KEY, startWorker, tokenFor, signHs256, roomName,
} from "./support/harness.mjs";

const ISO_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
const KEY = { authorization: `Bearer ${API_KEY}` };

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

/** Asserts SPEC's error response: exact status, and exactly {success:false,error:{code,message}}. */
function assertError(res, status, code, what = "") {
  const ctx = `${what} → ${res.status} ${JSON.stringify(res.body)}`;
  assert.equal(res.status, status, ctx);
  assert.equal(typeof res.body, "object", ctx);
  assert.deepEqual(Object.keys(res.body).sort(), ["error", "success"], ctx);
  assert.equal(res.body.success, false, ctx);
  assert.deepEqual(Object.keys(res.body.error).sort(), ["code", "message"], ctx);
  assert.equal(res.body.error.code, code, ctx);
  assert.equal(typeof res.body.error.message, "string", ctx);
  assert.ok(res.body.error.message.length > 0, ctx);
  assert.match(res.headers.get("content-type") ?? "", /^application\/json/, ctx);
}

/** Connects expecting the upgrade to be refused; returns { status, headers, body }. */
async function refused(room, opts) {
  try {
    const c = await w.connect(room, opts);
    c.terminate();
  } catch (e) {
    if (e.status === undefined) throw e;
    return { status: e.status, headers: new Headers(e.headers), body: e.body };
  }
  assert.fail(`connecting to ${room} was accepted`);
}

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

test("subscribe without Upgrade: 401 without a token, 426 with a valid one", async () => {
  assertError(await w.request("GET", "/rooms/user_u1/subscribe"), 401, "unauthorized", "no token");
  const headers = { authorization: `Bearer ${tokenFor("u1")}` };
  assertError(await w.request("GET", "/rooms/user_u1/subscribe", { headers }), 426, "upgrade_required", "token, no upgrade");
  // The token is checked before the upgrade: a forbidden room is 403, not 426.
  assertError(await w.request("GET", "/rooms/user_u2/subscribe", { headers }), 403, "forbidden", "other room, no upgrade");
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

test("subscribe tokens: missing, expired, forged, wrong room are refused; rooms claim admits", async () => {
  assertError(await refused("user_u1", { token: null }), 401, "unauthorized", "missing");
  assertError(await refused("user_u1", { token: tokenFor("u1", { ttl: -60 }) }), 401, "unauthorized", "expired");
  const now = Math.floor(Date.now() / 1000);
  const forged = signHs256({ sub: "u1", exp: now + 600 }, "not-the-secret-0123456789abcdef");
  assertError(await refused("user_u1", { token: forged }), 401, "unauthorized", "wrong secret");
  assertError(await refused("user_u1", { token: "not.a.jwt" }), 401, "unauthorized", "garbage");
  const none = signHs256({ sub: "u1", exp: now + 600 }, "x", { alg: "none", typ: "JWT" }).replace(/[^.]+$/, "");
  assertError(await refused("user_u1", { token: none }), 401, "unauthorized", "alg none");
  assertError(await refused("user_u2", { token: tokenFor("u1") }), 403, "forbidden", "another user's room");

  const exact = roomName("request");
  const c1 = await w.connect(exact, { token: tokenFor("u1", { rooms: [exact] }) });
  assert.equal(c1.hello.type, "connected");
  assert.equal(c1.hello.roomId, exact);

  const prefix = roomName("team");
  const c2 = await w.connect(`${prefix}_a`, { token: tokenFor("u1", { rooms: [`${prefix}_*`] }) });
  assert.equal(c2.hello.roomId, `${prefix}_a`);
  // A prefix entry admits only rooms that start with it.
  assertError(await refused(`${prefix}0`, { token: tokenFor("u1", { rooms: [`${prefix}_*`] }) }),
    403, "forbidden", "outside the prefix");
  // An exact entry is not a prefix.
  assertError(await refused(`${exact}x`, { token: tokenFor("u1", { rooms: [exact] }) }), 403, "forbidden", "exact entry");

  const c3 = await w.connect("user_u1", { token: tokenFor("u1"), viaQuery: true });
  assert.equal(c3.hello.roomId, "user_u1");
  assertError(await refused("user_u1", { token: tokenFor("u1", { ttl: -60 }), viaQuery: true }),
    401, "unauthorized", "expired via ?token=");
  await Promise.all([c1.close(), c2.close(), c3.close()]);
});

test("publish auth: missing or wrong API key is 401", async () => {
  const room = roomName("auth");
  const res = await w.request("POST", `/rooms/${room}/broadcast`, { body: { type: "x" } });
  assertError(res, 401, "unauthorized", "missing key");
  assertError(await w.publish(room, { type: "x" }, { authorization: "Bearer wrong-key" }), 401, "unauthorized", "wrong key");
  assertError(await w.publish(room, { type: "x" }, { authorization: `Basic ${API_KEY}` }), 401, "unauthorized", "not Bearer");
  assertError(await w.request("POST", "/broadcast", { body: { userId: "u1", message: { type: "x" } } }),
    401, "unauthorized", "POST /broadcast without key");
  // Nothing was published by the refused calls.
  const h = await w.history(room);
  assert.equal(h.status, 200);
  assert.equal(h.body.lastSeq, 0);
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

test("publish response and the notification frame have SPEC's exact shape", async () => {
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

test("fan-out: 1,000 sockets in one room each get one publish exactly once", async () => {
  const room = roomName("fan");
  const N = 1000, BATCH = 100;
  const clients = [];
  try {
    for (let i = 0; i < N; i += BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + BATCH); j++) {
        batch.push(w.connect(room, { token: tokenFor(`fan${j}`, { rooms: [room] }) }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    assert.equal(clients.length, N);
    const r = await w.publish(room, { type: "fan.out", data: { n: 1 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.broadcastCount, N);
    const frames = await Promise.all(clients.map((c) => c.next(20_000)));
    for (const f of frames) {
      assert.equal(f.id, r.body.id);
      assert.equal(f.seq, r.body.seq);
    }
    // Exactly once: no socket gets a second frame.
    const quiet = await Promise.all(clients.map((c) => c.quiet(500)));
    assert.equal(quiet.filter((q) => !q).length, 0, "sockets with a second frame");
    const h = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
    assert.equal(h.body.connections, N);
  } finally {
    for (const c of clients) { c.terminate(); w.sockets.delete(c); }
  }
});

test("large fan-outs (over 256 sockets, sent in chunks) keep every socket's frames in seq order", async () => {
  // Rooms above 256 matching sockets are answered first and fanned out in chunks; publishes,
  // retries and a resuming client must still see each seq once, in order.
  const room = roomName("big");
  const N = 300, PUBLISHES = 20;
  const clients = [];
  try {
    for (let i = 0; i < N; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + 100); j++) {
        batch.push(w.connect(room, { token: tokenFor(`big${j}`, { rooms: [room] }) }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    const results = [];
    let resumed;
    for (let i = 0; i < PUBLISHES; i++) {
      results.push(w.publish(room, { type: "big.burst", data: { i } }));
      // A client resuming mid-burst, while chunks are still going out.
      if (i === PUBLISHES / 2) {
        await results[0];
        resumed = w.connect(room, { token: tokenFor("late", { rooms: [room] }), query: { since: "1" } });
      }
    }
    for (const r of await Promise.all(results)) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.broadcastCount >= N, true);
    }
    const want = Array.from({ length: PUBLISHES }, (_, i) => i + 1);
    const seen = await Promise.all(clients.map(async (c) => {
      const got = [];
      while (got.length < PUBLISHES) got.push((await c.next(20_000)).seq);
      return got;
    }));
    for (const got of seen) assert.deepEqual(got, want);
    const late = await resumed;
    const lateSeqs = [];
    while (lateSeqs.length < PUBLISHES - 1) lateSeqs.push((await late.next(20_000)).seq);
    assert.deepEqual(lateSeqs, want.slice(1), "the resumed client: 2..20, no gap, no duplicate");
    assert.equal(await late.quiet(300), true);
  } finally {
    for (const c of clients) { c.terminate(); w.sockets.delete(c); }
  }
});

test("100 concurrent publishes take 100 contiguous seqs, delivered in seq order", async () => {
  const room = roomName("seq");
  const c = await w.connect(room, { token: tokenFor("u1", { rooms: [room] }) });
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => w.publish(room, { type: "seq.test", data: { i } })),
  );
  for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
  const seqs = results.map((r) => r.body.seq);
  assert.equal(new Set(seqs).size, 100, "distinct seqs");
  assert.equal(Math.min(...seqs), 1);
  assert.equal(Math.max(...seqs) - Math.min(...seqs), 99);
  const got = [];
  for (let i = 0; i < 100; i++) got.push(await c.next());
  assert.deepEqual(got.map((f) => f.seq), Array.from({ length: 100 }, (_, i) => i + 1));
  // Each frame is the one its publish answered for.
  const idBySeq = new Map(results.map((r) => [r.body.seq, r.body.id]));
  for (const f of got) assert.equal(f.id, idBySeq.get(f.seq));
  assert.ok(await c.quiet(300));
  await c.close();
});

test("seq continues after the runtime restarts on the same storage", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-persist-"));
  const room = "user_persist";
  try {
    const first = await startWorker({ persist: dir });
    try {
      for (let i = 1; i <= 3; i++) {
        const r = await first.publish(room, { type: "persist.x", data: { i } });
        assert.equal(r.body.seq, i, JSON.stringify(r.body));
      }
    } finally {
      await first.stop();
    }
    const second = await startWorker({ persist: dir });
    try {
      const c = await second.connect(room, { token: tokenFor("persist") });
      assert.equal(c.hello.lastSeq, 3);
      const r = await second.publish(room, { type: "persist.x" });
      assert.equal(r.body.seq, 4, JSON.stringify(r.body));
      assert.equal((await c.next()).seq, 4);
      const c2 = await second.connect(room, { token: tokenFor("persist") });
      assert.equal(c2.hello.lastSeq, 4);
      const h = await second.history(room);
      assert.deepEqual(h.body.notifications.map((n) => n.seq), [1, 2, 3, 4]);
    } finally {
      await second.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
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

test("identity headers from a client are ignored: x-roomcast-sub cannot impersonate", async () => {
  const spoof = { "x-roomcast-sub": "admin", "x-roomcast-room": "user_admin", "x-roomcast-exp": "99999999999" };
  assertError(await refused("user_admin", { token: tokenFor("u1"), headers: spoof }), 403, "forbidden", "spoofed sub");

  // In its own room, a spoofed header does not change who the connection is: the ack is by u1.
  const c = await w.connect("user_u1", { token: tokenFor("u1"), headers: spoof });
  const r = await w.publish("user_u1", { type: "spoof.check", requiresAck: true });
  const f = await c.until((x) => x.id === r.body.id);
  c.send({ type: "ack", notificationId: f.id });
  // Frames are handled in order: once the pong is back, the ack has been processed.
  c.send({ type: "ping" });
  await c.until((x) => x.type === "pong");
  const h = await w.history("user_u1", `?since=${r.body.seq - 1}`);
  const n = h.body.notifications.find((x) => x.id === r.body.id);
  assert.equal(n.deliveryStatus, "acked");
  assert.equal(n.ackedBy, "u1");
  assert.match(n.ackedAt, ISO_Z);
  // Spoofed internal headers on publish do not change the notification either.
  const r2 = await w.publish("user_u1", { type: "real.type" },
    { "x-roomcast-type": "connected", "x-roomcast-id": "forged", "x-roomcast-ack": "1" });
  const f2 = await c.until((x) => x.id === r2.body.id);
  assert.equal(f2.type, "real.type");
  assert.equal(f2.requiresAck, false);
  assert.notEqual(r2.body.id, "forged");
  await c.close();
});
