// Client events (docs/protocol.md "Client events"), end to end against workerd: refused when
// CLIENT_EVENT_TYPES does not allow them; when allowed, sent to the room's other connections
// whose filter matches, stamped with the sender's token `sub`; size and rate limits, each refusal
// answered and the connection kept working until the 10th.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, roundTrip, closedWith } from "./support/checks.mjs";

// The defaults: MAX_CLIENT_EVENT_BYTES 4096, CLIENT_EVENT_RATE 20 per 10 s.
const MAX_DATA = 4096;
const RATE = 20;

let off;
let on;
before(async () => {
  [off, on] = await Promise.all([
    startWorker(),
    startWorker({ bindings: { CLIENT_EVENT_TYPES: "typing.*,cursor.move" } }),
  ]);
});
after(async () => { await Promise.all([off?.stop(), on?.stop()]); });

const tok = (sub, room) => tokenFor(sub, { rooms: [room] });

function assertRefusal(f, code) {
  assert.deepEqual(Object.keys(f).sort(), ["code", "message", "type"], JSON.stringify(f));
  assert.deepEqual([f.type, f.code], ["error", code], JSON.stringify(f));
  assert.ok(f.message.length > 0);
}

/** Asserts an event frame's exact shape and content. */
function assertEvent(f, event, data, userId) {
  assert.deepEqual(Object.keys(f).sort(), ["data", "event", "timestamp", "type", "userId"], JSON.stringify(f));
  assert.deepEqual([f.type, f.event, f.data, f.userId], ["event", event, data, userId], JSON.stringify(f));
  assert.match(f.timestamp, ISO_Z);
  assert.ok(Math.abs(Date.parse(f.timestamp) - Date.now()) < 60_000, f.timestamp);
}

test("with CLIENT_EVENT_TYPES empty every emit is event_not_allowed, and counts as invalid: the 10th closes 4003", async () => {
  const room = roomName("ev0");
  const [a, b] = await Promise.all([off.connect(room, { token: tok("a", room) }), off.connect(room, { token: tok("b", room) })]);
  a.send({ type: "emit", event: "typing.start", data: { field: "title" } });
  assertRefusal(await a.next(), "event_not_allowed");
  assert.deepEqual(await roundTrip(a), [], "still answered after the refusal");
  assert.deepEqual(await roundTrip(b), [], "nothing reached the room");
  const r = await off.publish(room, { type: "note.created" });
  assert.equal((await a.next()).id, r.body.id, "notifications still arrive");
  await b.next();

  for (let i = 0; i < 8; i++) a.send({ type: "emit", event: `x.e${i}` });
  assert.deepEqual((await roundTrip(a)).map((f) => f.code), Array(8).fill("event_not_allowed"));
  // Nine refusals so far; the tenth closes, as for any invalid frame.
  a.send({ type: "emit", event: "typing.stop" });
  assert.equal((await closedWith(a)).code, 4003);
  assert.deepEqual(await roundTrip(b), [], "b is unharmed and got nothing");
  b.terminate();
});

test("an allowed emit reaches the room's other connections as an event stamped with the sender's sub; not the sender's own socket", async () => {
  const room = roomName("ev");
  const connect = (sub) => on.connect(room, { token: tok(sub, room) });
  const [alice1, alice2, bob, carol] = await Promise.all([connect("alice"), connect("alice"), connect("bob"), connect("carol")]);
  const elsewhere = await on.connect(`${room}x`, { token: tok("bob", `${room}x`) });

  alice1.send({ type: "emit", event: "typing.start", data: { field: "title" } });
  for (const c of [alice2, bob, carol]) assertEvent(await c.next(), "typing.start", { field: "title" }, "alice");
  assert.deepEqual(await roundTrip(alice1), [], "the sender's own socket does not get its event");
  assert.deepEqual(await roundTrip(elsewhere), [], "another room gets nothing");

  // The sender's other device is a sender too; data defaults to {}.
  alice2.send({ type: "emit", event: "cursor.move" });
  for (const c of [alice1, bob, carol]) assertEvent(await c.next(), "cursor.move", {}, "alice");
  assert.deepEqual(await roundTrip(alice2), []);
  bob.send({ type: "emit", event: "typing.stop", data: null });
  for (const c of [alice1, alice2, carol]) assertEvent(await c.next(), "typing.stop", {}, "bob");

  // Names outside CLIENT_EVENT_TYPES are refused and go nowhere.
  for (const event of ["cursor.moved", "typing", "typingx.start", "note.created"]) {
    carol.send({ type: "emit", event, data: {} });
    assertRefusal(await carol.next(), "event_not_allowed");
  }
  // Malformed emits are invalid_message (on another connection: ten invalid frames would close one).
  const dan = await connect("dan");
  for (const bad of [{}, { event: "" }, { event: "a b" }, { event: "t".repeat(129) }, { event: 5 },
    { event: "typing.start", data: [1] }, { event: "typing.start", data: "x" }]) {
    dan.send({ type: "emit", ...bad });
    assertRefusal(await dan.next(), "invalid_message");
  }
  for (const c of [alice1, alice2, bob, carol]) assert.deepEqual(await roundTrip(c), [], "no refused event was sent");
  // Events are ephemeral: nothing in the log.
  const h = await on.history(room);
  assert.deepEqual([h.body.lastSeq, h.body.notifications], [0, []]);
  for (const c of [alice1, alice2, bob, carol, dan, elsewhere]) c.terminate();
});

