// RealtimeClient reconnecting: across a runtime restart on the same storage (resume with no gap
// and no duplicate), token refresh after 4001, close codes 4002/4003, backoff timing, keepalive.
// Against stand-in servers (where the client is under test, not the worker): keepalive, 4008
// idle, and batched frames.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { WebSocketServer } from "ws";
import { startWorker, tokenFor, signHs256 } from "../support/harness.mjs";
import {
  makeClient, waitForState, waitForEvent, waitForCount, deferred, freePort, quiet,
} from "./helpers.mjs";

const cleanup = [];
after(async () => { for (const fn of cleanup.reverse()) await fn(); });

let n = 0;
const uid = () => `r${process.pid}x${Date.now().toString(36)}x${n++}`;

test("resumes after the runtime restarts on the same storage: no gap, no duplicate", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-client-"));
  cleanup.push(() => rm(dir, { recursive: true, force: true }));
  const port = await freePort();
  let w = await startWorker({ persist: dir, port });
  cleanup.push(() => w.stop());
  const u = uid();
  const room = `user_${u}`;
  // getToken runs before every (re)connect: the test holds it to publish while the client is
  // provably away, then lets it in.
  let gate = null;
  const reasons = [];
  const { client, seen } = makeClient({
    url: w.base,
    rooms: [room],
    getToken: async ({ reason }) => {
      reasons.push(reason);
      if (gate) { gate.asked.resolve(); await gate.open.promise; }
      return tokenFor(u);
    },
    initialDelayMs: 50,
    maxDelayMs: 200,
  });
  const recoveries = [];
  client.on("recovery", (r) => recoveries.push(r));
  try {
    await waitForState(client, "connected");
    for (let i = 1; i <= 3; i++) await w.publish(room, { type: "note.created", data: { i } });
    await waitForCount(client, seen, 3);

    gate = { asked: deferred(), open: deferred() };
    const dropped = waitForEvent(client, "disconnected");
    await w.stop();
    const [drop] = await dropped;
    assert.equal(drop.wasConnected, true);
    assert.equal(client.state, "reconnecting");

    w = await startWorker({ persist: dir, port });
    await gate.asked.promise; // the client is between attempts, holding no socket
    const r4 = await w.publish(room, { type: "note.created", data: { i: 4 } });
    const r5 = await w.publish(room, { type: "note.created", data: { i: 5 } });
    assert.deepEqual([r4.body.seq, r5.body.seq], [4, 5], "seq continues across the restart");
    assert.equal(r4.body.broadcastCount, 0);
    gate.open.resolve();
    gate = null;

    await waitForState(client, "connected", 10000);
    await waitForCount(client, seen, 5);
    await w.publish(room, { type: "note.created", data: { i: 6 } });
    await waitForCount(client, seen, 6);
    assert.equal(await quiet(client, "notification", 300), true);
    assert.deepEqual(seen.map((s) => s.data.i), [1, 2, 3, 4, 5, 6]);
    assert.deepEqual(seen.map((s) => s.seq), [1, 2, 3, 4, 5, 6]);
    assert.equal(new Set(seen.map((s) => s.id)).size, 6);
    assert.deepEqual(recoveries.map((r) => [r.since, r.recovered]), [[3, true]]);
    assert.equal(reasons[0], "connect");
    assert.ok(reasons.slice(1).every((r) => r === "reconnect"), reasons.join());
  } finally {
    await client.close();
  }
});

let shared;
async function worker() {
  if (!shared) {
    shared = await startWorker({ bindings: { RATE_LIMIT_PER_MINUTE: "20" } });
    cleanup.push(() => shared.stop());
  }
  return shared;
}

/** A token that the server still admits (within its 5 s leeway) but closes with 4001 in ~2 s. */
function expiringToken(sub) {
  const now = Math.floor(Date.now() / 1000);
  return signHs256({ sub, iat: now - 10, exp: now - 3 });
}

