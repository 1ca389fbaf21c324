// Client tokens verified against a JSON Web Key Set (docs/operations.md "Settings": JWT_JWKS; docs/protocol.md "Connecting":
// `alg` must be one the configured keys allow). Real keys generated here with node:crypto, their
// public JWKs in JWT_JWKS, tokens signed here.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import { generateKeyPairSync, sign as cryptoSign } from "node:crypto";
import { startWorker, signHs256, signJwt, roomName, JWT_SECRET } from "./support/harness.mjs";

const b64url = (v) => Buffer.from(typeof v === "string" ? v : JSON.stringify(v)).toString("base64url");
const nowS = () => Math.floor(Date.now() / 1000);

function keyPair(kind, kid) {
  const { publicKey, privateKey } =
    kind === "rsa" ? generateKeyPairSync("rsa", { modulusLength: 2048 })
      : kind === "ec" ? generateKeyPairSync("ec", { namedCurve: "P-256" })
        : generateKeyPairSync("ed25519");
  return { publicKey, privateKey, jwk: { ...publicKey.export({ format: "jwk" }), kid } };
}

const rsa1 = keyPair("rsa", "rsa-1");
const rsa2 = keyPair("rsa", "rsa-2");
const ec = keyPair("ec", "ec-1");
const ed = keyPair("ed25519", "ed-1");
// Not in the set.
const rsaX = keyPair("rsa", "rsa-x");
const ecX = keyPair("ec", "ec-x");
const edX = keyPair("ed25519", "ed-x");
const JWKS = JSON.stringify({ keys: [rsa1.jwk, rsa2.jwk, ec.jwk, ed.jwk] });
const ALG = { rsa: "RS256", ec: "ES256", ed25519: "EdDSA" };

/** A user, a token signed with `key` under `header`, and the user's room. */
function user(key, header) {
  const sub = roomName("u");
  const token = signJwt({ sub, iat: nowS(), exp: nowS() + 600 }, key.privateKey, header);
  return { sub, room: `user_${sub}`, token };
}

async function refused(promise, status, code) {
  const err = await promise.then(
    (c) => { c.terminate(); assert.fail(`upgrade was accepted, expected ${status}`); },
    (e) => e,
  );
  assert.equal(err.status, status, `${err.message} ${JSON.stringify(err.body)}`);
  assert.equal(err.body?.error?.code, code, JSON.stringify(err.body));
  return err;
}

describe("a JWKS with a key the runtime cannot import", () => {
  // x and y of the right length but not a point on P-256: usable by shape, refused by WebCrypto's
  // importKey. It must verify nothing, and the other keys must keep working.
  const offCurve = { kty: "EC", crv: "P-256", kid: "ec-bad", x: Buffer.alloc(32, 1).toString("base64url"), y: Buffer.alloc(32, 2).toString("base64url") };
  let w;
  before(async () => {
    w = await startWorker({ bindings: { JWT_SECRET: undefined, JWT_JWKS: JSON.stringify({ keys: [offCurve, ec.jwk] }) } });
  });
  after(async () => { await w?.stop(); });

  test("a token naming it is 401; tokens of the good key still subscribe", async () => {
    const bad = user(ec, { alg: "ES256", kid: "ec-bad" });
    const r = await refused(w.connect(bad.room, { token: bad.token }), 401, "unauthorized");
    assert.match(r.body.error.message, /signature/);
    for (const header of [{ alg: "ES256", kid: "ec-1" }, { alg: "ES256" }]) {
      const good = user(ec, header);
      const c = await w.connect(good.room, { token: good.token });
      assert.equal(c.hello.type, "connected", JSON.stringify(header));
      c.terminate();
    }
  });
});

