// RealtimeClient's two-way side against the real worker (workerd via Miniflare): the presence
// map through joins, updates, leaves and a reconnect; setPresence under the server's 3 per 10 s;
// listeners by notification type and event name; emit; sync() filling a gap exactly once (also
// when the page becomes visible again); ephemeral notifications.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Window } from "happy-dom";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { matchesType, isClientEvent } from "../../client/roomcast.js";
import {
  makeClient, waitForState, waitForEvent, waitForCount, pollUntil, quiet, deferred, controlledWebSocket,
} from "./helpers.mjs";

let w;
let n = 0;
const uid = () => `w${process.pid}x${Date.now().toString(36)}x${n++}`;

before(async () => {
  w = await startWorker({
    bindings: {
      CLIENT_EVENT_TYPES: "typing.*,cursor.move", CLIENT_EVENT_RATES: "typing.*=3/10s",
      ACK_RETRY_INTERVAL_MS: "300", ACK_MAX_ATTEMPTS: "10",
    },
  });
});
after(async () => { await w?.stop(); });

/** Clients closed when the test ends, pass or fail. */
function clients(t) {
  const made = [];
  t.after(() => Promise.all(made.map((c) => c.close())));
  return (options) => {
    const c = makeClient({ url: w.base, ...options });
    made.push(c.client);
    return c;
  };
}

/** A team room every one of `subs` may enter, and a token maker for it. */
function team() {
  const room = `team_${uid()}`;
  return { room, token: (sub) => tokenFor(sub, { rooms: [room] }) };
}

const ids = (map) => [...(map ?? new Map()).keys()].sort();

test("matchesType follows the server's patterns", () => {
  assert.equal(matchesType("*", "a"), true);
  assert.equal(matchesType("note.*", "note.created"), true);
  assert.equal(matchesType("note.*", "note.a.b"), true);
  assert.equal(matchesType("note.*", "note"), false);
  assert.equal(matchesType("note.*", "notes.x"), false);
  assert.equal(matchesType("memory.created", "memory.created"), true);
  assert.equal(matchesType("memory.created", "memory.created.x"), false);
});

test("presence: a live map through joins, updates, a second tab and leaves", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const alice = make({ rooms: [room], token: token("alice"), presence: true });
  const joined = [];
  const left = [];
  alice.client.on("joined", (j) => joined.push(j.userId));
  alice.client.on("left", (l) => left.push(l.userId));
  await waitForState(alice.client, "connected");
  assert.deepEqual(ids(alice.client.presence(room)), ["alice"], "its own user, from the connected frame");
  assert.equal(alice.client.presenceCount(room), 1);
  const me = alice.client.presence(room).get("alice");
  assert.equal(me.connections, 1);
  assert.deepEqual(me.state, {});
  assert.match(me.since, /Z$/);

  const bobJoined = waitForEvent(alice.client, "joined", (j) => j.userId === "bob");
  const bob = make({ rooms: [room], token: token("bob"), presence: true });
  await bobJoined;
  assert.deepEqual(ids(alice.client.presence(room)), ["alice", "bob"]);
  assert.equal(alice.client.presenceCount(room), 2);
  await waitForState(bob.client, "connected");
  assert.deepEqual(ids(bob.client.presence(room)), ["alice", "bob"], "the newcomer's map comes from its connected frame");

  // A state: every watcher's map follows; the map is a new object on each change.
  const before = alice.client.presence(room);
  const updated = waitForEvent(alice.client, "presence", (p) => p.change === "updated" && p.userId === "bob");
  bob.client.setPresence(room, { status: "busy" });
  const [info] = await updated;
  assert.notEqual(info.users, before);
  assert.equal(info.users, alice.client.presence(room));
  assert.deepEqual(alice.client.presence(room).get("bob").state, { status: "busy" });
  await pollUntil(() => bob.client.presence(room).get("bob").state.status === "busy");

  // Bob's second tab (a client that does not watch presence) changes nothing for watchers.
  const tab = make({ rooms: [room], token: token("bob") });
  await waitForState(tab.client, "connected");
  assert.equal(tab.client.presence(room), undefined, "a room that does not watch presence has no map");
  await tab.client.close();
  assert.equal(await quiet(alice.client, "presence", 300), true, "a second tab's coming and going is not announced");

  const bobLeft = waitForEvent(alice.client, "left", (l) => l.userId === "bob");
  await bob.client.close();
  await bobLeft;
  assert.deepEqual(ids(alice.client.presence(room)), ["alice"]);
  assert.equal(alice.client.presenceCount(room), 1);
  assert.deepEqual(joined, ["bob"]);
  assert.deepEqual(left, ["bob"]);
  // Closing empties the map, and says so.
  const cleared = waitForEvent(alice.client, "presence", (p) => p.change === "cleared");
  await alice.client.close();
  await cleared;
});