// The server closes an expired token's socket at exp + 5 s leeway; workerd then takes several
// seconds to end the TCP connection, which is when `ws` reports the close. So the three cases
// share one wait.
test("4001: getToken supplies a new token and the client resumes; without a new token it stops", async () => {
  const w = await worker();
  const LONG = 25000;

  // (1) getToken: a short-lived token first, then a good one.
  const u = uid();
  const room = `user_${u}`;
  const calls = [];
  const refresh = makeClient({
    url: w.base,
    rooms: [room],
    getToken: ({ reason }) => {
      calls.push(reason);
      return calls.length === 1 ? expiringToken(u) : tokenFor(u);
    },
    initialDelayMs: 50,
  });
  // (2) a static token, (3) a getToken that can only return the same token again.
  const v = uid();
  const fixed = expiringToken(v);
  const stat = makeClient({ url: w.base, rooms: [`user_${v}`], token: fixed, initialDelayMs: 10 });
  let asked = 0;
  const same = makeClient({ url: w.base, rooms: [`user_${v}`], getToken: () => { asked++; return fixed; }, initialDelayMs: 10 });
  const all = [refresh, stat, same];
  try {
    const dropped = waitForEvent(refresh.client, "disconnected", () => true, LONG);
    const recovered = waitForEvent(refresh.client, "recovery", () => true, LONG);
    const stopped = [stat, same].map((c) => waitForEvent(c.client, "state", (s) => s === "error", LONG));
    await Promise.all(all.map((c) => waitForState(c.client, "connected")));
    await w.publish(room, { type: "note.created", data: { i: 1 } });
    await waitForCount(refresh.client, refresh.seen, 1);

    const [drop] = await dropped;
    assert.equal(drop.code, 4001);
    const [rec] = await recovered;
    assert.deepEqual([rec.since, rec.recovered], [1, true]);
    assert.deepEqual(calls, ["connect", "expired"]);
    assert.equal(refresh.client.state, "connected");
    await w.publish(room, { type: "note.created", data: { i: 2 } });
    await waitForCount(refresh.client, refresh.seen, 2);
    assert.deepEqual(refresh.seen.map((s) => s.data.i), [1, 2]);

    await Promise.all(stopped);
    for (const c of [stat, same]) {
      const fatal = c.errors.find((e) => e.fatal);
      assert.equal(fatal.code, "token_expired");
      assert.equal(fatal.closeCode, 4001);
    }
    assert.equal(asked, 2, "asked once to connect, once after the 4001");
    assert.equal(await quiet(stat.client, "state", 300), true, "no reconnect attempts");
  } finally {
    await Promise.all(all.map((c) => c.client.close()));
  }
});

test("4003 (invalid frames) stops the client; 4002 (rate limited) backs off harder", async () => {
  const w = await worker();
  const u = uid();
  const invalid = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u), initialDelayMs: 10 });
  const limited = makeClient({
    url: w.base,
    rooms: [`user_${u}`],
    token: tokenFor(u),
    initialDelayMs: 100,
    rateLimitedDelayMs: 600,
    random: () => 0.5,
  });
  try {
    await Promise.all([waitForState(invalid.client, "connected"), waitForState(limited.client, "connected")]);
    for (let i = 0; i < 10; i++) invalid.client.send("not json");
    const [gone] = await waitForEvent(invalid.client, "disconnected");
    assert.equal(gone.code, 4003);
    assert.equal(invalid.client.state, "error");
    assert.equal(invalid.errors.find((e) => e.fatal).code, "invalid_frames");

    // 20 frames a minute: the 21st and on are refused, the 10th refusal closes with 4002.
    const dropped = waitForEvent(limited.client, "disconnected");
    const planned = waitForEvent(limited.client, "reconnecting");
    for (let i = 0; i < 40; i++) limited.client.send({ type: "ping" });
    const [drop] = await dropped;
    assert.equal(drop.code, 4002);
    const t0 = Date.now();
    const [plan] = await planned;
    // attempt 1: jitter 0.5 * 100 ms, plus the 600 ms penalty for 4002.
    assert.deepEqual([plan.attempt, plan.delayMs, plan.code], [1, 650, 4002]);
    await waitForState(limited.client, "connected", 5000);
    const took = Date.now() - t0;
    assert.ok(took >= 640 && took < 2500, `reconnected after ${took} ms`);
  } finally {
    await Promise.all([invalid.client.close(), limited.client.close()]);
  }
});

