// RealtimeClient against the real worker (workerd via Miniflare): delivery once and in order,
// dedupe across user_ and request_ rooms, auto-ack, manual ack, filters.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { RealtimeClient, backoffDelay } from "../../client/roomcast.js";
import WebSocket from "ws";
import {
  makeClient, waitForState, waitForEvent, waitForCount, pollUntil, quiet, deferred, controlledWebSocket,
} from "./helpers.mjs";

const RETRY_MS = 300;
let w;
let n = 0;
/** A fresh user id per test, so rooms never overlap. */
const uid = () => `c${process.pid}x${Date.now().toString(36)}x${n++}`;

before(async () => {
  w = await startWorker({ bindings: { ACK_RETRY_INTERVAL_MS: String(RETRY_MS), ACK_MAX_ATTEMPTS: "10" } });
});
after(async () => { await w?.stop(); });

test("backoffDelay: full jitter under an exponentially growing cap", () => {
  const opts = { initialDelayMs: 1000, maxDelayMs: 30000, multiplier: 2 };
  const caps = [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  caps.forEach((cap, i) => {
    assert.equal(backoffDelay(i + 1, opts, () => 0), 0);
    assert.equal(backoffDelay(i + 1, opts, () => 0.5), cap / 2);
    assert.equal(backoffDelay(i + 1, opts, () => 0.999999), cap - 1);
  });
  // Defaults are 1 s doubling to 30 s; real randomness stays within [0, cap).
  for (let attempt = 1; attempt <= 12; attempt++) {
    const cap = Math.min(30000, 1000 * 2 ** (attempt - 1));
    const values = Array.from({ length: 200 }, () => backoffDelay(attempt));
    assert.ok(values.every((v) => v >= 0 && v < cap), `attempt ${attempt}`);
    assert.ok(Math.max(...values) > cap / 2, "jitter spreads over the range");
  }
});

test("the constructor refuses what cannot work", () => {
  assert.throws(() => new RealtimeClient({ url: w.base, token: "t", autoConnect: false }), /rooms/);
  // An explicit empty list is a client whose rooms are joined later.
  assert.deepEqual(new RealtimeClient({ url: w.base, rooms: [], token: "t", WebSocket, autoConnect: false }).rooms, []);
  assert.throws(() => new RealtimeClient({ url: w.base, rooms: ["a/b"], token: "t", autoConnect: false }), /invalid room id/);
  assert.throws(() => new RealtimeClient({ url: w.base, rooms: ["r"], autoConnect: false }), /token/);
  // Node 20 has no global WebSocket: the client says what to pass.
  if (typeof globalThis.WebSocket !== "function") {
    assert.throws(() => new RealtimeClient({ url: w.base, rooms: ["r"], token: "t" }), /WebSocket/);
  }
});

test("delivers each notification once, in order, and reports state changes", async () => {
  const u = uid();
  const room = `user_${u}`;
  const { client, seen } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u) });
  const states = [];
  client.on("state", (s) => states.push(s));
  try {
    await waitForState(client, "connected");
    assert.deepEqual(states, ["connected"], "connecting was the state before the first event");
    assert.equal(client.roomState(room), "connected");
    for (let i = 1; i <= 5; i++) {
      const r = await w.publish(room, { type: "note.created", data: { i } });
      assert.equal(r.status, 200);
      assert.equal(r.body.broadcastCount, 1);
    }
    await waitForCount(client, seen, 5);
    assert.deepEqual(seen.map((s) => s.data.i), [1, 2, 3, 4, 5]);
    assert.deepEqual(seen.map((s) => s.seq), [1, 2, 3, 4, 5]);
    assert.equal(client.lastSeq(room), 5);
  } finally {
    await client.close();
  }
  assert.equal(client.state, "disconnected");
  assert.equal(states.at(-1), "disconnected");
});

test("a notification published to user_ and request_ rooms reaches the app once and is acked in both", async () => {
  const u = uid();
  const req = `r${u}`;
  const { client, seen } = makeClient({
    url: w.base,
    rooms: [`user_${u}`, `request_${req}`],
    token: tokenFor(u, { rooms: [`request_${req}`] }),
  });
  const acks = [];
  client.on("ack", (a) => acks.push(a));
  try {
    await waitForState(client, "connected");
    const dupes = [];
    client.on("duplicate", (d, ctx) => dupes.push(ctx.roomId));
    const r = await w.request("POST", "/broadcast", {
      headers: { authorization: `Bearer ${API_KEY}` },
      body: { userId: u, requestId: req, message: { type: "job.done", requiresAck: true } },
    });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    const id = r.body.rooms[`user_${u}`].id;
    assert.equal(r.body.rooms[`request_${req}`].id, id);
    await waitForCount(client, seen, 1);
    // The second room's copy arrives too, and is dropped.
    if (dupes.length === 0) await waitForEvent(client, "duplicate");
    // Both rooms get the ack: history says acked in each, by this user.
    for (const room of [`user_${u}`, `request_${req}`]) {
      const h = await pollUntil(async () => {
        const res = await w.history(room);
        const e = res.body.notifications?.[0];
        return e?.deliveryStatus === "acked" ? e : null;
      });
      assert.equal(h.id, id);
      assert.equal(h.ackedBy, u);
    }
    assert.equal(await quiet(client, "notification", RETRY_MS * 3), true, "no second delivery to the app");
    assert.equal(seen.length, 1);
    assert.deepEqual(new Set(acks.map((a) => a.roomId)), new Set([`user_${u}`, `request_${req}`]));
  } finally {
    await client.close();
  }
});