test("presence after a reconnect is rebuilt from the new connected frame: no stale user, none missing", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const net = controlledWebSocket();
  const gate = { open: Promise.resolve() };
  const alice = make({
    rooms: [room], presence: [room], WebSocket: net.WebSocket, initialDelayMs: 1, maxDelayMs: 1,
    getToken: async ({ reason }) => {
      if (reason === "reconnect") await gate.open;
      return token("alice");
    },
  });
  await waitForState(alice.client, "connected");
  alice.client.setPresence(room, { status: "busy" });
  const carol = make({ rooms: [room], token: token("carol"), presence: true });
  await waitForEvent(alice.client, "joined", (j) => j.userId === "carol");
  assert.deepEqual(ids(alice.client.presence(room)), ["alice", "carol"]);

  // Alice's connection is lost; while she is away carol leaves and dave arrives.
  const held = deferred();
  gate.open = held.promise;
  const reconnecting = waitForEvent(alice.client, "reconnecting");
  assert.equal(net.kill(room), 1);
  await reconnecting;
  const dave = make({ rooms: [room], token: token("dave"), presence: true });
  await waitForState(dave.client, "connected");
  await pollUntil(() => ids(dave.client.presence(room)).join() === "carol,dave", 5000);
  await carol.client.close();
  await pollUntil(() => ids(dave.client.presence(room)).join() === "dave", 5000);
  assert.deepEqual(ids(alice.client.presence(room)), ["alice", "carol"], "until it reconnects, the map is the last one known");

  const joinedAgain = waitForEvent(alice.client, "joined", (j) => j.userId === "dave");
  const leftMeanwhile = waitForEvent(alice.client, "left", (l) => l.userId === "carol");
  const snapshot = waitForEvent(alice.client, "presence", (p) => p.change === "snapshot");
  held.resolve();
  await snapshot;
  assert.deepEqual(ids(alice.client.presence(room)), ["alice", "dave"]);
  assert.equal(alice.client.presenceCount(room), 2);
  await Promise.all([joinedAgain, leftMeanwhile]);
  assert.ok(net.urls.every((u) => new URL(u).searchParams.get("presence") === "1"));
  // Alice was her user's only connection: the server dropped her state, and the client set it
  // again on the new connection.
  await pollUntil(() => dave.client.presence(room).get("alice")?.state.status === "busy", 5000);
  assert.deepEqual(alice.errors, []);
});