describe("a JWKS-only worker", () => {
  let w;
  before(async () => { w = await startWorker({ bindings: { JWT_SECRET: undefined, JWT_JWKS: JWKS } }); });
  after(async () => { await w?.stop(); });

  /** Subscribes and proves the socket is live: a publish to the room arrives. */
  async function subscribes({ room, token }) {
    const c = await w.connect(room, { token });
    assert.equal(c.hello.type, "connected");
    assert.equal(c.hello.roomId, room);
    const r = await w.publish(room, { type: "jwks.ok" });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const f = await c.until((f) => f.id === r.body.id);
    assert.equal(f.type, "jwks.ok");
    c.terminate();
  }

  test("RS256, ES256 and EdDSA tokens subscribe, with and without a kid", async () => {
    for (const key of [rsa1, rsa2, ec, ed]) {
      const alg = ALG[key.publicKey.asymmetricKeyType];
      await subscribes(user(key, { alg, kid: key.jwk.kid }));
      await subscribes(user(key, { alg }));
    }
    // Via ?token= as a browser would.
    const u = user(ed, { alg: "EdDSA", kid: "ed-1" });
    const c = await w.connect(u.room, { token: u.token, viaQuery: true });
    assert.equal(c.hello.type, "connected");
    c.terminate();
    // History with the token works too.
    const h = await w.request("GET", `/rooms/${u.room}/history`, { headers: { authorization: `Bearer ${u.token}` } });
    assert.equal(h.status, 200, JSON.stringify(h.body));
  });

  test("history with a JWKS token: another user's room is 403, a forged token 401", async () => {
    const u = user(ec, { alg: "ES256", kid: "ec-1" });
    const other = roomName("user_o");
    let h = await w.request("GET", `/rooms/${other}/history`, { headers: { authorization: `Bearer ${u.token}` } });
    assert.equal(h.status, 403, JSON.stringify(h.body));
    assert.equal(h.body.error.code, "forbidden");
    const forged = user(ecX, { alg: "ES256", kid: "ec-1" });
    h = await w.request("GET", `/rooms/${forged.room}/history?token=${forged.token}`);
    assert.equal(h.status, 401, JSON.stringify(h.body));
    assert.match(h.body.error.message, /signature/);
  });

  test("a token signed by a key outside the set is 401, with or without a kid", async () => {
    for (const key of [rsaX, ecX, edX]) {
      const alg = ALG[key.publicKey.asymmetricKeyType];
      const inSet = { RS256: "rsa-1", ES256: "ec-1", EdDSA: "ed-1" }[alg];
      for (const header of [{ alg }, { alg, kid: inSet }]) {
        const u = user(key, header);
        const r = await refused(w.connect(u.room, { token: u.token }), 401, "unauthorized");
        assert.match(r.body.error.message, /signature/, JSON.stringify(header));
      }
      const u = user(key, { alg, kid: key.jwk.kid });
      const r = await refused(w.connect(u.room, { token: u.token }), 401, "unauthorized");
      assert.match(r.body.error.message, /kid/);
    }
  });

  test("kid selects the key: the right kid verifies, another key's kid or an unknown kid is 401", async () => {
    await subscribes(user(rsa2, { alg: "RS256", kid: "rsa-2" }));
    await subscribes(user(rsa1, { alg: "RS256", kid: "rsa-1" }));
    const crossed = user(rsa2, { alg: "RS256", kid: "rsa-1" });
    let r = await refused(w.connect(crossed.room, { token: crossed.token }), 401, "unauthorized");
    assert.match(r.body.error.message, /signature/);
    const unknown = user(rsa1, { alg: "RS256", kid: "rsa-9" });
    r = await refused(w.connect(unknown.room, { token: unknown.token }), 401, "unauthorized");
    assert.match(r.body.error.message, /kid/);
  });

  test("an alg that does not fit the key's type is 401", async () => {
    // The header claims one family, the kid names a key of another.
    const rsaAsEs = user(rsa1, { alg: "RS256", kid: "rsa-1" });
    const [, body, sig] = rsaAsEs.token.split(".");
    for (const header of [{ alg: "ES256", kid: "rsa-1" }, { alg: "EdDSA", kid: "rsa-1" }, { alg: "RS256", kid: "ec-1" }, { alg: "PS256", kid: "rsa-1" }, { alg: "RS512", kid: "rsa-1" }]) {
      const token = `${b64url(header)}.${body}.${sig}`;
      await refused(w.connect(rsaAsEs.room, { token }), 401, "unauthorized");
    }
    // ES256 with a DER-encoded signature (not the JWS r||s form).
    const sub = roomName("u");
    const hp = `${b64url({ alg: "ES256", kid: "ec-1" })}.${b64url({ sub, exp: nowS() + 600 })}`;
    const der = cryptoSign("sha256", Buffer.from(hp), ec.privateKey).toString("base64url");
    await refused(w.connect(`user_${sub}`, { token: `${hp}.${der}` }), 401, "unauthorized");
    // A valid RS256 token with its payload swapped.
    const u = user(rsa1, { alg: "RS256", kid: "rsa-1" });
    const [h, , s] = u.token.split(".");
    const forged = `${h}.${b64url({ sub: "admin", rooms: ["*"], exp: nowS() + 600 })}.${s}`;
    await refused(w.connect(u.room, { token: forged }), 401, "unauthorized");
  });

  test("HS256 is refused when only JWT_JWKS is configured", async () => {
    const sub = roomName("u");
    for (const secret of [JWT_SECRET, "", JSON.stringify(rsa1.jwk), rsa1.publicKey.export({ type: "spki", format: "pem" })]) {
      const token = signHs256({ sub, exp: nowS() + 600 }, secret, { alg: "HS256", kid: "rsa-1" });
      const r = await refused(w.connect(`user_${sub}`, { token }), 401, "unauthorized");
      assert.match(r.body.error.message, /algorithm/);
    }
  });
});