test("auto-ack after an async handler stops the redelivery", async () => {
  const u = uid();
  const room = `user_${u}`;
  const handled = deferred();
  let handlerDone = false;
  const client = new RealtimeClient({ url: w.base, rooms: [room], token: tokenFor(u), WebSocket: (await import("ws")).default });
  const order = [];
  client.on("notification", async (n) => {
    order.push(`start:${n.id}`);
    await new Promise((r) => setTimeout(r, 100));
    handlerDone = true;
    order.push(`end:${n.id}`);
    handled.resolve(n);
  });
  client.on("ack", ({ ids }) => order.push(`ack:${ids.join(",")}`));
  // An observer connection in the same room sees every (re)delivery the server makes.
  const observer = await w.connect(room, { token: tokenFor(u) });
  try {
    await waitForState(client, "connected");
    const r = await w.publish(room, { type: "task.assigned", requiresAck: true, id: `n-${u}` });
    assert.equal(r.status, 200);
    const [ackEvent] = await waitForEvent(client, "ack");
    assert.ok(handlerDone, "acked only after the handler finished");
    assert.deepEqual(ackEvent.ids, [`n-${u}`]);
    assert.deepEqual(order, [`start:n-${u}`, `end:n-${u}`, `ack:n-${u}`]);
    const f = await observer.until((f) => f.id === `n-${u}`);
    assert.equal(f.attempt, 1);
    const entry = await pollUntil(async () => {
      const e = (await w.history(room)).body.notifications[0];
      return e.deliveryStatus === "acked" ? e : null;
    });
    assert.equal(entry.attempts, 1);
    // Three retry intervals pass without a redelivery to anyone in the room.
    assert.equal(await observer.quiet(RETRY_MS * 3), true, "no redelivery after the ack");
    const after = (await w.history(room)).body.notifications[0];
    assert.equal(after.deliveryStatus, "acked");
    assert.equal(after.attempts, 1);
  } finally {
    observer.terminate();
    await client.close();
  }
});

test("autoAck:false: redeliveries are not handed to the app again; client.ack(id) settles it", async () => {
  const u = uid();
  const room = `user_${u}`;
  const { client, seen } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u), autoAck: false });
  try {
    await waitForState(client, "connected");
    const r = await w.publish(room, { type: "task.assigned", requiresAck: true });
    const id = r.body.id;
    await waitForCount(client, seen, 1);
    // Not acked: the server redelivers (attempt 2), the client drops it as a duplicate.
    const [dup] = await waitForEvent(client, "duplicate", (d) => d.id === id, RETRY_MS * 10);
    assert.ok(dup.attempt >= 2);
    assert.equal(seen.length, 1);
    assert.equal((await w.history(room)).body.notifications[0].deliveryStatus, "pending");
    client.ack(id);
    const entry = await pollUntil(async () => {
      const e = (await w.history(room)).body.notifications[0];
      return e.deliveryStatus === "acked" ? e : null;
    });
    assert.equal(entry.ackedBy, u);
    assert.equal(seen.length, 1);
  } finally {
    await client.close();
  }
});

test("a failing handler leaves the notification unacked and gets it again on redelivery", async () => {
  const u = uid();
  const room = `user_${u}`;
  const { client, seen, errors } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u) });
  let calls = 0;
  client.on("notification", async () => {
    calls++;
    if (calls === 1) throw new Error("database down");
  });
  try {
    await waitForState(client, "connected");
    await w.publish(room, { type: "task.assigned", requiresAck: true });
    await waitForCount(client, seen, 2, RETRY_MS * 10);
    assert.equal(seen[0].id, seen[1].id);
    assert.equal(seen[0].attempt, 1);
    assert.ok(seen[1].attempt >= 2);
    assert.equal(errors[0].code, "handler_error");
    assert.match(errors[0].message, /database down/);
    await pollUntil(async () => (await w.history(room)).body.notifications[0].deliveryStatus === "acked");
  } finally {
    await client.close();
  }
});