test("setPresence is coalesced under the server's 3 per 10 s: the newest state arrives, nothing is refused", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const watcher = make({ rooms: [room], token: token("watcher"), presence: true });
  await waitForState(watcher.client, "connected");
  const seenStates = [];
  watcher.client.on("presence", (p) => {
    if (p.change === "updated" && p.userId === "eve") seenStates.push(p.users.get("eve").state.n);
  });
  const eve = make({ rooms: [room], token: token("eve") });
  await waitForState(eve.client, "connected");
  for (let i = 1; i <= 5; i++) eve.client.setPresence(room, { n: i });
  // 1, 2, 3 at once; 4 is replaced by 5 while waiting; 5 once the server's window allows.
  await pollUntil(() => seenStates.at(-1) === 5, 15000, 50);
  assert.deepEqual(seenStates, [1, 2, 3, 5]);
  assert.deepEqual(eve.errors, [], "no rate_limited refusal");
  // The same state again sends nothing.
  eve.client.setPresence(room, { n: 5 });
  assert.equal(await quiet(watcher.client, "presence", 300), true);
  assert.throws(() => eve.client.setPresence(room, ["not", "an", "object"]), /plain object/);
  assert.throws(() => eve.client.setPresence("user_other", {}), /does not hold/);
});

test("join(room, {presence: true}) on a held room reopens it with presence, losing nothing", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const net = controlledWebSocket();
  const alice = make({ rooms: [room], token: token("alice"), WebSocket: net.WebSocket });
  await waitForState(alice.client, "connected");
  assert.equal(alice.client.presence(room), undefined);
  await w.publish(room, { type: "a.one" });
  await waitForCount(alice.client, alice.seen, 1);
  const reconnected = waitForEvent(alice.client, "connected", (c) => c.resumed);
  alice.client.join(room, { presence: true });
  await w.publish(room, { type: "a.two" });
  await reconnected;
  assert.deepEqual(ids(alice.client.presence(room)), ["alice"]);
  await waitForCount(alice.client, alice.seen, 2);
  assert.deepEqual(alice.seen.map((s) => s.seq), [1, 2], "nothing lost, nothing twice");
  assert.equal(net.urls.length, 2);
  assert.equal(new URL(net.urls[1]).searchParams.get("presence"), "1");
  assert.equal(new URL(net.urls[1]).searchParams.get("since"), "1");
});

test("on(type) and on(event name): exact names and patterns, built-in events first", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const alice = make({ rooms: [room], token: token("alice") });
  const bob = make({ rooms: [room], token: token("bob") });
  const got = [];
  const record = (tag) => (m, ctx) => { got.push(`${tag}:${m.type === "event" ? m.event : m.type}:${ctx.kind}:${ctx.roomId === room}`); };
  alice.client.on("memory.created", record("exact"));
  alice.client.on("note.*", record("note.*"));
  alice.client.on("typing.start", record("typing.start"));
  alice.client.on("typing.*", record("typing.*"));
  const offAll = alice.client.on("*", record("*"));
  const events = [];
  alice.client.on("event", (e, ctx) => events.push({ ...e, roomId: ctx.roomId }));
  await waitForState(alice.client, "connected");
  await waitForState(bob.client, "connected");

  await w.publish(room, { type: "memory.created", data: { id: "m1" } });
  await waitForCount(alice.client, alice.seen, 1);
  await pollUntil(() => got.length === 2);
  assert.deepEqual(got.sort(), ["*:memory.created:notification:true", "exact:memory.created:notification:true"]);

  got.length = 0;
  assert.equal(bob.client.emit(room, "typing.start", { field: "title" }), true);
  await pollUntil(() => got.length === 3);
  assert.deepEqual(got.sort(), ["*:typing.start:event:true", "typing.*:typing.start:event:true", "typing.start:typing.start:event:true"]);
  assert.equal(events.length, 1);
  assert.equal(events[0].userId, "bob", "stamped by the server with the sender's user");
  assert.deepEqual(events[0].data, { field: "title" });
  assert.equal(events[0].roomId, room);
  assert.equal(isClientEvent(events[0]), true);
  assert.equal(isClientEvent(alice.seen[0]), false);

  // The sender's own socket does not get its event.
  assert.equal(await quiet(bob.client, "event", 200), true);

  got.length = 0;
  offAll();
  await w.publish(room, { type: "note.created" });
  await waitForCount(alice.client, alice.seen, 2);
  await pollUntil(() => got.length === 1);
  assert.deepEqual(got, ["note.*:note.created:notification:true"]);
  assert.equal(alice.client.listenerCount("typing.*"), 1);
  assert.equal(alice.client.listenerCount("*"), 0);

  // Built-in names stay built-in; a name that is neither is refused at once.
  assert.equal(alice.client.listenerCount("notification"), 1);
  assert.throws(() => alice.client.on("has space", () => {}), /unknown event/);
  assert.throws(() => alice.client.emit(room, "bad name"), /invalid event name/);
  assert.deepEqual(alice.errors, []);
});