describe("a broken or mixed JWKS setting", () => {
  test("a JWKS that is not JSON is 503 misconfigured naming JWT_JWKS; publishing still works", async () => {
    const broken = `{"keys":[${JSON.stringify(rsa1.jwk)}`; // truncated
    const w = await startWorker({ bindings: { JWT_SECRET: undefined, JWT_JWKS: broken } });
    try {
      const u = user(rsa1, { alg: "RS256", kid: "rsa-1" });
      const r = await refused(w.connect(u.room, { token: u.token }), 503, "misconfigured");
      assert.match(r.body.error.message, /JWT_JWKS/);
      assert.ok(!r.body.error.message.includes(rsa1.jwk.n.slice(0, 20)), "the message does not echo the setting");
      // Keys are not involved in publishing or history by API key: they keep working.
      const p = await w.publish(u.room, { type: "still.works" });
      assert.equal(p.status, 200, JSON.stringify(p.body));
      const h = await w.history(u.room);
      assert.equal(h.body.lastSeq, p.body.seq);
    } finally { await w.stop(); }
  });

  test("a JWKS without a usable key (RSA under 2048 bits, empty set, private oct key) is 503", async () => {
    const weak = generateKeyPairSync("rsa", { modulusLength: 1024 }).publicKey.export({ format: "jwk" });
    for (const jwks of [{ keys: [weak] }, { keys: [] }, { keys: [{ kty: "oct", k: b64url("secret") }] }, [rsa1.jwk]]) {
      const w = await startWorker({ bindings: { JWT_SECRET: undefined, JWT_JWKS: JSON.stringify(jwks) } });
      try {
        const u = user(rsa1, { alg: "RS256", kid: "rsa-1" });
        const r = await refused(w.connect(u.room, { token: u.token }), 503, "misconfigured");
        assert.match(r.body.error.message, /JWT_JWKS/);
      } finally { await w.stop(); }
    }
  });

  test("JWT_SECRET and JWT_JWKS together: both kinds of token work (migration between them)", async () => {
    const w = await startWorker({ bindings: { JWT_JWKS: JWKS } });
    try {
      const rs = user(rsa1, { alg: "RS256", kid: "rsa-1" });
      const c1 = await w.connect(rs.room, { token: rs.token });
      const sub = roomName("u");
      const c2 = await w.connect(`user_${sub}`, { token: signHs256({ sub, exp: nowS() + 600 }) });
      assert.deepEqual([c1.hello.type, c2.hello.type], ["connected", "connected"]);
      // HS256 still only against the secret, never a public key.
      const pem = rsa1.publicKey.export({ type: "spki", format: "pem" });
      await refused(w.connect(`user_${sub}`, { token: signHs256({ sub, exp: nowS() + 600 }, pem) }), 401, "unauthorized");
      c1.terminate();
      c2.terminate();
    } finally { await w.stop(); }
  });
});
