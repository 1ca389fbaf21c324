// RealtimeClient when the server refuses a connection, against the real worker: the client asks
// the subscribe URL (without Upgrade) why, as a browser must, and stops, waits or backs off. Every
// fatal refusal names its cause and room, and no refusal makes the client loop without end.
// Also: joining and leaving rooms on a live client.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, signHs256 } from "../support/harness.mjs";
import {
  makeClient, waitForState, waitForEvent, waitForCount, quiet, countingWebSocket, pollUntil, freePort,
} from "./helpers.mjs";

const cleanup = [];
after(async () => { for (const fn of cleanup.reverse()) await fn(); });

let shared;
async function worker() {
  if (!shared) {
    shared = await startWorker();
    cleanup.push(() => shared.stop());
  }
  return shared;
}

let n = 0;
const uid = () => `f${process.pid}x${Date.now().toString(36)}x${n++}`;
/** A well-formed token the server refuses (signed with another secret). */
const wrongToken = (sub) => signHs256({ sub, exp: Math.floor(Date.now() / 1000) + 3600 }, "not-the-server-secret-0123456789abcdef");

/** Options that would retry within milliseconds, so a retry that should not happen shows. */
const FAST = { initialDelayMs: 20, maxDelayMs: 40 };

test("a wrong token: fatal `unauthorized` at once with a plain token, after one fresh getToken otherwise", async () => {
  const w = await worker();
  const u = uid();
  const room = `user_${u}`;

  // (1) A plain token cannot be refreshed: one socket, then the fatal error.
  const c1 = countingWebSocket();
  const plain = makeClient({ url: w.base, rooms: [room], token: wrongToken(u), WebSocket: c1.WebSocket, ...FAST });
  // (2) getToken that only ever has wrong tokens: asked again once ("unauthorized"), then fatal.
  const c2 = countingWebSocket();
  const reasons2 = [];
  const hopeless = makeClient({
    url: w.base, rooms: [room], WebSocket: c2.WebSocket, ...FAST,
    getToken: ({ reason }) => { reasons2.push(reason); return wrongToken(`${u}-${reasons2.length}`); },
  });
  // (3) getToken whose cached token went bad: the fresh one connects.
  const c3 = countingWebSocket();
  const reasons3 = [];
  const refreshed = makeClient({
    url: w.base, rooms: [room], WebSocket: c3.WebSocket, ...FAST,
    getToken: ({ reason }) => { reasons3.push(reason); return reason === "unauthorized" ? tokenFor(u) : wrongToken(u); },
  });
  const all = [plain, hopeless, refreshed];
  try {
    const t0 = Date.now();
    await Promise.all([waitForState(plain.client, "error"), waitForState(hopeless.client, "error")]);
    assert.ok(Date.now() - t0 < 5000);
    for (const { errors } of [plain, hopeless]) {
      const fatal = errors.filter((e) => e.fatal);
      assert.equal(fatal.length, 1);
      assert.equal(fatal[0].code, "unauthorized");
      assert.equal(fatal[0].roomId, room);
      assert.equal(fatal[0].status, 401);
      assert.equal(fatal[0].serverCode, "unauthorized");
      assert.match(fatal[0].message, new RegExp(`room ${room}: the server refused the token \\(401 unauthorized`));
    }
    assert.match(plain.errors.find((e) => e.fatal).message, /pass getToken/);
    assert.deepEqual(reasons2, ["connect", "unauthorized"]);
    assert.equal(plain.client.roomStatus(room).error.code, "unauthorized");

    await waitForState(refreshed.client, "connected");
    assert.deepEqual(reasons3, ["connect", "unauthorized"]);
    await w.publish(room, { type: "note.created" });
    await waitForCount(refreshed.client, refreshed.seen, 1);

    // Stopped for good: nothing more is attempted.
    assert.equal(await quiet(plain.client, "state", 500), true);
    assert.equal(await quiet(hopeless.client, "state", 0), true);
    assert.deepEqual([c1.opened(room), c2.opened(room), c3.opened(room)], [1, 2, 2]);
    assert.deepEqual([c1.live(room), c2.live(room)], [0, 0]);
  } finally {
    await Promise.all(all.map((c) => c.client.close()));
  }
});