test("a type listener gates the auto-ack like a notification listener", async (t) => {
  const make = clients(t);
  const u = uid();
  const room = `user_${u}`;
  const alice = make({ rooms: [room], token: tokenFor(u) });
  let calls = 0;
  alice.client.on("job.done", (n) => {
    calls++;
    if (n.attempt === 1) throw new Error("not yet");
  });
  await waitForState(alice.client, "connected");
  const failed = waitForEvent(alice.client, "error", (e) => e.code === "handler_error");
  await w.publish(room, { type: "job.done", requiresAck: true });
  await failed;
  // Redelivered because it was not acked, then acked after the listener succeeds.
  await pollUntil(async () => (await w.history(room)).body.notifications[0]?.deliveryStatus === "acked", 5000);
  assert.equal(calls, 2);
});

test("emit: refused names come back as errors and the connection carries on; the local limit drops, never gets closed", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const alice = make({ rooms: [room], token: token("alice"), clientEventRate: 3 });
  const bob = make({ rooms: [room], token: token("bob") });
  await waitForState(alice.client, "connected");
  await waitForState(bob.client, "connected");
  assert.equal(alice.client.emit(room, "chat.secret", {}), true, "sent: only the server knows what it allows");
  const [err] = await waitForEvent(alice.client, "error");
  assert.equal(err.code, "event_not_allowed");
  assert.equal(err.fatal, false);
  assert.equal(err.roomId, room);

  const got = [];
  bob.client.on("cursor.move", (e) => got.push(e.data.x));
  assert.equal(alice.client.emit(room, "cursor.move", { x: 1 }), true);
  assert.equal(alice.client.emit(room, "cursor.move", { x: 2 }), true);
  // The refused one counted too: this is the 4th within 10 s.
  assert.equal(alice.client.emit(room, "cursor.move", { x: 3 }), false);
  await pollUntil(() => got.length === 2);
  assert.deepEqual(got, [1, 2]);
  assert.equal(alice.client.emit("user_not_held", "cursor.move"), false);
  assert.equal(alice.client.state, "connected");
  assert.equal(alice.errors.length, 1);
});

test("eventRates: emit returns false over a pattern's limit and sends nothing; debug says why", async (t) => {
  const make = clients(t);
  const { room, token } = team();
  const lines = [];
  // The server's CLIENT_EVENT_RATES text, as this file's worker has it.
  const alice = make({ rooms: [room], token: token("alice"), eventRates: "typing.*=3/10s", debug: (m) => lines.push(m) });
  const bob = make({ rooms: [room], token: token("bob") });
  await waitForState(alice.client, "connected");
  await waitForState(bob.client, "connected");
  const got = [];
  bob.client.on("event", (e) => got.push(e.event));
  const sent = ["typing.start", "typing.stop", "typing.start", "typing.stop", "typing.start"]
    .map((name) => alice.client.emit(room, name));
  assert.deepEqual(sent, [true, true, true, false, false], "every typing.* name counts toward the pattern");
  // Another pattern's names are not held back; arriving last, it shows the refused ones never went.
  assert.equal(alice.client.emit(room, "cursor.move", { x: 1 }), true);
  await pollUntil(() => got.includes("cursor.move"));
  assert.deepEqual(got, ["typing.start", "typing.stop", "typing.start", "cursor.move"]);
  assert.deepEqual(alice.errors, [], "the server refused nothing");
  assert.equal(
    lines.filter((l) => l.includes("not sent")).join("\n"),
    [`room ${room}: emit typing.stop not sent: 3 events matching typing.* went out in the last 10000 ms (eventRates)`,
      `room ${room}: emit typing.start not sent: 3 events matching typing.* went out in the last 10000 ms (eventRates)`].join("\n"),
  );
  alice.client.emit("user_not_held", "typing.start");
  assert.equal(lines.at(-1), "room user_not_held: emit typing.start not sent: the client does not hold this room");

  // The same limit as pattern -> [limit, windowMs].
  const carol = make({ rooms: [room], token: token("carol"), eventRates: { "typing.*": [1, 10000] } });
  await waitForState(carol.client, "connected");
  assert.deepEqual([carol.client.emit(room, "typing.start"), carol.client.emit(room, "typing.stop")], [true, false]);
});