test("real reconnects follow the backoff schedule and stop at maxReconnectAttempts", async () => {
  // A port nothing listens on: every attempt fails at once, so the gaps are the delays.
  const port = await freePort();
  const plans = [];
  const { client, errors } = makeClient({
    url: `http://127.0.0.1:${port}`,
    rooms: ["user_nobody"],
    token: tokenFor("nobody"),
    initialDelayMs: 40,
    maxDelayMs: 160,
    random: () => 0.999,
    maxReconnectAttempts: 4,
  });
  const t0 = Date.now();
  client.on("reconnecting", (p) => plans.push(p));
  try {
    await waitForState(client, "error", 5000);
    const took = Date.now() - t0;
    assert.ok(took >= 39 + 79 + 159 + 159, `gave up after ${took} ms`);
    assert.deepEqual(plans.map((p) => p.delayMs), [39, 79, 159, 159]);
    assert.deepEqual(plans.map((p) => p.attempt), [1, 2, 3, 4]);
    assert.equal(errors.at(-1).code, "max_reconnect_attempts");
    assert.equal(client.state, "error");
  } finally {
    await client.close();
  }
});

/** A stand-in WebSocket server on loopback (the client is under test, not the worker). */
async function standIn() {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((r) => wss.on("listening", r));
  cleanup.push(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); wss.close(r); }));
  return { wss, url: `http://127.0.0.1:${wss.address().port}` };
}

test("keepalive: a peer that stops answering `ping` is treated as dead and replaced", async () => {
  // A stand-in server: says `connected`, then never answers anything.
  const { wss, url } = await standIn();
  const pings = [];
  let accepted = 0;
  wss.on("connection", (sock) => {
    accepted++;
    sock.on("message", (m) => pings.push(m.toString()));
    sock.send(JSON.stringify({ type: "connected", roomId: "user_k", connectionId: `c${accepted}`, lastSeq: 0 }));
  });
  const { client } = makeClient({
    url,
    rooms: ["user_k"],
    token: "t",
    pingIntervalMs: 100,
    pongTimeoutMs: 80,
    initialDelayMs: 10,
  });
  try {
    await waitForState(client, "connected");
    const t0 = Date.now();
    const [drop] = await waitForEvent(client, "disconnected", () => true, 3000);
    const took = Date.now() - t0;
    assert.equal(drop.reason, "keepalive timeout");
    // First ping at 100 ms, declared dead 80 ms later.
    assert.ok(took >= 170 && took < 1000, `detected after ${took} ms`);
    assert.deepEqual(pings, ["ping"]);
    const [hello] = await waitForEvent(client, "connected", () => true, 3000);
    assert.equal(hello.connectionId, "c2");
    assert.equal(accepted, 2);
  } finally {
    await client.close();
  }
});

test("keepalive: answered pings keep the connection", async () => {
  const { wss, url } = await standIn();
  let pings = 0;
  wss.on("connection", (sock) => {
    sock.on("message", (m) => { if (m.toString() === "ping") { pings++; sock.send("pong"); } });
    sock.send(JSON.stringify({ type: "connected", roomId: "user_k", connectionId: "c1", lastSeq: 0 }));
  });
  const { client } = makeClient({
    url,
    rooms: ["user_k"],
    token: "t",
    pingIntervalMs: 50,
    pongTimeoutMs: 100,
  });
  try {
    await waitForState(client, "connected");
    assert.equal(await quiet(client, "disconnected", 600), true);
    assert.ok(pings >= 5, `${pings} pings`);
  } finally {
    await client.close();
  }
});

