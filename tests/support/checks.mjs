// Assertions and waits shared by the end-to-end tests: the protocol's error shape, refused upgrades,
// round trips that prove earlier frames were handled, and polling for a condition with a deadline.
import assert from "node:assert/strict";
import { API_KEY } from "./harness.mjs";

/** The protocol's time format: ISO-8601 UTC ending in Z. */
export const ISO_Z = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$/;
/** The Authorization header of the test API key. */
export const KEY = { authorization: `Bearer ${API_KEY}` };

/** Asserts the protocol's error response: exact status, and exactly {success:false,error:{code,message}}. */
export function assertError(res, status, code, what = "") {
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
export async function refusedUpgrade(w, room, opts) {
  try {
    const c = await w.connect(room, opts);
    c.terminate();
  } catch (e) {
    if (e.status === undefined) throw e;
    return { status: e.status, headers: new Headers(e.headers), body: e.body };
  }
  assert.fail(`connecting to ${room} was accepted`);
}

/**
 * Sends a JSON ping and awaits its pong: frames are handled in order, so every frame sent before
 * it has been processed. Returns the frames that came before the pong.
 */
export async function roundTrip(c, ms) {
  c.send({ type: "ping" });
  const pong = await c.until((f) => f?.type === "pong", ms);
  return pong.skipped;
}

/**
 * The code of the server's close frame, as soon as it arrives. A browser reports that close
 * (its `onclose`) at the latest about 2 s later, when it gives up waiting for the server to drop
 * the TCP connection; `ws`'s own `close` event waits up to 30 s for that. workerd keeps the
 * connection open until the object goes idle (~10 s) when the close comes from an alarm (see
 * docs/operations.md), so the frame is what this asserts on. Uses `ws`'s receiver (`ws` is pinned).
 */
export function closeFrame(c) {
  return new Promise((resolve) => {
    c.ws._receiver.once("conclude", (code, reason) => resolve({ code, reason: reason.toString() }));
    c.closed.then(resolve);
  });
}

/**
 * Whether nothing more is on its way to a raw client: a ping's pong is the marker (every frame
 * to a socket goes through its one queue, so anything sent before it arrives before it).
 */
export async function nothingMore(c) {
  return (await roundTrip(c)).length === 0;
}

/** Awaits the client's close, bounded. */
export async function closedWith(c, ms = 5000) {
  let t;
  const timeout = new Promise((_, rej) => { t = setTimeout(() => rej(new Error(`no close within ${ms} ms`)), ms); });
  try { return await Promise.race([c.closed, timeout]); } finally { clearTimeout(t); }
}

/**
 * Polls `probe` until it returns a truthy value (which is returned), failing after `ms` with the
 * last value seen: for outcomes that have no event of their own to await.
 */
export async function eventually(probe, { ms = 5000, every = 50, what = "condition" } = {}) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await probe();
    if (last) return last;
    if (Date.now() > deadline) assert.fail(`${what} not met within ${ms} ms (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** The room's keyed health. */
export async function keyedHealth(w, room) {
  const h = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
  assert.equal(h.status, 200, JSON.stringify(h.body));
  return h.body;
}
