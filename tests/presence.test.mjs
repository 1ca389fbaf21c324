// Presence (docs/protocol.md "Presence" and the presence route), end to end against workerd: the `presence`
// member of `connected`, presence.joined / left / updated to watchers only, a user with several
// tabs shown once, presence.set with its size and rate limits, the route's credentials and
// limits, and sockets dropped without a close frame.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, assertError, roundTrip, closedWith, eventually } from "./support/checks.mjs";

const STATE_BYTES = 64;

let w;
before(async () => { w = await startWorker({ bindings: { PRESENCE_STATE_BYTES: String(STATE_BYTES) } }); });
after(async () => { await w?.stop(); });

/** A token for `sub` allowed in `room`. */
const tok = (sub, room) => tokenFor(sub, { rooms: [room] });
/** Connects `sub` to `room`; `watch` asks for presence frames. */
const join = (room, sub, { watch = false, query = {} } = {}) =>
  w.connect(room, { token: tok(sub, room), query: watch ? { presence: "1", ...query } : query });

/** GET /rooms/{room}/presence with the API key (or `headers`); asserts 200. */
async function presenceOf(room, query = "", headers = KEY) {
  const r = await w.request("GET", `/rooms/${room}/presence${query}`, { headers });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

/** Polls the presence route until `pred(body)` holds: a close has no frame of its own to await. */
const presenceUntil = (room, pred, what) =>
  eventually(async () => { const p = await presenceOf(room); return pred(p) && p; }, { what });

/** The user entry of `sub` in a presence listing. */
const userIn = (listing, sub) => listing.users.find((u) => u.userId === sub);

function assertUser(u, sub, connections, state = {}) {
  assert.deepEqual(Object.keys(u).sort(), ["connections", "since", "state", "userId"], JSON.stringify(u));
  assert.deepEqual([u.userId, u.connections, u.state], [sub, connections, state], JSON.stringify(u));
  assert.match(u.since, ISO_Z);
  assert.ok(Math.abs(Date.parse(u.since) - Date.now()) < 60_000, u.since);
}

/** Asserts a presence frame's exact shape. */
function assertFrame(f, type, userId, state) {
  const keys = type === "presence.left" ? ["timestamp", "type", "userId"] : ["state", "timestamp", "type", "userId"];
  assert.deepEqual(Object.keys(f).sort(), keys, JSON.stringify(f));
  assert.deepEqual([f.type, f.userId], [type, userId], JSON.stringify(f));
  if (state !== undefined) assert.deepEqual(f.state, state);
  assert.match(f.timestamp, ISO_Z);
}

/** An error frame with `code`. */
function assertRefusal(f, code) {
  assert.deepEqual(Object.keys(f).sort(), ["code", "message", "type"], JSON.stringify(f));
  assert.deepEqual([f.type, f.code], ["error", code], JSON.stringify(f));
  assert.ok(f.message.length > 0);
}

test("connected with presence=1 lists the room (own user included), count and users by userId", async () => {
  const room = roomName("p");
  const carol = await join(room, "carol");
  const bob = await join(room, "bob");
  assert.equal("presence" in bob.hello, false, "no presence member without presence=1");
  const off = await w.connect(room, { token: tok("dave", room), query: { presence: "0" } });
  assert.equal("presence" in off.hello, false, "presence=0 is off");
  const alice = await join(room, "alice", { watch: true });
  const p = alice.hello.presence;
  assert.deepEqual(Object.keys(p).sort(), ["count", "users"]);
  assert.equal(p.count, 4);
  assert.deepEqual(p.users.map((u) => u.userId), ["alice", "bob", "carol", "dave"]);
  for (const u of p.users) assertUser(u, u.userId, 1);
  assert.ok(Date.parse(userIn(p, "carol").since) <= Date.parse(userIn(p, "alice").since), "since is when each joined");
  // The route says the same.
  const listed = await presenceOf(room);
  assert.deepEqual(listed, { success: true, roomId: room, count: 4, users: p.users });
  for (const c of [alice, bob, carol, off]) c.terminate();
});

test("the connected frame lists the first 100 users by userId; count is all of them", async () => {
  const room = roomName("p100");
  const subs = Array.from({ length: 105 }, (_, i) => `m${String(i).padStart(3, "0")}`);
  // Joined out of order: the listing is ordered by userId, not by arrival.
  const shuffled = [...subs].sort((a, b) => (a.split("").reverse().join("") < b.split("").reverse().join("") ? -1 : 1));
  const clients = [];
  for (let i = 0; i < shuffled.length; i += 35) {
    clients.push(...(await Promise.all(shuffled.slice(i, i + 35).map((s) => join(room, s)))));
  }
  const watcher = await join(room, "a-watcher", { watch: true });
  const p = watcher.hello.presence;
  assert.equal(p.count, 106);
  assert.equal(p.users.length, 100);
  assert.deepEqual(p.users.map((u) => u.userId), ["a-watcher", ...subs.slice(0, 99)]);
  for (const c of [...clients, watcher]) c.terminate();
});

test("joined, updated and left go to watchers only, never about one's own arrival; type filters do not apply", async () => {
  const room = roomName("pj");
  const plain = await join(room, "n");
  // A watcher narrowed to note.* still gets presence frames: presence=1 is their own opt-in.
  const watcher = await join(room, "w", { watch: true, query: { types: "note.*" } });
  assert.deepEqual(await roundTrip(watcher), [], "a watcher is not told of its own arrival");
  const x = await join(room, "x", { watch: true });
  assertFrame(await watcher.next(), "presence.joined", "x", {});
  assert.equal(x.hello.presence.count, 3);
  assert.deepEqual(await roundTrip(x), [], "a newcomer is not told of its own arrival");
  assert.deepEqual(await roundTrip(plain), [], "a connection without presence=1 gets no presence frames");

  x.send({ type: "presence.set", data: { typing: true } });
  assertFrame(await watcher.next(), "presence.updated", "x", { typing: true });
  // The sender watches too, so it hears of its own user's change.
  assertFrame(await x.next(), "presence.updated", "x", { typing: true });
  assert.deepEqual(await roundTrip(plain), []);

  await x.close();
  assertFrame(await watcher.next(), "presence.left", "x");
  assert.deepEqual(await roundTrip(plain), []);
  assert.deepEqual(await roundTrip(watcher), [], "one frame per change");
  watcher.terminate();
  plain.terminate();
});

test("a watcher hears of every user who joins after it (joins before it are in its connected frame)", async () => {
  const room = roomName("pw");
  const early = await join(room, "early");
  const watcher = await join(room, "w", { watch: true });
  assert.deepEqual(watcher.hello.presence.users.map((u) => u.userId), ["early", "w"]);
  const late = await join(room, "late");
  assertFrame(await watcher.next(), "presence.joined", "late", {});
  assert.deepEqual(await roundTrip(watcher), [], "nothing about `early`, which it already knew of");
  for (const c of [early, watcher, late]) c.terminate();
});

test("a user with two tabs shows once; the second tab joining or leaving sends nothing; the user leaves with the last", async () => {
  const room = roomName("ptabs");
  const watcher = await join(room, "w", { watch: true });
  const tab1 = await join(room, "amy");
  assertFrame(await watcher.next(), "presence.joined", "amy", {});
  const tab2 = await join(room, "amy");
  assert.deepEqual(await roundTrip(watcher), [], "a second tab joining sends nothing");
  const listed = await presenceOf(room);
  assert.equal(listed.count, 2);
  assertUser(userIn(listed, "amy"), "amy", 2);
  const other = await join(room, "z", { watch: true });
  assert.deepEqual(other.hello.presence.users.map((u) => u.userId), ["amy", "w", "z"]);
  assertUser(userIn(other.hello.presence, "amy"), "amy", 2);
  assertFrame(await watcher.next(), "presence.joined", "z", {});

  await tab1.close();
  await presenceUntil(room, (p) => userIn(p, "amy")?.connections === 1, "amy down to one connection");
  assert.deepEqual(await roundTrip(watcher), [], "a second tab leaving sends nothing");
  const since = userIn(listed, "amy").since;
  assert.equal(userIn(await presenceOf(room), "amy").since, since, "still the same stretch of presence");

  await tab2.close();
  assertFrame(await watcher.next(), "presence.left", "amy");
  assertFrame(await other.next(), "presence.left", "amy");
  const after = await presenceOf(room);
  assert.deepEqual(after.users.map((u) => u.userId), ["w", "z"]);
  assert.equal(after.count, 2);
  watcher.terminate();
  other.terminate();
});

test("presence.set: watchers get the state, an equal state sends nothing, the state goes when the user leaves", async () => {
  const room = roomName("pset");
  const watcher = await join(room, "w", { watch: true });
  const tab1 = await join(room, "bea");
  const tab2 = await join(room, "bea");
  assertFrame(await watcher.next(), "presence.joined", "bea", {});

  tab1.send({ type: "presence.set", data: { status: "away", n: 1 } });
  assertFrame(await watcher.next(), "presence.updated", "bea", { status: "away", n: 1 });
  assert.deepEqual(await roundTrip(tab1), [], "a tab without presence=1 gets no presence frames");
  assertUser(userIn(await presenceOf(room), "bea"), "bea", 2, { status: "away", n: 1 });

  // The same state again, from the user's other tab and with its members in another order.
  tab2.send({ type: "presence.set", data: { status: "away", n: 1 } });
  tab2.send({ type: "presence.set", data: { n: 1, status: "away" } });
  assert.deepEqual(await roundTrip(tab2), [], "no error for an equal state");
  assert.deepEqual(await roundTrip(watcher), [], "an equal state sends nothing");

  // A new tab and a new watcher see the state the user set.
  const tab3 = await join(room, "bea", { watch: true });
  assertUser(userIn(tab3.hello.presence, "bea"), "bea", 3, { status: "away", n: 1 });
  tab2.send({ type: "presence.set", data: { status: "busy" } });
  assertFrame(await watcher.next(), "presence.updated", "bea", { status: "busy" });
  assertFrame(await tab3.next(), "presence.updated", "bea", { status: "busy" });

  // The state is kept while any tab is open, whichever set it.
  await tab2.close();
  await presenceUntil(room, (p) => userIn(p, "bea")?.connections === 2, "bea down to two tabs");
  assertUser(userIn(await presenceOf(room), "bea"), "bea", 2, { status: "busy" });

  await Promise.all([tab1.close(), tab3.close()]);
  assertFrame(await watcher.next(), "presence.left", "bea");
  const back = await join(room, "bea");
  assertFrame(await watcher.next(), "presence.joined", "bea", {});
  assertUser(userIn(await presenceOf(room), "bea"), "bea", 1, {});
  watcher.terminate();
  back.terminate();
});

test("presence.set refusals: too_large over PRESENCE_STATE_BYTES, invalid_message for a non-object, rate_limited beyond 3 per 10 s; the connection keeps working", async () => {
  const room = roomName("pbad");
  const watcher = await join(room, "w", { watch: true });
  const c = await join(room, "cy");
  assertFrame(await watcher.next(), "presence.joined", "cy", {});

  /** A state whose JSON text is exactly `n` bytes. */
  const stateOf = (n, tag) => {
    const base = JSON.stringify({ t: tag, p: "" }).length;
    const s = { t: tag, p: "x".repeat(n - base) };
    assert.equal(JSON.stringify(s).length, n);
    return s;
  };
  const exact = stateOf(STATE_BYTES, "a");
  c.send({ type: "presence.set", data: exact });
  assertFrame(await watcher.next(), "presence.updated", "cy", exact);

  c.send({ type: "presence.set", data: stateOf(STATE_BYTES + 1, "b") });
  assertRefusal(await c.next(), "too_large");
  for (const bad of [{ data: [1] }, { data: "away" }, { data: 5 }, {}]) {
    c.send({ type: "presence.set", ...bad });
    assertRefusal(await c.next(), "invalid_message");
  }
  assert.deepEqual(await roundTrip(c), [], "still answered after the refusals");
  assert.deepEqual(await roundTrip(watcher), [], "a refused state is not announced");
  assertUser(userIn(await presenceOf(room), "cy"), "cy", 1, exact);

  // Three per 10 s: one was taken above, two more pass, the next is refused.
  c.send({ type: "presence.set", data: { k: 2 } });
  c.send({ type: "presence.set", data: { k: 3 } });
  c.send({ type: "presence.set", data: { k: 4 } });
  assertRefusal(await c.next(), "rate_limited");
  assertFrame(await watcher.next(), "presence.updated", "cy", { k: 2 });
  assertFrame(await watcher.next(), "presence.updated", "cy", { k: 3 });
  assert.deepEqual(await roundTrip(c), []);
  assert.deepEqual(await roundTrip(watcher), [], "the refused state is not announced");
  assertUser(userIn(await presenceOf(room), "cy"), "cy", 1, { k: 3 });
  // The connection still works: notifications arrive.
  const r = await w.publish(room, { type: "after.refusals" });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal((await c.next()).id, r.body.id);
  watcher.terminate();
  c.terminate();
});

test("presence.set refusals count toward 4002: the 10th refused set closes the connection", async () => {
  const room = roomName("pflood");
  const c = await join(room, "fl");
  for (let i = 0; i < 3; i++) c.send({ type: "presence.set", data: { i } });
  for (let i = 0; i < 9; i++) c.send({ type: "presence.set", data: { r: i } });
  const before = await roundTrip(c);
  assert.deepEqual(before.map((f) => f.code), Array(9).fill("rate_limited"));
  c.send({ type: "presence.set", data: { r: 9 } });
  assert.equal((await closedWith(c)).code, 4002);
});

test("the presence route: API key or a token allowed in the room; 401 and 403 otherwise; limit", async () => {
  const room = roomName("proute");
  const empty = await presenceOf(room);
  assert.deepEqual(empty, { success: true, roomId: room, count: 0, users: [] });
  const clients = [];
  for (const sub of ["c3", "a1", "b2", "a1"]) clients.push(await join(room, sub));
  clients[0].send({ type: "presence.set", data: { mood: "ok" } });
  await roundTrip(clients[0]);

  const byKey = await presenceOf(room);
  assert.deepEqual(Object.keys(byKey).sort(), ["count", "roomId", "success", "users"]);
  assert.deepEqual([byKey.success, byKey.roomId, byKey.count], [true, room, 3]);
  assert.deepEqual(byKey.users.map((u) => u.userId), ["a1", "b2", "c3"]);
  assertUser(byKey.users[0], "a1", 2);
  assertUser(byKey.users[1], "b2", 1);
  assertUser(byKey.users[2], "c3", 1, { mood: "ok" });

  // A token allowed in the room, in the header or as ?token=.
  const t = tok("reader", room);
  assert.deepEqual(await presenceOf(room, "", { authorization: `Bearer ${t}` }), byKey);
  assert.deepEqual(await presenceOf(room, `?token=${encodeURIComponent(t)}`, {}), byKey);
  // A user's own room admits its token.
  const own = await presenceOf("user_reader", "", { authorization: `Bearer ${tokenFor("reader")}` });
  assert.equal(own.roomId, "user_reader");

  const get = (q, headers = {}) => w.request("GET", `/rooms/${room}/presence${q}`, { headers });
  assertError(await get(""), 401, "unauthorized", "no credentials");
  assertError(await get("", { authorization: "Bearer wrong-key" }), 401, "unauthorized", "wrong key");
  assertError(await get("", { authorization: `Bearer ${tokenFor("reader", { rooms: [room], ttl: -60 })}` }), 401, "unauthorized", "expired token");
  assertError(await get("", { authorization: `Bearer ${tokenFor("reader", { rooms: ["other"] })}` }), 403, "forbidden", "token for another room");
  assertError(await get("", { authorization: `Bearer ${tokenFor("reader")}` }), 403, "forbidden", "token for its own room only");
  assertError(await w.request("POST", `/rooms/${room}/presence`, { headers: KEY }), 405, "method_not_allowed", "POST");
  assertError(await w.request("GET", "/rooms/a%2Fb/presence", { headers: KEY }), 400, "invalid_room_id", "bad room id");

  const two = await presenceOf(room, "?limit=2");
  assert.equal(two.count, 3, "count is every user, whatever the limit");
  assert.deepEqual(two.users, byKey.users.slice(0, 2));
  assert.deepEqual((await presenceOf(room, "?limit=1")).users, byKey.users.slice(0, 1));
  assert.deepEqual((await presenceOf(room, "?limit=5000")).users, byKey.users, "a limit over 1000 is accepted");
  for (const bad of ["?limit=0", "?limit=-1", "?limit=x", "?limit=1.5"]) {
    assertError(await get(bad, KEY), 400, "invalid_query", bad);
  }
  for (const c of clients) c.terminate();
});

test("a socket dropped without a close frame leaves presence (terminate, TCP reset)", async () => {
  const room = roomName("pdrop");
  const watcher = await join(room, "w", { watch: true });
  const gone = await join(room, "gone");
  assertFrame(await watcher.next(), "presence.joined", "gone", {});
  gone.terminate();
  assertFrame(await watcher.next(), "presence.left", "gone");
  assert.equal(userIn(await presenceOf(room), "gone"), undefined);

  // A TCP reset (RST), not even a FIN.
  const reset = await join(room, "rst");
  assertFrame(await watcher.next(), "presence.joined", "rst", {});
  reset.ws._socket.resetAndDestroy();
  assertFrame(await watcher.next(), "presence.left", "rst");
  assert.equal(userIn(await presenceOf(room), "rst"), undefined);

  // One of two tabs dropped: the user stays, with one connection, and nothing is sent.
  const tab1 = await join(room, "two");
  const tab2 = await join(room, "two");
  assertFrame(await watcher.next(), "presence.joined", "two", {});
  tab1.terminate();
  await presenceUntil(room, (p) => userIn(p, "two")?.connections === 1, "the dropped tab gone");
  assert.deepEqual(await roundTrip(watcher), []);
  tab2.terminate();
  assertFrame(await watcher.next(), "presence.left", "two");
  const left = await presenceOf(room);
  assert.deepEqual([left.count, left.users.map((u) => u.userId)], [1, ["w"]]);
  watcher.terminate();
});

test("a connection closed by the server leaves presence like any other (4003 after ten invalid frames)", async () => {
  const room = roomName("pkick");
  const watcher = await join(room, "w", { watch: true });
  const tab1 = await join(room, "kim");
  const tab2 = await join(room, "kim");
  assertFrame(await watcher.next(), "presence.joined", "kim", {});
  for (let i = 0; i < 10; i++) tab1.send("garbage");
  assert.equal((await closedWith(tab1)).code, 4003);
  await presenceUntil(room, (p) => userIn(p, "kim")?.connections === 1, "the closed tab gone");
  assert.deepEqual(await roundTrip(watcher), [], "kim still has a tab open");
  for (let i = 0; i < 10; i++) tab2.send("garbage");
  assert.equal((await closedWith(tab2)).code, 4003);
  assertFrame(await watcher.next(), "presence.left", "kim");
  assert.equal(userIn(await presenceOf(room), "kim"), undefined);
  watcher.terminate();
});

test("the presence route lists at most 1000 users: a larger limit is clamped, count is all of them", async () => {
  const room = roomName("pbig");
  const N = 1001;
  const subs = Array.from({ length: N }, (_, i) => `u${String(i).padStart(4, "0")}`);
  const clients = [];
  try {
    for (let i = 0; i < N; i += 100) {
      clients.push(...(await Promise.all(subs.slice(i, i + 100).map((s) => join(room, s)))));
    }
    for (const q of ["", "?limit=1001", "?limit=5000"]) {
      const p = await presenceOf(room, q);
      assert.equal(p.count, N, q);
      assert.equal(p.users.length, 1000, q);
      assert.deepEqual(p.users.map((u) => u.userId), subs.slice(0, 1000), q);
    }
    assert.equal((await presenceOf(room, "?limit=1000")).users.length, 1000);
  } finally {
    for (const c of clients) { c.terminate(); w.sockets.delete(c); }
  }
});