test("type filters: `types` on connect, subscribe() and unsubscribe(); messageFilter", async () => {
  const u = uid();
  const room = `user_${u}`;
  const { client, seen } = makeClient({
    url: w.base,
    rooms: [room],
    token: tokenFor(u),
    types: ["note.*"],
    messageFilter: (n) => n.data.hide !== true,
  });
  try {
    await waitForState(client, "connected");
    await w.publish(room, { type: "task.created", data: { k: 1 } });
    await w.publish(room, { type: "note.created", data: { k: 2 } });
    await w.publish(room, { type: "note.created", data: { k: 3, hide: true } });
    await w.publish(room, { type: "note.updated", data: { k: 4 } });
    await waitForCount(client, seen, 2);
    assert.deepEqual(seen.map((s) => s.data.k), [2, 4]);

    client.subscribe(["task.*"]);
    const [sub] = await waitForEvent(client, "subscribed");
    assert.deepEqual(sub.types.sort(), ["note.*", "task.*"]);
    assert.deepEqual(client.types, ["note.*", "task.*"]);
    await w.publish(room, { type: "task.created", data: { k: 5 } });
    await waitForCount(client, seen, 3);
    assert.equal(seen[2].data.k, 5);

    client.unsubscribe(["note.*"]);
    await waitForEvent(client, "subscribed");
    await w.publish(room, { type: "note.created", data: { k: 6 } });
    await w.publish(room, { type: "task.done", data: { k: 7 } });
    await waitForCount(client, seen, 4);
    assert.deepEqual(seen.map((s) => s.data.k), [2, 4, 5, 7]);
  } finally {
    await client.close();
  }
});

test("send() reaches the server; an error frame it answers is a non-fatal error", async () => {
  const u = uid();
  const { client } = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u) });
  try {
    await waitForState(client, "connected");
    // An invalid frame is answered with an error frame, reported as a non-fatal error.
    assert.equal(client.send({ type: "bogus" }), 1);
    const [err] = await waitForEvent(client, "error");
    assert.equal(err.code, "invalid_message");
    assert.equal(err.fatal, false);
    assert.equal(client.state, "connected");
  } finally {
    await client.close();
  }
});

test("resuming from a seq the room never had: recovery says recovered:false and the client restarts from the room's seq", async () => {
  const u = uid();
  const room = `user_${u}`;
  await w.publish(room, { type: "note.created", data: { i: 1 } });
  const { client, seen } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u), since: { [room]: 40 } });
  try {
    const [rec] = await waitForEvent(client, "recovery");
    assert.deepEqual(rec, { roomId: room, since: 40, lastSeq: 1, recovered: false });
    assert.equal(client.lastSeq(room), 1, "the room's log is behind: start over from its seq");
    await w.publish(room, { type: "note.created", data: { i: 2 } });
    await waitForCount(client, seen, 1);
    assert.deepEqual(seen.map((s) => [s.seq, s.data.i]), [[2, 2]]);
  } finally {
    await client.close();
  }
});

test("batch=1 end to end: what was published while the client was away is replayed in batches, each once, in order", async () => {
  const u = uid();
  const room = `user_${u}`;
  const ctl = controlledWebSocket();
  let batches = 0;
  let inBatches = 0;
  // Lets every frame through; counts the batches on the way.
  ctl.drop = (f) => {
    if (f?.type === "batch") { batches++; inBatches += f.frames.length; }
    return false;
  };
  const { client, seen } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u), WebSocket: ctl.WebSocket });
  try {
    await waitForState(client, "connected");
    await w.publish(room, { type: "note.created", data: { i: 0 } });
    await waitForCount(client, seen, 1);
    await client.close();
    for (let i = 1; i <= 60; i++) await w.publish(room, { type: "note.created", data: { i } });
    client.connect(); // resumes after seq 1
    await waitForCount(client, seen, 61);
    await w.publish(room, { type: "note.created", data: { i: 61 } });
    await waitForCount(client, seen, 62);
    assert.deepEqual(seen.map((s) => s.data.i), Array.from({ length: 62 }, (_, i) => i));
    assert.deepEqual(seen.map((s) => s.seq), Array.from({ length: 62 }, (_, i) => i + 1));
    assert.equal(new Set(seen.map((s) => s.id)).size, 62);
    assert.ok(ctl.urls.every((url) => new URL(url).searchParams.get("batch") === "1"));
    assert.ok(batches >= 1, "the replay came batched");
    assert.ok(inBatches >= 2 && inBatches <= 60, `${inBatches} frames in ${batches} batches`);
  } finally {
    await client.close();
  }
});