test("4008 idle: the client reconnects at once, not as a failure, however many times", async () => {
  // The stand-in closes its first two connections as idle right after `connected`. With one
  // attempt allowed and a 5 s backoff, only reconnecting at once without counting gets through.
  const { wss, url } = await standIn();
  let accepted = 0;
  wss.on("connection", (sock) => {
    accepted++;
    sock.send(JSON.stringify({ type: "connected", roomId: "user_k", connectionId: `c${accepted}`, lastSeq: 0 }));
    if (accepted <= 2) sock.close(4008, "idle");
  });
  const lines = [];
  const { client, errors } = makeClient({
    url, rooms: ["user_k"], token: "t", initialDelayMs: 5000, maxReconnectAttempts: 1,
    debug: (message) => lines.push(message),
  });
  const plans = [];
  client.on("reconnecting", (p) => plans.push(p));
  try {
    await waitForEvent(client, "connected", (c) => c.connectionId === "c3", 3000);
    assert.deepEqual(plans.map((p) => [p.attempt, p.delayMs, p.code]), [[1, 0, 4008], [1, 0, 4008]]);
    assert.deepEqual(errors, []);
    assert.equal(client.state, "connected");
    assert.ok(lines.includes("room user_k: closed: 4008 idle"), lines.join("\n"));
    assert.ok(lines.includes("room user_k: reconnecting in 0 ms (attempt 1, delay none, token reconnect)"), lines.join("\n"));
  } finally {
    await client.close();
  }
});

test("batch=1: asked for on every connection; each frame of a batch is handled as if it came alone", async () => {
  // One stand-in, two rooms: `user_alone` gets the frames one by one, `user_batched` the same
  // frames in one batch. What the app sees must be the same.
  const { wss, url } = await standIn();
  const at = "2026-01-01T00:00:00.000Z";
  const note = (seq, extra = {}) => ({ id: `n${seq}`, seq, attempt: 1, type: "note.created", data: { seq }, status: "success", timestamp: at, requiresAck: false, ...extra });
  const frames = [
    { type: "presence.joined", userId: "bob", state: {}, timestamp: at },
    note(1, { requiresAck: true }),
    { type: "event", event: "typing.start", data: {}, userId: "bob", timestamp: at },
    note(2),
    note(2), // a redelivery: dropped as a duplicate
    { id: "p1", type: "job.progress", data: { pct: 50 }, status: "pending", timestamp: at, requiresAck: false, ephemeral: true },
    { type: "presence.updated", userId: "bob", state: { away: true } },
    note(3),
  ];
  const urls = [];
  /** room -> the ids of the first ack the stand-in received from it */
  const acks = { user_alone: deferred(), user_batched: deferred() };
  wss.on("connection", (sock, req) => {
    urls.push(req.url);
    const room = decodeURIComponent(new URL(req.url, url).pathname.split("/")[2]);
    sock.on("message", (m) => {
      const f = JSON.parse(m.toString());
      if (f.type === "ack") acks[room].resolve(f.ids);
    });
    sock.send(JSON.stringify({ type: "connected", roomId: room, connectionId: room, lastSeq: 0, presence: { count: 1, users: [{ userId: "me" }] } }));
    if (room === "user_batched") sock.send(JSON.stringify({ type: "batch", frames }));
    else for (const f of frames) sock.send(JSON.stringify(f));
  });
  const seenBy = {};
  const made = [];
  for (const room of ["user_alone", "user_batched"]) {
    const { client, seen, errors } = makeClient({ url, rooms: [room], token: "t", presence: true });
    made.push(client);
    const got = { seen, errors, events: [], presence: [], duplicates: [], client };
    client.on("event", (e) => got.events.push(e.event));
    client.on("presence", (p) => got.presence.push(`${p.change}:${p.userId ?? ""}:${[...p.users.keys()].join(",")}`));
    client.on("duplicate", (d) => got.duplicates.push(d.id));
    seenBy[room] = got;
  }
  try {
    for (const room of ["user_alone", "user_batched"]) {
      const { client, seen } = seenBy[room];
      await waitForCount(client, seen, 4);
      const late = new Promise((_, reject) => setTimeout(() => reject(new Error(`no ack from ${room}`)), 5000).unref());
      seenBy[room].acks = await Promise.race([acks[room].promise, late]);
    }
    const view = (room) => {
      const g = seenBy[room];
      return {
        seen: g.seen.map((s) => `${s.id}:${s.seq ?? "ephemeral"}`), events: g.events, presence: g.presence,
        duplicates: g.duplicates, errors: g.errors, lastSeq: g.client.lastSeq(room), acks: g.acks,
      };
    };
    assert.deepEqual(view("user_batched"), {
      seen: ["n1:1", "n2:2", "p1:ephemeral", "n3:3"],
      events: ["typing.start"],
      presence: ["snapshot::me", "joined:bob:me,bob", "updated:bob:me,bob"],
      duplicates: ["n2"],
      errors: [],
      lastSeq: 3,
      acks: ["n1"],
    });
    assert.deepEqual(view("user_alone"), view("user_batched"));
    assert.equal(urls.length, 2);
    for (const u of urls) assert.equal(new URL(u, url).searchParams.get("batch"), "1", u);
  } finally {
    await Promise.all(made.map((c) => c.close()));
  }
});