test("getToken returning the refused token again stops without another socket", async () => {
  const w = await worker();
  const u = uid();
  const room = `user_${u}`;
  const bad = wrongToken(u);
  const c = countingWebSocket();
  const reasons = [];
  const { client, errors } = makeClient({
    url: w.base, rooms: [room], WebSocket: c.WebSocket, ...FAST,
    getToken: ({ reason }) => { reasons.push(reason); return bad; },
  });
  try {
    await waitForState(client, "error");
    assert.deepEqual(reasons, ["connect", "unauthorized"]);
    const fatal = errors.find((e) => e.fatal);
    assert.equal(fatal.code, "unauthorized");
    assert.match(fatal.message, /getToken returned the same token again/);
    assert.equal(c.opened(room), 1);
  } finally {
    await client.close();
  }
});

test("a room the token may not enter: fatal `forbidden` for that room, the others stay connected", async () => {
  const w = await worker();
  const u = uid();
  const mine = `user_${u}`;
  const theirs = `request_${u}-secret`;
  const c = countingWebSocket();
  const { client, errors, seen } = makeClient({ url: w.base, rooms: [mine, theirs], token: tokenFor(u), WebSocket: c.WebSocket, ...FAST });
  try {
    const [err] = await waitForEvent(client, "error", (e) => e.fatal);
    assert.equal(err.code, "forbidden");
    assert.equal(err.roomId, theirs);
    assert.equal(err.status, 403);
    assert.equal(err.serverCode, "forbidden");
    assert.match(err.message, new RegExp(`room ${theirs}: not allowed in this room \\(403 forbidden: .*${theirs}`));
    assert.equal(client.roomState(theirs), "error");
    assert.equal(client.state, "error", "the client's state says one room stopped");
    await pollUntil(() => client.roomState(mine) === "connected");
    await w.publish(mine, { type: "note.created" });
    await waitForCount(client, seen, 1);
    assert.equal(await quiet(client, "reconnecting", 500), true);
    assert.equal(c.opened(theirs), 1);
    assert.equal(errors.filter((e) => e.fatal).length, 1);
    // connect() tries a stopped room again (e.g. after the user was granted access): refused again.
    client.connect();
    await waitForEvent(client, "error", (e) => e.fatal && e.code === "forbidden");
    assert.equal(c.opened(theirs), 2);
  } finally {
    await client.close();
  }
});

test("429: the client waits Retry-After, then connects once the other socket closed", async () => {
  const w = await startWorker({ bindings: { MAX_CONNECTIONS_PER_USER: "1" } });
  cleanup.push(() => w.stop());
  const u = uid();
  const room = `user_${u}`;
  const held = await w.connect(room, { token: tokenFor(u) });
  const c = countingWebSocket();
  const { client, errors } = makeClient({ url: w.base, rooms: [room], token: tokenFor(u), WebSocket: c.WebSocket, ...FAST });
  try {
    const [plan] = await waitForEvent(client, "reconnecting");
    assert.equal(plan.status, 429, `the probe answered ${plan.status}: the server must answer the probe with 429 when the upgrade would get it`);
    assert.ok(plan.retryAfterMs > 0, "Retry-After is honoured");
    assert.ok(plan.delayMs >= plan.retryAfterMs && plan.delayMs < plan.retryAfterMs + FAST.initialDelayMs);
    const t0 = Date.now();
    await held.close();
    await waitForState(client, "connected", plan.retryAfterMs + 10000);
    assert.ok(Date.now() - t0 >= plan.retryAfterMs - 1000, "it did not come back before Retry-After");
    assert.equal(c.opened(room), 2, "one refused socket, one accepted: no retries while waiting");
    assert.deepEqual(errors, []);
  } finally {
    await client.close();
  }
});

test("5xx and no answer are passing problems: backoff, bounded by maxReconnectAttempts", async () => {
  // No JWT_SECRET: the server fails closed with 503 until it is configured.
  const w = await startWorker({ bindings: { JWT_SECRET: undefined } });
  cleanup.push(() => w.stop());
  const u = uid();
  const broken = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u), ...FAST, maxReconnectAttempts: 3 });
  const port = await freePort();
  const away = makeClient({ url: `http://127.0.0.1:${port}`, rooms: [`user_${u}`], token: tokenFor(u), ...FAST, maxReconnectAttempts: 2 });
  const plans = { broken: [], away: [] };
  broken.client.on("reconnecting", (p) => plans.broken.push(p.status));
  away.client.on("reconnecting", (p) => plans.away.push(p.status));
  try {
    await Promise.all([waitForState(broken.client, "error"), waitForState(away.client, "error")]);
    assert.deepEqual(plans.broken, [503, 503, 503]);
    assert.deepEqual(plans.away, [0, 0]);
    const fatal = broken.errors.find((e) => e.fatal);
    assert.equal(fatal.code, "max_reconnect_attempts");
    assert.equal(fatal.status, 503);
    assert.equal(away.errors.find((e) => e.fatal).code, "max_reconnect_attempts");
  } finally {
    await Promise.all([broken.client.close(), away.client.close()]);
  }
});

