// Idle connections (docs/protocol.md, "Idle connections"), end to end against workerd: a socket
// from which the room hears nothing for IDLE_TIMEOUT_SECONDS is closed with 4008 "idle" within
// twice that, and leaves presence; a text `ping` (answered by the runtime without waking the
// room) and any frame keep a socket alive; 0 turns it off. The close comes from the room's
// alarm, so these tests await the close frame (see closeFrame in support/checks.mjs).

/** The server's close frame, bounded: within twice the timeout plus a margin. */
const reaped = (c) => closedWith({ closed: closeFrame(c) }, 2 * TIMEOUT_S * 1000 + 1000);
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { closedWith, closeFrame, KEY } from "./support/checks.mjs";

const TIMEOUT_S = 2;
let w;
before(async () => { w = await startWorker({ bindings: { IDLE_TIMEOUT_SECONDS: String(TIMEOUT_S) } }); });
after(async () => { await w?.stop(); });

const tok = (sub, room) => tokenFor(sub, { rooms: [room] });

/** Sends `frame` every 400 ms until the returned function is called. */
function keepAlive(c, frame) {
  const t = setInterval(() => c.send(frame), 400);
  return () => clearInterval(t);
}

test("a silent socket is closed 4008 idle within twice the timeout and leaves presence; pings and frames keep sockets open", async () => {
  const room = roomName("idle");
  const watcher = await w.connect(room, { token: tok("watcher", room), query: { presence: "1" } });
  const stopWatcher = keepAlive(watcher, "ping");
  const texts = await w.connect(room, { token: tok("texts", room) });
  const stopTexts = keepAlive(texts, "ping");
  const frames = await w.connect(room, { token: tok("frames", room) });
  const stopFrames = keepAlive(frames, { type: "ack", ids: ["none"] });
  const kept = [watcher, texts, frames];
  const closes = kept.map((c) => closeFrame(c).then((info) => (c.closedBy = info)));
  const silentAt = Date.now();
  const silent = await w.connect(room, { token: tok("silent", room) });
  try {
    const joined = await watcher.until((f) => f.type === "presence.joined" && f.userId === "silent");
    assert.ok(joined);
    const closed = await reaped(silent);
    const after = Date.now() - silentAt;
    assert.deepEqual(closed, { code: 4008, reason: "idle" });
    assert.ok(after >= TIMEOUT_S * 1000, `closed after ${after} ms: not idle that long`);
    const left = await watcher.until((f) => f.type === "presence.left");
    assert.equal(left.userId, "silent");
    // The others have been through at least one more check by the time a second silent socket,
    // connected now, is reaped: they are still open and still get notifications.
    const marker = await w.connect(room, { token: tok("marker", room) });
    assert.equal((await reaped(marker)).code, 4008);
    for (const c of kept) assert.equal(c.closedBy, undefined, "kept alive");
    const r = await w.publish(room, { type: "still.here" });
    assert.equal(r.body.broadcastCount, 3);
    assert.equal((await frames.until((f) => f.type === "still.here")).seq, r.body.seq);
    assert.equal((await texts.until((f) => f.type === "still.here")).seq, r.body.seq);
    const p = await w.request("GET", `/rooms/${room}/presence`, { headers: KEY });
    assert.deepEqual(p.body.users.map((u) => u.userId).sort(), ["frames", "texts", "watcher"]);
  } finally {
    stopWatcher();
    stopTexts();
    stopFrames();
    for (const c of kept) c.terminate();
    await Promise.all(closes);
  }
});

test("IDLE_TIMEOUT_SECONDS=0 turns idle closing off", async () => {
  const off = await startWorker({ bindings: { IDLE_TIMEOUT_SECONDS: "0" } });
  try {
    const room = roomName("noidle");
    const silent = await off.connect(room, { token: tok("silent", room) });
    // With the timeout on, this socket would be closed before the marker below is; with it
    // off, the room has no idle alarm at all: a publish after a timeout's worth still reaches it.
    const started = Date.now();
    const marker = await w.connect(room, { token: tok("marker", room) });
    await reaped(marker);
    assert.ok(Date.now() - started >= TIMEOUT_S * 1000);
    const r = await off.publish(room, { type: "still.here" });
    assert.equal(r.body.broadcastCount, 1);
    assert.equal((await silent.next()).seq, r.body.seq);
    silent.terminate();
  } finally {
    await off.stop();
  }
});