test("eventRates: what cannot be read is refused with a clear error", () => {
  for (const [rates, why] of [
    ["typing.*=5", /cannot read "typing.\*=5": write pattern=count\/window/],
    ["typing.*=5/5y", /cannot read/],
    ["typing.*=5/s", /cannot read/],
    [{ "typing.*": [0, 5000] }, /must be \[count, windowMs\]/],
    ["bad name=1/1s", /cannot read/],
    ["bad!=1/1s", /"bad!" is not an event name or pattern/],
    [{ "typing.*": 5 }, /must be \[count, windowMs\]/],
    [{ "typing.*": [5, 0] }, /must be \[count, windowMs\]/],
    [42, /a string or an object/],
  ]) {
    assert.throws(() => makeClient({ url: w.base, rooms: [], token: "t", eventRates: rates, autoConnect: false }), why, JSON.stringify(rates));
  }
});

test("sync() after missed frames fills the gap exactly once, without reconnecting", async (t) => {
  const make = clients(t);
  const u = uid();
  const room = `user_${u}`;
  const net = controlledWebSocket();
  const alice = make({ rooms: [room], token: tokenFor(u), WebSocket: net.WebSocket });
  await waitForState(alice.client, "connected");
  await w.publish(room, { type: "n.one" });
  await waitForCount(alice.client, alice.seen, 1);
  // Frames 2 and 3 are lost on the way.
  net.drop = (f) => f.seq === 2 || f.seq === 3;
  await w.publish(room, { type: "n.two" });
  await w.publish(room, { type: "n.three", requiresAck: true });
  await pollUntil(() => net.dropped.length === 2);
  net.drop = () => false;
  assert.equal(alice.client.lastSeq(room), 1);

  const synced = [];
  alice.client.on("synced", (s) => synced.push(s));
  const results = await alice.client.sync();
  assert.deepEqual(results, [{ roomId: room, since: 1, lastSeq: 3, recovered: true }]);
  assert.deepEqual(alice.seen.map((s) => s.seq), [1, 2, 3], "the gap, handed over before sync() resolved");
  assert.deepEqual(synced, results);
  assert.equal(alice.client.lastSeq(room), 3);
  await pollUntil(async () => (await w.history(room)).body.notifications[2]?.deliveryStatus === "acked", 5000);

  // Nothing missed: a sync brings nothing again; live ones carry on; one socket all along.
  await alice.client.sync(room);
  await w.publish(room, { type: "n.four" });
  await waitForCount(alice.client, alice.seen, 4);
  assert.equal(await quiet(alice.client, "notification", 300), true);
  assert.deepEqual(alice.seen.map((s) => s.seq), [1, 2, 3, 4]);
  assert.equal(net.urls.length, 1);
  // Concurrent calls share one sync; a room not held gives no result.
  const [a, b] = await Promise.all([alice.client.sync(), alice.client.sync()]);
  assert.deepEqual(a, b);
  assert.deepEqual(await alice.client.sync("user_not_held"), []);
});

