// RealtimeClient's `debug` option against the real worker: one line per lifecycle step, each
// naming its room (connecting and the `since` it resumes from, socket opened, connected with
// lastSeq/recovered, acks sent, the close code, the backoff chosen, the probe's answer, a room
// stopping); `debug: true` writes them with console.debug; off by default.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, signHs256 } from "../support/harness.mjs";
import { RealtimeClient } from "../../client/roomcast.js";
import WebSocket from "ws";
import { makeClient, waitForState, waitForEvent, controlledWebSocket } from "./helpers.mjs";

let w;
let n = 0;
const uid = () => `d${process.pid}x${Date.now().toString(36)}x${n++}`;

before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

/** A `debug` function that records [message, details]. */
function recorder() {
  const lines = [];
  const log = (message, details) => { lines.push([message, details]); };
  return { lines, log, messages: () => lines.map(([m]) => m) };
}

test("debug: a line per step of a connection's life, through a drop and a resume", async () => {
  const u = uid();
  const room = `user_${u}`;
  await w.publish(room, { type: "note.created", requiresAck: true });
  const ctl = controlledWebSocket();
  const rec = recorder();
  const { client, seen } = makeClient({
    url: w.base, rooms: [room], getToken: () => tokenFor(u), WebSocket: ctl.WebSocket,
    since: { [room]: 0 }, debug: rec.log, initialDelayMs: 50, maxDelayMs: 50, random: () => 0.5,
  });
  try {
    await waitForState(client, "connected");
    await waitForEvent(client, "ack");
    assert.equal(seen.length, 1);
    assert.deepEqual(rec.messages(), [
      `room ${room}: connecting (connect), resuming since 0`,
      `room ${room}: socket opened`,
      `room ${room}: connected (lastSeq 1, recovered true)`,
      `room ${room}: acks sent (1)`,
    ]);
    assert.deepEqual(rec.lines[3][1], { roomId: room, ids: [seen[0].id] });
    assert.deepEqual({ ...rec.lines[2][1], connectionId: typeof rec.lines[2][1].connectionId }, {
      roomId: room, connectionId: "string", lastSeq: 1, resumed: true, since: 0, recovered: true,
    });
    assert.ok(rec.lines.every(([, d]) => d.roomId === room), "every line's details name the room");
    assert.ok(rec.lines.every(([, d]) => !JSON.stringify(d).includes("token=")), "no token in the log");

    // A lost connection: its close, the backoff chosen, the resume.
    rec.lines.length = 0;
    const back = waitForEvent(client, "connected");
    ctl.kill(room);
    await back;
    assert.deepEqual(rec.messages(), [
      `room ${room}: closed: 1006`,
      `room ${room}: reconnecting in 25 ms (attempt 1, delay backoff, token reconnect)`,
      `room ${room}: connecting (reconnect), resuming since 1`,
      `room ${room}: socket opened`,
      `room ${room}: connected (lastSeq 1, recovered true)`,
    ]);
    assert.deepEqual(rec.lines[0][1], { roomId: room, code: 1006, reason: "", wasConnected: true });
    assert.deepEqual(rec.lines[1][1], {
      roomId: room, attempt: 1, delayMs: 25, code: 1006, delay: "backoff", tokenReason: "reconnect",
    });
    assert.deepEqual(rec.lines[4][1].since, 1);
  } finally {
    await client.close();
  }
});

test("debug: a refusal logs the probe's answer and why the room stopped", async () => {
  const u = uid();
  const room = `user_${u}`;
  const wrong = signHs256({ sub: u, exp: Math.floor(Date.now() / 1000) + 3600 }, "not-the-server-secret-0123456789abcdef");
  const rec = recorder();
  const { client } = makeClient({ url: w.base, rooms: [room], token: wrong, debug: rec.log });
  try {
    await waitForState(client, "error");
    const messages = rec.messages();
    assert.equal(messages.length, 4, messages.join("\n"));
    assert.equal(messages[0], `room ${room}: connecting (connect)`);
    assert.match(messages[1], new RegExp(`^room ${room}: closed: 1006`));
    assert.match(messages[2], new RegExp(`^room ${room}: the probe answered 401 unauthorized: `));
    assert.equal(messages[3], `room ${room}: stopped: unauthorized`);
    assert.equal(rec.lines.at(-2)[1].status, 401);
    assert.equal(rec.lines.at(-2)[1].serverCode, "unauthorized");
    assert.match(rec.lines.at(-1)[1].message, /pass getToken/);
  } finally {
    await client.close();
  }
});

test("debug: true writes to console.debug; without it nothing is logged", async (t) => {
  const u = uid();
  const calls = [];
  t.mock.method(console, "debug", (...args) => { calls.push(args); });
  const loud = new RealtimeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u), WebSocket, debug: true });
  const quiet = new RealtimeClient({ url: w.base, rooms: [`user_${u}x`], token: tokenFor(`${u}x`), WebSocket });
  try {
    await Promise.all([waitForState(loud, "connected"), waitForState(quiet, "connected")]);
    const ours = calls.filter(([m]) => typeof m === "string" && m.startsWith("[roomcast]"));
    assert.ok(ours.some(([m, d]) => m === `[roomcast] room user_${u}: socket opened` && d.roomId === `user_${u}`), JSON.stringify(ours));
    assert.ok(ours.every(([m]) => m.startsWith(`[roomcast] room user_${u}: `)), "only the debug client logs");
  } finally {
    await Promise.all([loud.close(), quiet.close()]);
  }
});

test("debug: anything but true, false or a function is refused", () => {
  assert.throws(
    () => new RealtimeClient({ url: w.base, rooms: [], token: "t", WebSocket, debug: "verbose", autoConnect: false }),
    /`debug` is true, false, or a function/,
  );
});