test("a client cannot forge userId: members the server sets are ignored, and the stamped userId is always the token's sub", async () => {
  const room = roomName("forge");
  const mallory = await on.connect(room, { token: tok("mallory", room), headers: { "x-roomcast-sub": "bob" } });
  const victim = await on.connect(room, { token: tok("victim", room) });
  for (const extra of [{ userId: "bob" }, { sub: "bob" }, { from: "bob" }, { timestamp: "2020-01-01T00:00:00Z" }]) {
    mallory.send({ type: "emit", event: "typing.start", data: {}, ...extra });
    const got = await victim.next();
    assertEvent(got, "typing.start", {}, "mallory");
    assert.notEqual(got.timestamp, "2020-01-01T00:00:00Z", "the server stamps the time too");
  }
  assert.deepEqual(await roundTrip(mallory), [], "no error for the ignored members");
  // A userId inside data is just data; the frame's userId is the token's sub (not the spoofed header's).
  mallory.send({ type: "emit", event: "typing.start", data: { userId: "bob" } });
  assertEvent(await victim.next(), "typing.start", { userId: "bob" }, "mallory");
  mallory.terminate();
  victim.terminate();
});

test("type filters apply: a connection narrowed to note.* gets no typing.* until it subscribes to it", async () => {
  const room = roomName("evf");
  const sender = await on.connect(room, { token: tok("s", room) });
  const narrow = await on.connect(room, { token: tok("n", room), query: { types: "note.*" } });
  const all = await on.connect(room, { token: tok("a", room) });

  sender.send({ type: "emit", event: "typing.start" });
  assertEvent(await all.next(), "typing.start", {}, "s");
  assert.deepEqual(await roundTrip(narrow), [], "typing.* does not match note.*");
  const pub = await on.publish(room, { type: "note.created" });
  assert.equal((await narrow.next()).id, pub.body.id, "its notifications still arrive");
  await all.next();

  narrow.send({ type: "subscribe", data: { types: ["typing.*"] } });
  assert.deepEqual((await narrow.next()).data.types, ["note.*", "typing.*"]);
  sender.send({ type: "emit", event: "typing.start", data: { n: 2 } });
  assertEvent(await narrow.next(), "typing.start", { n: 2 }, "s");
  assertEvent(await all.next(), "typing.start", { n: 2 }, "s");
  // An exact filter matches an event of that exact name only.
  narrow.send({ type: "unsubscribe", data: { types: ["typing.*"] } });
  await narrow.next();
  narrow.send({ type: "subscribe", data: { types: ["cursor.move"] } });
  await narrow.next();
  sender.send({ type: "emit", event: "typing.stop" });
  sender.send({ type: "emit", event: "cursor.move" });
  assertEvent(await all.next(), "typing.stop", {}, "s");
  assertEvent(await all.next(), "cursor.move", {}, "s");
  assertEvent(await narrow.next(), "cursor.move", {}, "s");
  assert.deepEqual(await roundTrip(narrow), []);
  for (const c of [sender, narrow, all]) c.terminate();
});

