// Presence follows the sockets the runtime holds (docs/protocol.md "Presence"), end to end against workerd:
// after the room hibernates it shows the same users, states and connection counts, and joins,
// leaves and state changes are still right; after a restart on persisted storage nobody shows
// as present until they reconnect.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, KEY, roundTrip, keyedHealth, eventually } from "./support/checks.mjs";

/** workerd hibernates a Durable Object after about 10 s without events. */
const HIBERNATION_IDLE_MS = 11_500;

const tok = (sub, room) => tokenFor(sub, { rooms: [room] });

async function presenceOf(w, room) {
  const r = await w.request("GET", `/rooms/${room}/presence`, { headers: KEY });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  return r.body;
}

function assertFrame(f, type, userId, state) {
  assert.deepEqual([f.type, f.userId], [type, userId], JSON.stringify(f));
  if (state !== undefined) assert.deepEqual(f.state, state, JSON.stringify(f));
  assert.match(f.timestamp, ISO_Z);
}

test("presence is right after the room hibernates: the same users, and joins, leaves and states after it", async () => {
  const w = await startWorker();
  try {
    const room = roomName("hib");
    const join = (sub, watch = false) => w.connect(room, { token: tok(sub, room), query: watch ? { presence: "1" } : {} });
    const watcher = await join("w", true);
    const amy1 = await join("amy");
    const amy2 = await join("amy");
    const bob = await join("bob");
    const dave = await join("dave");
    bob.send({ type: "presence.set", data: { s: 1 } });
    for (const [type, user] of [["presence.joined", "amy"], ["presence.joined", "bob"], ["presence.joined", "dave"], ["presence.updated", "bob"]]) {
      assertFrame(await watcher.next(), type, user);
    }
    for (let i = 0; i < 5; i++) {
      const r = await w.publish(room, { type: "before.idle", data: { i } });
      assert.equal(r.body.broadcastCount, 5);
    }
    for (const c of [watcher, amy1, amy2, bob, dave]) await c.until((f) => f.type === "before.idle" && f.data.i === 4);
    const before = await presenceOf(w, room);
    assert.deepEqual(before.users.map((u) => [u.userId, u.connections, u.state]),
      [["amy", 2, {}], ["bob", 1, { s: 1 }], ["dave", 1, {}], ["w", 1, {}]]);
    const awake = await keyedHealth(w, room);

    // Nothing may touch the room now: any request or frame would keep it awake.
    await new Promise((r) => setTimeout(r, HIBERNATION_IDLE_MS));

    // The first event after the idle spell: a socket dropped without a close frame.
    dave.terminate();
    assertFrame(await watcher.next(), "presence.left", "dave");
    // The room woke afresh (its in-memory counters restarted), so it did hibernate.
    const woke = await keyedHealth(w, room);
    assert.ok(woke.sqlRowsRead < awake.sqlRowsRead,
      `the room did not hibernate during the idle wait (rows read ${awake.sqlRowsRead} then ${woke.sqlRowsRead}): nothing was tested`);
    assert.equal(woke.connections, 4);

    // The same users, connection counts, states and since as before, minus dave.
    const after = await presenceOf(w, room);
    assert.deepEqual(after, { ...before, count: 3, users: before.users.filter((u) => u.userId !== "dave") });

    // Joins, leaves and states after the wake.
    const carol = await join("carol");
    assertFrame(await watcher.next(), "presence.joined", "carol", {});
    await amy1.close();
    await eventually(async () => (await presenceOf(w, room)).users.find((u) => u.userId === "amy")?.connections === 1,
      { what: "amy down to one tab" });
    assert.deepEqual(await roundTrip(watcher), [], "a second tab leaving sends nothing, after a wake too");
    await amy2.close();
    assertFrame(await watcher.next(), "presence.left", "amy");
    bob.send({ type: "presence.set", data: { s: 1 } });
    await roundTrip(bob);
    assert.deepEqual(await roundTrip(watcher), [], "bob's state survived hibernation: setting it again sends nothing");
    bob.send({ type: "presence.set", data: { s: 2 } });
    assertFrame(await watcher.next(), "presence.updated", "bob", { s: 2 });
    const late = await join("late", true);
    assert.deepEqual(late.hello.presence.users.map((u) => [u.userId, u.connections, u.state]),
      [["bob", 1, { s: 2 }], ["carol", 1, {}], ["late", 1, {}], ["w", 1, {}]]);
    assertFrame(await watcher.next(), "presence.joined", "late", {});
    // Notifications still reach everyone.
    const r = await w.publish(room, { type: "after.wake" });
    assert.equal(r.body.broadcastCount, 4);
  } finally {
    await w.stop();
  }
});

test("after a restart on persisted storage nobody is present until they reconnect", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-presence-"));
  const room = "presence_restart";
  let first;
  let second;
  try {
    first = await startWorker({ persist: dir });
    const port = Number(new URL(first.base).port);
    const amy = await first.connect(room, { token: tok("amy", room), query: { presence: "1" } });
    const bob = await first.connect(room, { token: tok("bob", room) });
    bob.send({ type: "presence.set", data: { s: 1 } });
    assertFrame(await amy.next(), "presence.joined", "bob", {});
    assertFrame(await amy.next(), "presence.updated", "bob", { s: 1 });
    const r = await first.publish(room, { type: "before.restart" });
    assert.equal(r.body.seq, 1);
    assert.equal((await presenceOf(first, room)).count, 2);
    await first.stop();
    first = undefined;

    second = await startWorker({ persist: dir, port });
    const restartedAt = Date.now();
    assert.deepEqual(await presenceOf(second, room), { success: true, roomId: room, count: 0, users: [] });
    assert.equal((await keyedHealth(second, room)).connections, 0);

    const amy2 = await second.connect(room, { token: tok("amy", room), query: { presence: "1" } });
    assert.equal(amy2.hello.lastSeq, 1, "the log survived the restart");
    assert.equal(amy2.hello.presence.count, 1);
    const [me] = amy2.hello.presence.users;
    assert.deepEqual([me.userId, me.connections, me.state], ["amy", 1, {}]);
    assert.ok(Date.parse(me.since) >= restartedAt - 1000, `a new stretch of presence: ${me.since}`);
    const bob2 = await second.connect(room, { token: tok("bob", room) });
    assertFrame(await amy2.next(), "presence.joined", "bob", {});
    const now = await presenceOf(second, room);
    assert.deepEqual(now.users.map((u) => [u.userId, u.connections, u.state]), [["amy", 1, {}], ["bob", 1, {}]]);
    bob2.terminate();
    assertFrame(await amy2.next(), "presence.left", "bob");
  } finally {
    await first?.stop();
    await second?.stop();
    await rm(dir, { recursive: true, force: true });
  }
});