test("4008 end to end: a silent connection is closed as idle and the client is back at once; a pinging one stays", async () => {
  const w = await startWorker({ bindings: { IDLE_TIMEOUT_SECONDS: "1" } });
  cleanup.push(() => w.stop());
  const u = uid();
  const room = `user_${u}`;
  // No keepalive: the server hears nothing from it. A 5 s backoff would show.
  const silent = makeClient({ url: w.base, rooms: [room], token: tokenFor(u), pingIntervalMs: 0, initialDelayMs: 5000 });
  // A text ping every 300 ms counts as activity, though the runtime answers it without the room.
  // In a room of its own: its pings would keep the silent socket's room from going idle, and so
  // delay the close event of the silent socket (see below) to ws's 30 s closing timeout.
  const v = uid();
  const pinging = makeClient({ url: w.base, rooms: [`user_${v}`], token: tokenFor(v), pingIntervalMs: 300 });
  const drops = [];
  pinging.client.on("disconnected", (d) => drops.push(d.code));
  const plans = [];
  silent.client.on("reconnecting", (p) => plans.push(p));
  try {
    await Promise.all([waitForState(silent.client, "connected"), waitForState(pinging.client, "connected")]);
    // The close frame comes within twice the timeout; `ws` reports it when workerd ends the TCP
    // connection, once the room has been idle for ~10 s (docs/operations.md, the TCP linger).
    const back = waitForEvent(silent.client, "connected", () => true, 21000);
    const [gone] = await waitForEvent(silent.client, "disconnected", () => true, 20000);
    assert.deepEqual([gone.code, gone.reason, gone.wasConnected], [4008, "idle", true]);
    const [hello] = await back;
    assert.equal(hello.resumed, true);
    assert.deepEqual(plans.map((p) => [p.attempt, p.delayMs, p.code]), [[1, 0, 4008]]);
    // The pinging client's room checked it as often meanwhile, and it is still connected.
    assert.deepEqual(drops, []);
    await Promise.all([w.publish(room, { type: "note.created" }), w.publish(`user_${v}`, { type: "note.created" })]);
    await Promise.all([waitForCount(silent.client, silent.seen, 1), waitForCount(pinging.client, pinging.seen, 1)]);
    assert.deepEqual([...silent.errors, ...pinging.errors], []);
  } finally {
    await Promise.all([silent.client.close(), pinging.client.close()]);
  }
});