test("the page becoming visible again after being hidden syncs on its own", async (t) => {
  // A browser document (happy-dom), present only for this test.
  const win = new Window({ url: "http://localhost/" });
  let visibility = "visible";
  Object.defineProperty(win.document, "visibilityState", { get: () => visibility, configurable: true });
  globalThis.document = win.document;
  t.after(async () => {
    delete globalThis.document;
    await win.happyDOM.close();
  });
  const setVisibility = (v) => {
    visibility = v;
    win.document.dispatchEvent(new win.Event("visibilitychange"));
  };
  const make = clients(t);
  const u = uid();
  const room = `user_${u}`;
  const net = controlledWebSocket();
  const alice = make({ rooms: [room], token: tokenFor(u), WebSocket: net.WebSocket });
  await waitForState(alice.client, "connected");
  let syncs = 0;
  alice.client.on("synced", () => { syncs++; });

  // Visible to visible is no wake-up.
  setVisibility("visible");
  assert.equal(await quiet(alice.client, "synced", 200), true);

  setVisibility("hidden");
  net.drop = (f) => typeof f.seq === "number";
  await w.publish(room, { type: "while.hidden" });
  await pollUntil(() => net.dropped.length === 1);
  net.drop = () => false;
  const woke = waitForEvent(alice.client, "synced");
  setVisibility("visible");
  const [info] = await woke;
  assert.deepEqual(info, { roomId: room, since: 0, lastSeq: 1, recovered: true });
  await waitForCount(alice.client, alice.seen, 1);
  assert.equal(alice.seen[0].type, "while.hidden");
  assert.equal(syncs, 1);

  // A closed client no longer listens.
  await alice.client.close();
  setVisibility("hidden");
  setVisibility("visible");
  assert.equal(syncs, 1);
});

test("ephemeral notifications: handed over, never acked, never advance lastSeq, never in history", async (t) => {
  const make = clients(t);
  const u = uid();
  const req = `e${u}`;
  const rooms = [`user_${u}`, `request_${req}`];
  const alice = make({ rooms, token: tokenFor(u, { rooms: [`request_${req}`] }) });
  const acks = [];
  alice.client.on("ack", (a) => acks.push(...a.ids));
  const progress = [];
  alice.client.on("job.progress", (m) => progress.push(m.data.pct));
  await waitForState(alice.client, "connected");

  await w.publish(rooms[0], { type: "job.started", id: "job-1", requiresAck: true });
  await waitForCount(alice.client, alice.seen, 1);
  await pollUntil(() => acks.includes("job-1"));
  // Same id as the stored one: neither hides the other.
  const r = await w.publish(rooms[0], { type: "job.progress", id: "job-1", ephemeral: true, status: "pending", data: { pct: 10 } });
  assert.equal(r.body.ephemeral, true);
  await waitForCount(alice.client, alice.seen, 2);
  // To both rooms at once (POST /broadcast with a requestId): handed over once.
  const many = await w.request("POST", "/broadcast", {
    headers: { authorization: `Bearer ${API_KEY}` },
    body: { userId: u, requestId: req, message: { type: "job.progress", ephemeral: true, status: "pending", data: { pct: 20 } } },
  });
  assert.equal(many.status, 200);
  await waitForCount(alice.client, alice.seen, 3);
  assert.equal(await quiet(alice.client, "notification", 300), true);
  assert.deepEqual(progress, [10, 20]);
  const eph = alice.seen.slice(1);
  assert.ok(eph.every((m) => m.ephemeral === true && m.seq === undefined && m.status === "pending"));
  assert.equal(alice.client.lastSeq(rooms[0]), 1, "ephemerals take no seq");
  assert.deepEqual(acks, ["job-1"], "never acked");
  for (const room of rooms) {
    const h = (await w.history(room)).body.notifications;
    assert.ok(h.every((x) => x.type !== "job.progress"), `not in ${room}'s history`);
  }
  // Nor replayed: a sync brings nothing.
  await alice.client.sync();
  assert.equal(await quiet(alice.client, "notification", 200), true);
});
