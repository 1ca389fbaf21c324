// Security and abuse resistance (docs/protocol.md "Connecting", "Close codes", "Publishing",
// "Settings"): every bad input gets its exact status or close code, and then the room is shown
// to be unharmed: a good client in the same room still receives a publish, and the room's
// durable log is exactly what it was before the bad input (same lastSeq, same entries).
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { generateKeyPairSync } from "node:crypto";
import {
  startWorker, tokenFor, signHs256, roomName, API_KEY, JWT_SECRET, signJwt,
} from "./support/harness.mjs";
import { closeFrame } from "./support/checks.mjs";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const nowS = () => Math.floor(Date.now() / 1000);

/** Every error body must have the protocol's shape and the expected code. */
function assertError(res, status, code) {
  assert.equal(res.status, status, JSON.stringify(res.body));
  assert.equal(res.body?.success, false, JSON.stringify(res.body));
  assert.equal(res.body?.error?.code, code, JSON.stringify(res.body));
  assert.equal(typeof res.body.error.message, "string");
}

/** A refused upgrade: the rejection of `w.connect`, with its status and error code. */
async function refused(promise, status, code) {
  const err = await promise.then(
    (c) => { c.terminate(); assert.fail(`upgrade was accepted, expected ${status} ${code}`); },
    (e) => e,
  );
  assert.equal(err.status, status, `${err.message} ${JSON.stringify(err.body)}`);
  assert.equal(err.body?.error?.code, code, JSON.stringify(err.body));
  return err;
}

/** The room's log as history shows it (by API key). */
async function snapshot(w, room) {
  const h = await w.history(room, "?limit=1000");
  assert.equal(h.status, 200, JSON.stringify(h.body));
  return { lastSeq: h.body.lastSeq, ids: h.body.notifications.map((n) => `${n.seq}:${n.id}:${n.deliveryStatus}`) };
}

let probes = 0;
/**
 * The room is unharmed: its log equals `before`, and a publish made now takes the next seq and
 * reaches `good`.
 */
async function assertIntact(w, room, good, before) {
  assert.deepEqual(await snapshot(w, room), before, "the room's log changed");
  const r = await w.publish(room, { type: "probe.after", data: { n: ++probes } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.seq, before.lastSeq + 1);
  const f = await good.until((f) => f.type === "probe.after" && f.id === r.body.id);
  assert.equal(f.seq, r.body.seq);
  assert.equal(f.data.n, probes);
}

/** Sends a JSON ping and awaits the pong: every frame sent before it has been processed. */
async function roundTrip(c) {
  c.send({ type: "ping" });
  const f = await c.until((f) => f?.type === "pong");
  assert.equal(f.type, "pong");
}

/** Awaits a close, bounded. */
async function closedWith(c, ms = 5000) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`no close within ${ms} ms`)), ms); });
  try { return await Promise.race([c.closed, timeout]); } finally { clearTimeout(t); }
}