test("data over MAX_CLIENT_EVENT_BYTES is too_large and not sent; exactly the limit is sent", async () => {
  const room = roomName("evbig");
  const sender = await on.connect(room, { token: tok("s", room) });
  const other = await on.connect(room, { token: tok("o", room) });
  /** Data whose JSON text is exactly `n` bytes. */
  const dataOf = (n) => {
    const d = { pad: "x".repeat(n - JSON.stringify({ pad: "" }).length) };
    assert.equal(JSON.stringify(d).length, n);
    return d;
  };
  sender.send({ type: "emit", event: "cursor.move", data: dataOf(MAX_DATA) });
  assertEvent(await other.next(), "cursor.move", dataOf(MAX_DATA), "s");
  sender.send({ type: "emit", event: "cursor.move", data: dataOf(MAX_DATA + 1) });
  assertRefusal(await sender.next(), "too_large");
  assert.deepEqual(await roundTrip(sender), [], "the sender keeps working");
  assert.deepEqual(await roundTrip(other), [], "the oversize event was not sent");
  sender.send({ type: "emit", event: "cursor.move", data: { x: 1 } });
  assertEvent(await other.next(), "cursor.move", { x: 1 }, "s");
  sender.terminate();
  other.terminate();
});

test("beyond CLIENT_EVENT_RATE per 10 s emits are rate_limited and not sent; the 10th refusal closes 4002", async () => {
  const room = roomName("evrate");
  const sender = await on.connect(room, { token: tok("s", room) });
  const other = await on.connect(room, { token: tok("o", room) });
  for (let i = 0; i <= RATE; i++) sender.send({ type: "emit", event: "cursor.move", data: { i } });
  assertRefusal(await sender.next(), "rate_limited");
  for (let i = 0; i < RATE; i++) assertEvent(await other.next(), "cursor.move", { i }, "s");
  assert.deepEqual(await roundTrip(other), [], `only ${RATE} events were sent`);
  // The sender keeps working: pings are answered and notifications arrive.
  assert.deepEqual(await roundTrip(sender), []);
  const pub = await on.publish(room, { type: "note.created" });
  assert.equal((await sender.next()).id, pub.body.id);
  await other.next();

  const flood = await on.connect(room, { token: tok("f", room) });
  for (let i = 0; i < RATE + 9; i++) flood.send({ type: "emit", event: "cursor.move", data: { i } });
  assert.deepEqual((await roundTrip(flood)).map((f) => f.code), Array(9).fill("rate_limited"));
  flood.send({ type: "emit", event: "cursor.move" });
  assert.equal((await closedWith(flood)).code, 4002);
  for (let i = 0; i < RATE; i++) assertEvent(await other.next(), "cursor.move", { i }, "f");
  assert.deepEqual(await roundTrip(other), []);
  sender.terminate();
  other.terminate();
});

test("CLIENT_EVENT_RATES limits each event name pattern on top of CLIENT_EVENT_RATE; refusals name the event", async () => {
  const w = await startWorker({
    bindings: { CLIENT_EVENT_TYPES: "typing.*,cursor.move,room.join", CLIENT_EVENT_RATES: "typing.*=2/5s, room.join=1/60s" },
  });
  try {
    const room = roomName("rates");
    const a = await w.connect(room, { token: tok("a", room) });
    const b = await w.connect(room, { token: tok("b", room) });
    a.send({ type: "emit", event: "typing.start" });
    a.send({ type: "emit", event: "typing.stop" });
    a.send({ type: "emit", event: "typing.start" });
    const refused = await a.next();
    assertRefusal(refused, "rate_limited");
    assert.match(refused.message, /CLIENT_EVENT_RATES.*typing\.start/);
    // Other names go on under the general rate; room.join has its own, smaller one.
    a.send({ type: "emit", event: "cursor.move" });
    a.send({ type: "emit", event: "room.join" });
    a.send({ type: "emit", event: "room.join" });
    assertRefusal(await a.next(), "rate_limited");
    const got = [];
    for (let i = 0; i < 4; i++) got.push((await b.next()).event);
    assert.deepEqual(got, ["typing.start", "typing.stop", "cursor.move", "room.join"]);
    assert.deepEqual(await roundTrip(b), [], "the refused events reached nobody");
  } finally {
    await w.stop();
  }
});

test("a CLIENT_EVENT_RATES value that does not parse fails closed with a message naming it", async () => {
  const w = await startWorker({ bindings: { CLIENT_EVENT_RATES: "typing.*=5" } });
  try {
    const room = roomName("badrates");
    const r = await w.request("GET", `/rooms/${room}/subscribe?token=${tok("a", room)}`);
    assert.equal(r.status, 503, JSON.stringify(r.body));
    assert.match(r.body.error.message, /CLIENT_EVENT_RATES/);
  } finally {
    await w.stop();
  }
});
