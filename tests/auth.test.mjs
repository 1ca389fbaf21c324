// Who may do what, end to end against workerd: subscribe tokens (missing, expired, forged, other
// rooms, the rooms claim), the token checked before the upgrade, publish API keys, and identity
// headers a client cannot spoof.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { API_KEY, startWorker, tokenFor, signHs256, roomName } from "./support/harness.mjs";
import { ISO_Z, assertError, refusedUpgrade } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

/** Connects expecting the upgrade to be refused; returns { status, headers, body }. */
const refused = (room, opts) => refusedUpgrade(w, room, opts);

test("subscribe without Upgrade: 401 without a token, 426 with a valid one", async () => {
  assertError(await w.request("GET", "/rooms/user_u1/subscribe"), 401, "unauthorized", "no token");
  const headers = { authorization: `Bearer ${tokenFor("u1")}` };
  assertError(await w.request("GET", "/rooms/user_u1/subscribe", { headers }), 426, "upgrade_required", "token, no upgrade");
  // The token is checked before the upgrade: a forbidden room is 403, not 426.
  assertError(await w.request("GET", "/rooms/user_u2/subscribe", { headers }), 403, "forbidden", "other room, no upgrade");
});

test("the probe (subscribe without Upgrade) answers with CORS for a browser, ?token= included", async () => {
  // ALLOWED_ORIGINS is empty here: every origin may connect, so every origin may read the probe.
  const token = tokenFor("u1");
  const origin = "https://app.example";
  const ok = await w.request("GET", `/rooms/user_u1/subscribe?token=${token}`, { headers: { origin } });
  assertError(ok, 426, "upgrade_required", "would be accepted");
  assert.equal(ok.headers.get("access-control-allow-origin"), origin, "echoed, never *");
  assert.match(ok.headers.get("vary") ?? "", /Origin/);
  const bad = await w.request("GET", `/rooms/user_u1/subscribe?token=x.y.z`, { headers: { origin } });
  assertError(bad, 401, "unauthorized", "a refusal is readable too");
  assert.equal(bad.headers.get("access-control-allow-origin"), origin);
  const noOrigin = await w.request("GET", `/rooms/user_u1/subscribe?token=${token}`);
  assert.equal(noOrigin.headers.get("access-control-allow-origin"), null, "not a browser: no CORS");
});

test("the probe answers 429 with Retry-After where the upgrade would hit a connection limit", async () => {
  const limited = await startWorker({ bindings: { MAX_CONNECTIONS_PER_USER: "1" } });
  try {
    const room = roomName("probe");
    const token = tokenFor("solo", { rooms: [room] });
    assertError(await limited.request("GET", `/rooms/${room}/subscribe?token=${token}`), 426, "upgrade_required");
    const held = await limited.connect(room, { token });
    const full = await limited.request("GET", `/rooms/${room}/subscribe?token=${token}`);
    assertError(full, 429, "too_many_connections", "the room holds this user's one socket");
    assert.equal(full.headers.get("retry-after"), "30");
    await held.close();
    // The close reaches the room asynchronously: poll the probe until the slot is free.
    const deadline = Date.now() + 5000;
    let again;
    do {
      again = await limited.request("GET", `/rooms/${room}/subscribe?token=${token}`);
    } while (again.status === 429 && Date.now() < deadline && (await new Promise((r) => setTimeout(r, 50)), true));
    assertError(again, 426, "upgrade_required", "free again");
  } finally {
    await limited.stop();
  }
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