test("join and leave on a live client: leave closes the socket, joining again resumes from its seq", async () => {
  const w = await worker();
  const u = uid();
  const user = `user_${u}`;
  const req = `request_${u}-upload`;
  const c = countingWebSocket();
  const { client, seen } = makeClient({ url: w.base, rooms: [user], token: tokenFor(u, { rooms: ["request_*"] }), WebSocket: c.WebSocket });
  const statuses = [];
  client.on("status", (s) => { if (s.roomId === req) statuses.push(s.state); });
  try {
    await waitForState(client, "connected");
    const before = Date.now();
    // Published before the client joined: since=0 gets it anyway.
    await w.publish(req, { type: "upload.started" });
    client.join(req, { since: 0 });
    assert.deepEqual(client.rooms, [user, req]);
    await waitForCount(client, seen, 1);
    await waitForState(client, "connected");
    const st = client.roomStatus(req);
    assert.equal(st.state, "connected");
    assert.equal(st.attempt, 0);
    assert.ok(st.lastConnectedAt >= before);
    assert.equal(st.error, null);
    assert.deepEqual(statuses, ["connecting", "connected"]);

    await client.leave(req);
    assert.deepEqual(client.rooms, [user]);
    assert.equal(client.roomStatus(req), undefined);
    assert.equal(client.lastSeq(req), 1, "the position is remembered");
    assert.equal(c.live(req), 0);
    assert.equal(c.live(user), 1, "the user room's socket is untouched");
    await w.publish(req, { type: "upload.progress" });
    await w.publish(user, { type: "note.created" });
    await waitForCount(client, seen, 2);

    client.join(req);
    await waitForCount(client, seen, 3);
    await w.publish(req, { type: "upload.completed" });
    await waitForCount(client, seen, 4);
    assert.equal(await quiet(client, "notification", 300), true);
    assert.deepEqual(seen.map((s) => `${s.roomId}:${s.seq}:${s.type}`), [
      `${req}:1:upload.started`, `${user}:1:note.created`, `${req}:2:upload.progress`, `${req}:3:upload.completed`,
    ]);
    assert.equal(c.opened(user), 1);
    assert.equal(c.opened(req), 2);
  } finally {
    await client.close();
  }
});

test("429 with Retry-After from a stand-in server: the client waits that long, then connects", async () => {
  // The client is under test here, not the worker (the test above covers the worker): a server
  // that refuses upgrades with 429 + Retry-After: 1 while `full`, and answers the probe the same.
  const { createServer } = await import("node:http");
  const { WebSocketServer } = await import("ws");
  let full = true;
  const refusals = [];
  const wss = new WebSocketServer({ noServer: true });
  const server = createServer((req, res) => {
    refusals.push("probe");
    res.writeHead(full ? 429 : 426, { "content-type": "application/json", ...(full ? { "retry-after": "1" } : {}) });
    res.end(JSON.stringify({ success: false, error: { code: full ? "too_many_connections" : "upgrade_required", message: "x" } }));
    full = false; // the other connection goes away
  });
  server.on("upgrade", (req, socket, head) => {
    if (full) {
      refusals.push("upgrade");
      socket.end("HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\ncontent-length: 0\r\n\r\n");
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => ws.send(JSON.stringify({ type: "connected", roomId: "user_k", connectionId: "c1", lastSeq: 0 })));
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  cleanup.push(() => new Promise((r) => { for (const c of wss.clients) c.terminate(); server.close(r); }));
  const { client } = makeClient({ url: `http://127.0.0.1:${server.address().port}`, rooms: ["user_k"], token: "t", ...FAST });
  try {
    const [plan] = await waitForEvent(client, "reconnecting");
    assert.deepEqual([plan.status, plan.retryAfterMs, plan.attempt], [429, 1000, 1]);
    assert.ok(plan.delayMs >= 1000 && plan.delayMs < 1000 + FAST.initialDelayMs, `delay ${plan.delayMs}`);
    const t0 = Date.now();
    await waitForState(client, "connected", 5000);
    assert.ok(Date.now() - t0 >= 950, "waited for Retry-After");
    assert.deepEqual(refusals, ["upgrade", "probe"]);
  } finally {
    await client.close();
  }
});