/** Every response body seen is collected and checked for secrets at the end of each suite. */
function leakChecker() {
  const seen = [];
  return {
    /** `presented`: credentials sent with this request, which its answer must not echo either. */
    add(what, res, presented = []) {
      seen.push([what, typeof res.body === "string" ? res.body : JSON.stringify(res.body ?? ""), presented]);
    },
    check(secrets) {
      assert.ok(seen.length >= 5, "collected some error bodies");
      for (const [what, body, presented] of seen) {
        for (const s of [...secrets, ...presented].filter(Boolean)) {
          assert.ok(!body.includes(s), `${what}: body contains a secret/token: ${body}`);
          // Nor any sizeable piece of it (e.g. a token's signature or payload part).
          for (const part of s.split(".").filter((p) => p.length >= 16)) {
            assert.ok(!body.includes(part), `${what}: body contains part of a secret/token: ${body}`);
          }
        }
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
describe("client tokens (HS256, iss/aud, origins, spoofed identity headers)", () => {
  const ISS = "https://issuer.example";
  const AUD = "roomcast-test";
  const ORIGIN = "https://app.example";
  let w;
  const leaks = leakChecker();
  const tok = (sub, opts = {}) => tokenFor(sub, { iss: ISS, aud: AUD, ...opts });
  const claims = (sub, extra = {}) => ({ sub, iss: ISS, aud: AUD, iat: nowS(), exp: nowS() + 600, ...extra });

  before(async () => {
    w = await startWorker({ bindings: { JWT_ISSUER: ISS, JWT_AUDIENCE: AUD, ALLOWED_ORIGINS: ORIGIN } });
  });
  after(async () => { await w?.stop(); });

  /** A fresh user room with a good client in it and a snapshot of its log (one publish in it). */
  async function setup() {
    const sub = roomName("u");
    const room = `user_${sub}`;
    const good = await w.connect(room, { token: tok(sub) });
    const r = await w.publish(room, { type: "probe.before" });
    assert.equal(r.status, 200);
    await good.until((f) => f.type === "probe.before");
    return { sub, room, good, before: await snapshot(w, room) };
  }

  /** Subscribing with `token` (header and query) is refused with `status code`; the room is fine. */
  async function refusedToken(name, token, status, code) {
    const { room, good, before } = await setup();
    const viaHeader = await refused(w.connect(room, { token }), status, code);
    leaks.add(name, viaHeader, [token]);
    await refused(w.connect(room, { token, viaQuery: true }), status, code);
    // History with the same token is refused the same way (it takes tokens too).
    const h = await w.request("GET", `/rooms/${room}/history`, { headers: { authorization: `Bearer ${token}` } });
    assertError(h, status, code);
    leaks.add(`${name} (history)`, h, [token]);
    await assertIntact(w, room, good, before);
    return viaHeader;
  }

  test("a good token subscribes (control)", async () => {
    const { room, good, before } = await setup();
    assert.equal(good.hello.roomId, room);
    await assertIntact(w, room, good, before);
  });

  test("missing token: 401", async () => {
    const { room, good, before } = await setup();
    const r = await refused(w.connect(room, { token: null }), 401, "unauthorized");
    assert.match(r.body.error.message, /missing token/);
    for (const authorization of ["Bearer", "Bearer ", "Basic dTE6cHc=", "bearer\t", "Token abc"]) {
      await refused(w.connect(room, { token: null, headers: { authorization } }), 401, "unauthorized");
    }
    await assertIntact(w, room, good, before);
  });

  test("expired token: 401 (exp beyond the 5 s leeway); within the leeway still accepted", async () => {
    const sub = roomName("u");
    await refusedToken("expired", tok(sub, { ttl: -60 }), 401, "unauthorized");
    const { room, good, before } = await setup();
    const r = await refused(w.connect(room, { token: signHs256(claims("x", { exp: nowS() - 10 })) }), 401, "unauthorized");
    assert.match(r.body.error.message, /expired/);
    await assertIntact(w, room, good, before);
    // exp 2 s ago is inside the leeway: a user whose clock is slightly off still gets in.
    const sub2 = roomName("u");
    const c = await w.connect(`user_${sub2}`, { token: signHs256(claims(sub2, { exp: nowS() - 2 })) });
    assert.equal(c.hello.type, "connected");
    c.terminate();
  });

  test("not-yet-valid token (nbf beyond the leeway): 401; nbf within the leeway accepted", async () => {
    const { room, sub, good, before } = await setup();
    const r = await refused(w.connect(room, { token: signHs256(claims(sub, { nbf: nowS() + 60 })) }), 401, "unauthorized");
    assert.match(r.body.error.message, /nbf/);
    await assertIntact(w, room, good, before);
    const sub2 = roomName("u");
    const c = await w.connect(`user_${sub2}`, { token: signHs256(claims(sub2, { nbf: nowS() + 2 })) });
    assert.equal(c.hello.type, "connected");
    c.terminate();
  });

  test("wrongly signed or tampered token: 401", async () => {
    const sub = roomName("u");
    await refusedToken("wrong secret", signHs256(claims(sub), "not-the-secret"), 401, "unauthorized");
    // A valid token whose payload is swapped for another user's: the signature no longer fits.
    const good = signHs256(claims("someone-else"));
    const [h, , s] = good.split(".");
    const tampered = `${h}.${b64url(claims(sub))}.${s}`;
    await refusedToken("tampered payload", tampered, 401, "unauthorized");
    // Signature stripped; signature truncated.
    await refusedToken("stripped signature", `${h}.${b64url(claims(sub))}.`, 401, "unauthorized");
    const mine = signHs256(claims(sub));
    await refusedToken("truncated signature", mine.slice(0, -4), 401, "unauthorized");
  });

  test("alg none (any spelling), and unsupported algorithms: 401", async () => {
    const sub = roomName("u");
    for (const alg of ["none", "None", "NONE", "nOnE"]) {
      const unsigned = `${b64url({ alg, typ: "JWT" })}.${b64url(claims(sub))}.`;
      await refusedToken(`alg ${alg}`, unsigned, 401, "unauthorized");
    }
    // alg none carrying a real HS256 signature.
    const real = signHs256(claims(sub)).split(".")[2];
    await refusedToken("alg none + signature", `${b64url({ alg: "none" })}.${b64url(claims(sub))}.${real}`, 401, "unauthorized");
    // HS384/HS512 signed with the right secret are still not an accepted algorithm.
    const { createHmac } = await import("node:crypto");
    for (const [alg, hash] of [["HS384", "sha384"], ["HS512", "sha512"]]) {
      const hp = `${b64url({ alg, typ: "JWT" })}.${b64url(claims(sub))}`;
      const sig = createHmac(hash, JWT_SECRET).update(hp).digest("base64url");
      await refusedToken(alg, `${hp}.${sig}`, 401, "unauthorized");
    }
    // An unknown `crit` extension must be refused even when correctly signed.
    await refusedToken("crit", signHs256(claims(sub), JWT_SECRET, { alg: "HS256", crit: ["x-custom"], "x-custom": 1 }), 401, "unauthorized");
  });

  test("malformed tokens and bad claims: 401", async () => {
    const sub = roomName("u");
    const cases = {
      "not a jwt": "hello",
      "two parts": `${b64url({ alg: "HS256" })}.${b64url(claims(sub))}`,
      "four parts": `${signHs256(claims(sub))}.xx`,
      "bad base64": "!!!.???.***",
      "header not json": `${b64url("nope")}.${b64url(claims(sub))}.abc`,
      "no sub": signHs256({ exp: nowS() + 600, iss: ISS, aud: AUD }),
      "empty sub": signHs256(claims("")),
      "numeric sub": signHs256(claims(42)),
      "no exp": signHs256({ sub, iss: ISS, aud: AUD }),
      "string exp": signHs256(claims(sub, { exp: String(nowS() + 600) })),
      "rooms not an array": signHs256(claims(sub, { rooms: "user_x" })),
      "payload not an object": signHs256([sub]),
      "oversized (17 KiB)": signHs256(claims(sub, { pad: "a".repeat(17 * 1024) })),
    };
    for (const [name, token] of Object.entries(cases)) {
      await refusedToken(name, token, 401, "unauthorized");
    }
  });

  test("a token with a far-future exp subscribes and stays usable (no overflow, no 500)", async () => {
    for (const exp of [99999999999999, 9007199254740991, 1e300]) {
      const { room, sub, good, before } = await setup();
      const c = await w.connect(room, { token: signHs256(claims(sub, { exp })) });
      assert.equal(c.hello.type, "connected", String(exp));
      await assertIntact(w, room, c, before);
      c.terminate();
      good.terminate();
    }
  });

  test("wrong iss / aud: 401; missing iss / aud: 401; aud as an array containing ours: ok", async () => {
    const sub = roomName("u");
    await refusedToken("wrong iss", signHs256(claims(sub, { iss: "https://evil.example" })), 401, "unauthorized");
    await refusedToken("wrong aud", signHs256(claims(sub, { aud: "someone-else" })), 401, "unauthorized");
    await refusedToken("aud array without ours", signHs256(claims(sub, { aud: ["a", "b"] })), 401, "unauthorized");
    const { iss, ...noIss } = claims(sub);
    const { aud, ...noAud } = claims(sub);
    await refusedToken("missing iss", signHs256(noIss), 401, "unauthorized");
    await refusedToken("missing aud", signHs256(noAud), 401, "unauthorized");
    const c = await w.connect(`user_${sub}`, { token: signHs256(claims(sub, { aud: ["other", AUD] })) });
    assert.equal(c.hello.type, "connected");
    c.terminate();
  });

  test("another user's room, or a room outside the `rooms` claim: 403", async () => {
    const { room, good, before } = await setup();
    const r = await refused(w.connect(room, { token: tok("intruder") }), 403, "forbidden");
    leaks.add("other user", r, [tok("intruder")]);
    await refused(w.connect(room, { token: tok("intruder", { rooms: ["user_other", "team_*"] }) }), 403, "forbidden");
    // `user_` prefix tricks: the sub is compared exactly.
    await refused(w.connect(room, { token: tok(room.slice("user_".length, -1)) }), 403, "forbidden");
    // A `*` that is not the last character is literal and matches nothing.
    await refused(w.connect(room, { token: tok("intruder", { rooms: ["user_*x"] }) }), 403, "forbidden");
    const h = await w.request("GET", `/rooms/${room}/history`, { headers: { authorization: `Bearer ${tok("intruder")}` } });
    assertError(h, 403, "forbidden");
    await assertIntact(w, room, good, before);
  });

  test("spoofed identity headers change nothing", async () => {
    const u1 = roomName("u1");
    const u2 = roomName("u2");
    const spoof = { "x-roomcast-sub": u2, "x-roomcast-room": `user_${u2}`, "x-roomcast-exp": "99999999999" };

    // u1's token with x-roomcast-sub: u2 on user_u2 is still 403.
    const good2 = await w.connect(`user_${u2}`, { token: tok(u2) });
    const before2 = await snapshot(w, `user_${u2}`);
    await refused(w.connect(`user_${u2}`, { token: tok(u1), headers: spoof }), 403, "forbidden");
    await assertIntact(w, `user_${u2}`, good2, before2);

    // On user_u1 it connects as u1, in user_u1, and an ack is recorded as u1's.
    const c = await w.connect(`user_${u1}`, { token: tok(u1), headers: spoof });
    assert.equal(c.hello.roomId, `user_${u1}`);
    const p = await w.publish(`user_${u1}`, { type: "needs.ack", requiresAck: true });
    assert.equal(p.status, 200);
    const f = await c.until((f) => f.id === p.body.id);
    c.send({ type: "ack", notificationId: f.id });
    await roundTrip(c);
    const h = await w.history(`user_${u1}`);
    const e = h.body.notifications.find((n) => n.id === p.body.id);
    assert.equal(e.deliveryStatus, "acked");
    assert.equal(e.ackedBy, u1);
    // The spoofed room header did not route the publish elsewhere.
    assert.equal((await snapshot(w, `user_${u2}`)).lastSeq, before2.lastSeq + 1, "only the probe");
    c.terminate();
    good2.terminate();
  });

  test("internal call fields in a client's query string change nothing", async () => {
    // The Worker writes a room's call into the internal URL (internal.rs); nothing of the
    // client's query is carried over, so these names are just unknown parameters.
    const u1 = roomName("u1");
    const u2 = roomName("u2");
    // (`types`, `since` and `token` are real subscribe parameters, so they are not among them.)
    const spoof = { call: "health", room: `user_${u2}`, sub: u2, exp: "99999999999", id: "forged", ack: "1", key: "k" };
    const good2 = await w.connect(`user_${u2}`, { token: tok(u2) });
    const before2 = await snapshot(w, `user_${u2}`);
    await refused(w.connect(`user_${u2}`, { token: tok(u1), query: spoof }), 403, "forbidden");
    const c = await w.connect(`user_${u1}`, { token: tok(u1), query: spoof, viaQuery: true });
    assert.equal(c.hello.roomId, `user_${u1}`);
    const r = await w.request("POST", `/rooms/user_${u1}/broadcast?${new URLSearchParams({ ...spoof, type: "connected", status: "bogus" })}`, {
      headers: { authorization: `Bearer ${API_KEY}` },
      body: { type: "real.type", requiresAck: true },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    // The frame is the real one: none of the spoofed fields reached the room.
    const f = await c.until((f) => f.id === r.body.id);
    assert.deepEqual([f.type, f.requiresAck, f.status], ["real.type", true, "success"]);
    c.send({ type: "ack", notificationId: f.id });
    await roundTrip(c);
    const e = (await w.history(`user_${u1}`)).body.notifications.find((n) => n.id === f.id);
    assert.equal(e.ackedBy, u1);
    await assertIntact(w, `user_${u2}`, good2, before2);
    c.terminate();
    good2.terminate();
  });

  test("spoofed internal headers on publish and history change nothing", async () => {
    const { room, good, before } = await setup();
    const other = roomName("r");
    const r = await w.publish(room, { type: "real.type", id: `real-${probes}` }, {
      "x-roomcast-room": other, "x-roomcast-type": "connected", "x-roomcast-id": "spoofed-id",
      "x-roomcast-ack": "1", "x-roomcast-status": "bogus", "x-roomcast-key": "k",
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.id, `real-${probes}`);
    const f = await good.until((f) => f.id === r.body.id);
    assert.deepEqual([f.type, f.requiresAck, f.status], ["real.type", false, "success"]);
    const h = await w.request("GET", `/rooms/${room}/history`, {
      headers: { authorization: `Bearer ${API_KEY}`, "x-roomcast-limit": "1", "x-roomcast-since": "999", "x-roomcast-room": other },
    });
    assert.equal(h.body.roomId, room);
    assert.equal(h.body.notifications.length, before.ids.length + 1);
    assert.equal((await snapshot(w, other)).lastSeq, 0, "nothing reached the other room");
  });

  test("Origin outside ALLOWED_ORIGINS: 403; a listed origin and no Origin: ok", async () => {
    const { room, sub, good, before } = await setup();
    for (const origin of ["https://evil.example", "https://app.example.evil.example", "http://app.example", "null", "https://app.example:8443"]) {
      const r = await refused(w.connect(room, { token: tok(sub), headers: { origin } }), 403, "origin_not_allowed");
      leaks.add(`origin ${origin}`, r);
    }
    await assertIntact(w, room, good, before);
    const ok = await w.connect(room, { token: tok(sub), headers: { origin: ORIGIN } });
    assert.equal(ok.hello.type, "connected");
    ok.terminate();
    // `good` itself had no Origin header: a backend or native client.
  });

  test("a token that expires while connected is closed with 4001 at exp + leeway", async () => {
    const { room, sub, good, before } = await setup();
    const exp = nowS() + 1;
    // A spoofed far-future x-roomcast-exp must not extend the socket's life.
    const c = await w.connect(room, {
      token: signHs256(claims(sub, { exp })), headers: { "x-roomcast-exp": "99999999999" },
    });
    assert.equal(c.hello.type, "connected");
    const { code, reason } = await closedWith({ closed: closeFrame(c) }, 10_000);
    assert.equal(code, 4001, reason);
    const late = Date.now() - (exp + 5) * 1000;
    assert.ok(late >= -1000 && late < 3000, `closed ${late} ms after exp + leeway`);
    await assertIntact(w, room, good, before);
  });

  test("CORS: allowed origin on reading routes only, never a wildcard", async () => {
    const room = roomName("r");
    const pre = await w.request("OPTIONS", `/rooms/${room}/history`, {
      headers: { origin: ORIGIN, "access-control-request-method": "GET", "access-control-request-headers": "authorization" },
    });
    assert.equal(pre.status, 204);
    assert.equal(pre.headers.get("access-control-allow-origin"), ORIGIN);
    assert.match(pre.headers.get("allow"), /GET/);
    const cases = [
      ["OPTIONS", `/rooms/${room}/broadcast`, ORIGIN, null],
      ["OPTIONS", "/broadcast", ORIGIN, null],
      ["OPTIONS", `/rooms/${room}/history`, "https://evil.example", null],
      ["GET", `/rooms/${room}/history`, "https://evil.example", null],
      ["GET", `/rooms/${room}/health`, ORIGIN, ORIGIN],
      ["GET", "/healthz", ORIGIN, ORIGIN],
      ["GET", "/healthz", "https://evil.example", null],
    ];
    for (const [method, path, origin, want] of cases) {
      const r = await w.request(method, path, { headers: { origin } });
      assert.equal(r.headers.get("access-control-allow-origin"), want, `${method} ${path} from ${origin}`);
    }
    // A real publish from an allowed origin: still no CORS headers.
    const p = await w.publish(room, { type: "x" }, { origin: ORIGIN });
    assert.equal(p.status, 200);
    assert.equal(p.headers.get("access-control-allow-origin"), null);
    // History by key from an allowed origin gets them; errors too (so the page can read them).
    const h = await w.request("GET", `/rooms/${room}/history`, { headers: { origin: ORIGIN, authorization: `Bearer ${API_KEY}` } });
    assert.equal(h.headers.get("access-control-allow-origin"), ORIGIN);
  });

  test("an API key is accepted only in the Authorization header, never in the URL", async () => {
    const { room, good, before } = await setup();
    const r = await w.request("GET", `/rooms/${room}/history?token=${encodeURIComponent(API_KEY)}`);
    assertError(r, 401, "unauthorized");
    leaks.add("key in query", r);
    await assertIntact(w, room, good, before);
  });

  test("no error body contains a secret, key or presented token", () => {
    leaks.check([JWT_SECRET, API_KEY]);
  });
});

// ---------------------------------------------------------------------------------------------
describe("algorithm confusion against a JWKS-only worker", () => {
  let w;
  const { publicKey, privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = { ...publicKey.export({ format: "jwk" }), kid: "k1", use: "sig" };
  const jwks = JSON.stringify({ keys: [jwk] });
  const pem = publicKey.export({ format: "pem", type: "spki" });
  const pkcs1 = publicKey.export({ format: "pem", type: "pkcs1" });
  const claims = (sub) => ({ sub, iat: nowS(), exp: nowS() + 600 });

  before(async () => { w = await startWorker({ bindings: { JWT_SECRET: undefined, JWT_JWKS: jwks } }); });
  after(async () => { await w?.stop(); });

  test("HS256 tokens keyed with the RSA public key (PEM, JWK JSON, JWKS text): 401", async () => {
    const sub = roomName("u");
    const room = `user_${sub}`;
    const good = await w.connect(room, { token: signJwt(claims(sub), privateKey, { alg: "RS256", kid: "k1" }) });
    assert.equal(good.hello.type, "connected");
    const before = await snapshot(w, room);
    const hmacKeys = { pem, pkcs1, "pem without newline": pem.trimEnd(), "jwk json": JSON.stringify(jwk), jwks, "n member": jwk.n };
    for (const [name, key] of Object.entries(hmacKeys)) {
      for (const header of [{ alg: "HS256" }, { alg: "HS256", kid: "k1" }]) {
        const r = await refused(w.connect(room, { token: signHs256(claims(sub), key, header) }), 401, "unauthorized");
        assert.match(r.body.error.message, /algorithm/, name);
      }
    }
    // RS256 header but an HMAC signature made with the public key.
    const { createHmac } = await import("node:crypto");
    const hp = `${b64url({ alg: "RS256", kid: "k1" })}.${b64url(claims(sub))}`;
    const forged = `${hp}.${createHmac("sha256", pem).update(hp).digest("base64url")}`;
    await refused(w.connect(room, { token: forged }), 401, "unauthorized");
    await assertIntact(w, room, good, before);
    good.terminate();
  });
});

// ---------------------------------------------------------------------------------------------
describe("publishing and socket abuse (keys, sizes, bodies, floods, limits)", () => {
  const NEW_KEY = "rotated-new-key-6c1f0e";
  const MAX = 2048;
  const ORIGIN = "https://app.example";
  let w;
  const leaks = leakChecker();

  before(async () => {
    w = await startWorker({
      bindings: {
        BROADCAST_API_KEYS: `${API_KEY},${NEW_KEY}`,
        MAX_MESSAGE_BYTES: String(MAX),
        RATE_LIMIT_PER_MINUTE: "20",
        MAX_CONNECTIONS_PER_ROOM: "3",
        MAX_CONNECTIONS_PER_USER: "2",
        ALLOWED_ORIGINS: ORIGIN,
      },
    });
  });
  after(async () => { await w?.stop(); });

  async function setup() {
    const room = roomName("r");
    const good = await w.connect(room, { token: tokenFor("good", { rooms: [room] }) });
    const r = await w.publish(room, { type: "probe.before" });
    assert.equal(r.status, 200);
    await good.until((f) => f.type === "probe.before");
    return { room, good, before: await snapshot(w, room) };
  }

  const post = (room, body, headers = {}) =>
    w.request("POST", `/rooms/${room}/broadcast`, { body, raw: true, headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", ...headers } });

  /** A publish body of exactly `n` bytes. */
  function bodyOfSize(n) {
    const base = JSON.stringify({ type: "size.test", data: { pad: "" } });
    const body = JSON.stringify({ type: "size.test", data: { pad: "x".repeat(n - base.length) } });
    assert.equal(Buffer.byteLength(body), n);
    return body;
  }

  test("publish keys: missing and wrong are 401; both rotated keys work; a third does not", async () => {
    const { room, good, before } = await setup();
    const body = JSON.stringify({ type: "key.test" });
    const bad = {
      missing: {},
      "empty bearer": { authorization: "Bearer " },
      "wrong key": { authorization: "Bearer third-key" },
      "prefix of a key": { authorization: `Bearer ${NEW_KEY.slice(0, -1)}` },
      "key plus suffix": { authorization: `Bearer ${NEW_KEY}x` },
      "both keys joined": { authorization: `Bearer ${API_KEY},${NEW_KEY}` },
      "basic scheme": { authorization: `Basic ${Buffer.from(`x:${NEW_KEY}`).toString("base64")}` },
      "key without scheme": { authorization: NEW_KEY },
      "JWT secret as key": { authorization: `Bearer ${JWT_SECRET}` },
      "a client token as key": { authorization: `Bearer ${tokenFor("good", { rooms: [room] })}` },
    };
    for (const [name, headers] of Object.entries(bad)) {
      const r = await w.request("POST", `/rooms/${room}/broadcast`, { body, raw: true, headers: { "content-type": "application/json", ...headers } });
      assertError(r, 401, "unauthorized");
      leaks.add(`publish ${name}`, r, headers.authorization ? [headers.authorization.replace(/^\S+\s+/, "")] : []);
      const b = await w.request("POST", "/broadcast", { body: { userId: "x", message: { type: "t" } }, headers });
      assertError(b, 401, "unauthorized");
      const h = await w.request("GET", `/rooms/${room}/health`, { headers });
      if (headers.authorization !== undefined) assertError(h, 401, "unauthorized");
      else assert.deepEqual(h.body, { ok: true, roomId: room }, "anonymous health is minimal");
    }
    await assertIntact(w, room, good, before);
    for (const key of [API_KEY, NEW_KEY]) {
      const r = await post(room, body, { authorization: `Bearer ${key}` });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      await good.until((f) => f.id === r.body.id);
    }
  });

  test("body of exactly MAX_MESSAGE_BYTES is accepted; +1 is 413 (with and without Content-Length)", async () => {
    const { room, good, before } = await setup();
    const over = await post(room, bodyOfSize(MAX + 1));
    assertError(over, 413, "payload_too_large");
    // Chunked, so no Content-Length: the size is checked on the bytes read.
    const chunked = await new Promise((resolve, reject) => {
      const u = new URL(`${w.base}/rooms/${room}/broadcast`);
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: "POST",
        headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json", "transfer-encoding": "chunked" } }, (res) => {
        let data = "";
        res.on("data", (d) => (data += d));
        res.on("end", () => resolve({ status: res.statusCode, body: JSON.parse(data) }));
      });
      req.on("error", reject);
      const body = bodyOfSize(MAX + 1);
      req.write(body.slice(0, 1000));
      req.end(body.slice(1000));
    });
    assertError(chunked, 413, "payload_too_large");
    const huge = await post(room, bodyOfSize(MAX * 50));
    assertError(huge, 413, "payload_too_large");
    await assertIntact(w, room, good, before);
    const exact = await post(room, bodyOfSize(MAX));
    assert.equal(exact.status, 200, JSON.stringify(exact.body));
    const f = await good.until((f) => f.id === exact.body.id);
    assert.equal(f.data.pad.length, MAX - JSON.stringify({ type: "size.test", data: { pad: "" } }).length);
  });

  test("malformed JSON, missing type, reserved type, bad fields: 400 with the right code", async () => {
    const { room, good, before } = await setup();
    const cases = [
      ["{", "invalid_json"],
      ["", "invalid_json"],
      ['{"type":"x"', "invalid_json"],
      ['{"type":"x"} trailing', "invalid_json"],
      [Buffer.from([0xff, 0xfe, 0x7b]), "invalid_json"],
      ["null", "invalid_body"],
      ["[]", "invalid_body"],
      ['"note.created"', "invalid_body"],
      ["{}", "invalid_body"],
      ['{"data":{}}', "invalid_body"],
      ['{"type":""}', "invalid_body"],
      ['{"type":"a b"}', "invalid_body"],
      [`{"type":"${"a".repeat(129)}"}`, "invalid_body"],
      ['{"type":"x","data":[1]}', "invalid_body"],
      ['{"type":"x","status":"done"}', "invalid_body"],
      ['{"type":"x","unknownField":1}', "invalid_body"],
      ['{"type":"x","__proto__":{"admin":true}}', "invalid_body"],
      ['{"type":"x","id":""}', "invalid_body"],
      ['{"type":"x","timestamp":"not a date"}', "invalid_body"],
      // Valid RFC 3339, but year 10000 in UTC: no four-digit form a JavaScript Date can read.
      ['{"type":"x","timestamp":"9999-12-31T23:59:59-23:59"}', "invalid_body"],
      ...["connected", "ping", "pong", "ack", "subscribe", "unsubscribe", "subscribed", "error"].map((t) => [`{"type":"${t}"}`, "reserved_type"]),
    ];
    for (const [body, code] of cases) {
      const r = await post(room, body);
      assertError(r, 400, code);
      leaks.add(`body ${String(body).slice(0, 20)}`, r);
    }
    for (const key of ["", " ", "has space", "x".repeat(129), "tab\there", "é"]) {
      const r = await post(room, '{"type":"idem.test"}', { "idempotency-key": key });
      assertError(r, 400, "invalid_body");
    }
    const b = await w.request("POST", "/broadcast", { body: { userId: "x/../y", message: { type: "t" } }, headers: { authorization: `Bearer ${API_KEY}` } });
    assertError(b, 400, "invalid_body");
    const b2 = await w.request("POST", "/broadcast", { body: { userId: "u", message: { type: "connected" } }, headers: { authorization: `Bearer ${API_KEY}` } });
    assertError(b2, 400, "reserved_type");
    await assertIntact(w, room, good, before);
    // Not an attack but a parser question: with a duplicate key the last one wins, as in
    // JSON.parse, so a JavaScript publisher and the service read the same body.
    const dup = await post(room, '{"type":"dup.first","type":"dup.last"}');
    assert.equal(dup.status, 200, JSON.stringify(dup.body));
    assert.equal((await good.until((f) => f.id === dup.body.id)).type, "dup.last");
  });

  test("wrong or missing content type: 415", async () => {
    const { room, good, before } = await setup();
    const body = JSON.stringify({ type: "ct.test" });
    for (const ct of ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/jsonx", "application/json-patch+json", "json"]) {
      assertError(await post(room, body, { "content-type": ct }), 415, "unsupported_media_type");
    }
    // No Content-Type at all (a byte body makes fetch send none).
    const none = await w.request("POST", `/rooms/${room}/broadcast`, { body: Buffer.from(body), raw: true, headers: { authorization: `Bearer ${API_KEY}` } });
    assertError(none, 415, "unsupported_media_type");
    await assertIntact(w, room, good, before);
    for (const ct of ["application/json; charset=utf-8", "Application/JSON"]) {
      const r = await post(room, body, { "content-type": ct });
      assert.equal(r.status, 200, `${ct}: ${JSON.stringify(r.body)}`);
      await good.until((f) => f.id === r.body.id);
    }
  });

  test("invalid room ids and unknown routes never reach a room", async () => {
    const { room, good, before } = await setup();
    // (`..` and `%2e%2e` are normalised away by URL parsing before any request is made.)
    for (const bad of ["%2F", "a%2Fb", "_x", "-x", "a%20b", "a%00b", "%E2%80%AE", "a".repeat(129), `${room}%2Fx`]) {
      assertError(await post(bad, JSON.stringify({ type: "x" })), 400, "invalid_room_id");
      await refused(w.connect(bad, { token: tokenFor("good", { rooms: ["*"] }) }), 400, "invalid_room_id");
    }
    assertError(await w.request("PUT", `/rooms/${room}/broadcast`, { body: { type: "x" } }), 405, "method_not_allowed");
    assertError(await w.request("POST", "/publish", { body: { type: "x" } }), 404, "not_found");
    // Token minting exists only with DEV_MODE on; here it is off, so the route does not exist.
    assertError(await w.request("POST", "/dev/token", { body: { sub: "admin", rooms: ["*"] } }), 404, "not_found");
    assertError(await w.request("POST", `/rooms/${room}/publish`, { body: { type: "x" } }), 404, "not_found");
    assertError(await w.request("GET", `/rooms/${room}/subscribe`, { headers: { authorization: `Bearer ${tokenFor("good", { rooms: [room] })}` } }), 426, "upgrade_required");
    await assertIntact(w, room, good, before);
  });

  test("a frame over MAX_MESSAGE_BYTES closes with 1009; exactly MAX is processed", async () => {
    const { room, good, before } = await setup();
    const c = await w.connect(room, { token: tokenFor("flooder", { rooms: [room] }) });
    const ping = JSON.stringify({ type: "ping" });
    c.send(ping + " ".repeat(MAX - ping.length));
    assert.equal((await c.next()).type, "pong", "a frame of exactly MAX_MESSAGE_BYTES is processed");
    c.send(ping + " ".repeat(MAX + 1 - ping.length));
    assert.equal((await closedWith(c)).code, 1009);
    // Binary too.
    const c2 = await w.connect(room, { token: tokenFor("flooder2", { rooms: [room] }) });
    c2.ws.send(Buffer.alloc(MAX + 1));
    assert.equal((await closedWith(c2)).code, 1009);
    await assertIntact(w, room, good, before);
  });

  test("frame flood: beyond RATE_LIMIT_PER_MINUTE frames get rate_limited, the 10th refused closes 4002", async () => {
    const { room, good, before } = await setup();
    const c = await w.connect(room, { token: tokenFor("flooder", { rooms: [room] }) });
    for (let i = 0; i < 40; i++) c.send({ type: "ping" });
    const { code } = await closedWith(c);
    assert.equal(code, 4002);
    const kinds = c.frames.map((f) => (f.type === "error" ? f.code : f.type));
    assert.deepEqual(kinds, [...Array(20).fill("pong"), ...Array(9).fill("rate_limited")]);
    // Text `ping` is answered by the runtime without waking the room; it is not what is limited.
    await assertIntact(w, room, good, before);
  });

  test("garbage flood: the 10th invalid frame within 60 s closes 4003 (non-JSON, binary, wrong shapes)", async () => {
    const { room, good, before } = await setup();
    const c = await w.connect(room, { token: tokenFor("garbage", { rooms: [room] }) });
    const garbage = ["not json", Buffer.from([0, 1, 2, 255]), "{", "[]", "null", '{"type":"hello"}', '{"type":"ack"}',
      '{"type":"subscribe","data":{"types":["a b"]}}', '{"type":"publish","data":{"type":"x"}}', Buffer.from('{"type":"ping"}')];
    for (const g of garbage) c.ws.send(g);
    const { code } = await closedWith(c);
    assert.equal(code, 4003);
    const errors = c.frames.filter((f) => f.type === "error");
    assert.equal(errors.length, 10, JSON.stringify(c.frames));
    assert.ok(errors.every((e) => e.code === "invalid_message"), JSON.stringify(errors));
    // Valid frames in between reset nothing: invalid ones still count.
    const c2 = await w.connect(room, { token: tokenFor("garbage2", { rooms: [room] }) });
    for (let i = 0; i < 9; i++) {
      c2.send("x");
      c2.send({ type: "ping" });
      const pong = await c2.until((f) => f.type === "pong");
      assert.deepEqual(pong.skipped.map((f) => f.code), ["invalid_message"]);
    }
    c2.send("x");
    assert.equal((await closedWith(c2)).code, 4003);
    await assertIntact(w, room, good, before);
  });

  test("a full room: the 4th upgrade is 429 with Retry-After", async () => {
    const { room, good, before } = await setup();
    const others = [];
    for (const sub of ["a", "b"]) others.push(await w.connect(room, { token: tokenFor(sub, { rooms: [room] }) }));
    const r = await refused(w.connect(room, { token: tokenFor("d", { rooms: [room] }) }), 429, "room_full");
    assert.match(String(r.headers["retry-after"]), /^\d+$/);
    await assertIntact(w, room, good, before);
    for (const o of others) o.terminate();
  });

  test("per-user limit: the 3rd socket of one sub is 429 with Retry-After; another sub still fits", async () => {
    const room = roomName("r");
    const t = tokenFor("same", { rooms: [room] });
    const good = await w.connect(room, { token: t });
    const second = await w.connect(room, { token: t });
    const before = await snapshot(w, room);
    const r = await refused(w.connect(room, { token: t }), 429, "too_many_connections");
    assert.match(String(r.headers["retry-after"]), /^\d+$/);
    // A different token of the same sub counts as the same user.
    await refused(w.connect(room, { token: tokenFor("same", { rooms: [room], ttl: 99 }) }), 429, "too_many_connections");
    const other = await w.connect(room, { token: tokenFor("different", { rooms: [room] }) });
    assert.equal(other.hello.type, "connected");
    await assertIntact(w, room, good, before);
    second.terminate();
    other.terminate();
  });

  test("no error body contains a secret, key or presented token", () => {
    leaks.check([JWT_SECRET, API_KEY, NEW_KEY]);
  });
});
