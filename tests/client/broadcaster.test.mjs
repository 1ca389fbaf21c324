// createBroadcaster against the real worker, behind a small local proxy that can lose answers,
// drop connections and answer 5xx: retries reuse one idempotency key, so the user sees each
// notification exactly once; 4xx are never retried.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { createBroadcaster, BroadcastError, retryDelay } from "../../client/broadcaster.js";
import { makeClient, waitForState, waitForCount, quiet } from "./helpers.mjs";

let w;
let proxy;
/**
 * What the proxy does with the next requests: "pass" | "drop" (no answer) | "lose" (forward,
 * then answer 502) | "partial" (one room fails: forward without the last of `userIds`, or
 * without the `requestId`, and answer 207 as the server does for a room it could not reach).
 */
let plan = [];
const seenByProxy = [];

before(async () => {
  w = await startWorker();
  proxy = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    const body = Buffer.concat(chunks);
    const action = plan.shift() ?? "pass";
    seenByProxy.push({ path: req.url, key: req.headers["idempotency-key"], body: JSON.parse(body), action });
    if (action === "drop") {
      req.socket.destroy();
      return;
    }
    let forward = body;
    let failedRoom;
    if (action === "partial") {
      const b = JSON.parse(body);
      if (b.userIds) failedRoom = `user_${b.userIds.pop()}`;
      else { failedRoom = `request_${b.requestId}`; delete b.requestId; }
      forward = JSON.stringify(b);
    }
    const headers = { "content-type": req.headers["content-type"], authorization: req.headers.authorization };
    if (req.headers["idempotency-key"] !== undefined) headers["idempotency-key"] = req.headers["idempotency-key"];
    const upstream = await fetch(w.base + req.url, { method: req.method, headers, body: forward });
    const text = await upstream.text();
    if (action === "lose") {
      // The publish happened, but the caller never learns it: a gateway error instead.
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ success: false, error: { code: "bad_gateway", message: "simulated" } }));
      return;
    }
    if (action === "partial") {
      const answer = JSON.parse(text);
      answer.rooms[failedRoom] = { success: false, error: { code: "internal_error", message: "simulated: room unreachable" } };
      answer.success = false;
      answer.error = { code: "partial_failure", message: "publishing to at least one room failed; retry with the same Idempotency-Key" };
      res.writeHead(207, { "content-type": "application/json" });
      res.end(JSON.stringify(answer));
      return;
    }
    res.writeHead(upstream.status, { "content-type": "application/json" });
    res.end(text);
  });
  await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
});
after(async () => {
  await new Promise((r) => proxy.close(r));
  await w?.stop();
});

const proxyUrl = () => `http://127.0.0.1:${proxy.address().port}`;
let n = 0;
const uid = () => `b${process.pid}x${Date.now().toString(36)}x${n++}`;

test("retryDelay grows exponentially with full jitter", () => {
  assert.equal(retryDelay(1, { retryDelayMs: 100 }, () => 0.999), 99);
  assert.equal(retryDelay(3, { retryDelayMs: 100 }, () => 0.999), 399);
  assert.equal(retryDelay(9, { retryDelayMs: 100, maxRetryDelayMs: 1000 }, () => 0.999), 999);
  assert.equal(retryDelay(2, { retryDelayMs: 100 }, () => 0), 0);
});

test("a lost answer and a dropped connection are retried with one key: delivered exactly once", async () => {
  const u = uid();
  const req = `q${u}`;
  const { client, seen } = makeClient({
    url: w.base,
    rooms: [`user_${u}`, `request_${req}`],
    token: tokenFor(u, { rooms: [`request_${req}`] }),
  });
  try {
    await waitForState(client, "connected");
    seenByProxy.length = 0;
    plan = ["drop", "lose", "pass"];
    const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 3, retryDelayMs: 5 });
    const result = await rc.broadcastSuccess(u, "note.creation.completed", { noteId: "n1" }, { requestId: req });
    assert.equal(seenByProxy.length, 3, "three attempts");
    const keys = new Set(seenByProxy.map((s) => s.key));
    assert.equal(keys.size, 1, "one idempotency key for all attempts");
    const [key] = keys;
    assert.match(key, /^[0-9a-f-]{36}$/, "a generated UUID");
    // The second attempt did publish; the third learns it as a duplicate with the same id.
    assert.equal(result.success, true);
    for (const room of [`user_${u}`, `request_${req}`]) {
      assert.equal(result.rooms[room].duplicate, true, room);
      assert.equal(result.rooms[room].id, key);
      assert.equal(result.rooms[room].seq, 1);
    }
    await waitForCount(client, seen, 1);
    assert.equal(await quiet(client, "notification", 300), true);
    assert.equal(seen.length, 1, "the user sees it once");
    assert.equal(seen[0].type, "note.creation.completed");
    assert.equal(seen[0].status, "success");
    assert.equal(seen[0].requestId, req);
    assert.deepEqual(seen[0].data, { noteId: "n1" });
    for (const room of [`user_${u}`, `request_${req}`]) {
      assert.equal((await w.history(room)).body.notifications.length, 1);
    }

    // A retried handler step calls again with its own stable key: still one notification.
    const again = await rc.broadcastSuccess(u, "note.creation.completed", { noteId: "n1" }, { requestId: req, idempotencyKey: key });
    assert.equal(again.rooms[`user_${u}`].duplicate, true);
    assert.equal(await quiet(client, "notification", 300), true);
  } finally {
    await client.close();
  }
});

test("broadcastError carries the error text; a caller's key is used as is", async () => {
  const u = uid();
  const { client, seen } = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u) });
  try {
    await waitForState(client, "connected");
    const rc = createBroadcaster({ url: w.base, apiKey: API_KEY });
    const r = await rc.broadcastError(u, "note.creation.failed", new Error("quota exceeded"), { idempotencyKey: `run-${u}:error` });
    assert.equal(r.rooms[`user_${u}`].id, `run-${u}:error`);
    await waitForCount(client, seen, 1);
    assert.equal(seen[0].status, "error");
    assert.equal(seen[0].error, "quota exceeded");
    const direct = await rc.publish(`user_${u}`, { type: "note.updated", requiresAck: false });
    assert.equal(direct.seq, 2);
    assert.equal(direct.duplicate, false);
    await waitForCount(client, seen, 2);
  } finally {
    await client.close();
  }
});

test("4xx is never retried and throws a BroadcastError with status and code", async () => {
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 3, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = [];
  await assert.rejects(
    rc.broadcastNotification({ userId: "u1", message: { type: "ack" } }),
    (err) => err instanceof BroadcastError && err.status === 400 && err.code === "reserved_type" && err.attempts === 1 && !err.retryable,
  );
  assert.equal(seenByProxy.length, 1);

  const wrongKey = createBroadcaster({ url: proxyUrl(), apiKey: "nope", retries: 3, retryDelayMs: 5 });
  await assert.rejects(
    wrongKey.broadcastSuccess("u1", "x.y"),
    (err) => err instanceof BroadcastError && err.status === 401 && err.code === "unauthorized",
  );
  assert.equal(seenByProxy.length, 2);
});

test("5xx on every attempt: gives up after 1 + retries with the last error", async () => {
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 2, retryDelayMs: 5 });
  seenByProxy.length = 0;
  const u = uid();
  plan = ["lose", "lose", "lose", "lose"];
  await assert.rejects(
    rc.broadcastSuccess(u, "x.y"),
    (err) => err instanceof BroadcastError && err.status === 502 && err.code === "bad_gateway" && err.attempts === 3 && err.retryable,
  );
  assert.equal(seenByProxy.length, 3);
  plan = [];
  // Only the first attempt published; the others were duplicates.
  assert.equal((await w.history(`user_${u}`)).body.notifications.length, 1);

  // A network failure on every attempt: status 0, code network_error.
  plan = ["drop", "drop", "drop"];
  await assert.rejects(rc.broadcastSuccess(u, "x.y"), (err) => err.status === 0 && err.code === "network_error" && err.attempts === 3);
  plan = [];
});

test("without url and apiKey it reads ROOMCAST_URL / ROOMCAST_API_KEY, else REALTIME_URL / REALTIME_API_KEY", async (t) => {
  const names = ["ROOMCAST_URL", "ROOMCAST_API_KEY", "REALTIME_URL", "REALTIME_API_KEY"];
  const saved = Object.fromEntries(names.map((k) => [k, process.env[k]]));
  t.after(() => {
    for (const [k, v] of Object.entries(saved)) if (v === undefined) delete process.env[k]; else process.env[k] = v;
  });
  for (const k of names) delete process.env[k];
  assert.throws(() => createBroadcaster(), /needs `url`.*ROOMCAST_URL or REALTIME_URL in the environment/);
  process.env.REALTIME_URL = proxyUrl();
  assert.throws(() => createBroadcaster(), /needs `apiKey`.*ROOMCAST_API_KEY or REALTIME_API_KEY in the environment/);

  const u = uid();
  const { client, seen } = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u) });
  try {
    await waitForState(client, "connected");
    // The original design's names.
    process.env.REALTIME_API_KEY = API_KEY;
    seenByProxy.length = 0;
    await createBroadcaster().broadcastSuccess(u, "env.realtime");
    assert.equal(seenByProxy.length, 1, "through REALTIME_URL (the proxy)");
    // ROOMCAST_* come first; a wrong key in REALTIME_API_KEY is not used.
    process.env.ROOMCAST_URL = w.base;
    process.env.ROOMCAST_API_KEY = API_KEY;
    process.env.REALTIME_API_KEY = "wrong";
    await createBroadcaster().broadcastSuccess(u, "env.roomcast");
    assert.equal(seenByProxy.length, 1, "straight to ROOMCAST_URL");
    // Options win over the environment.
    await assert.rejects(createBroadcaster({ apiKey: "wrong" }).broadcastSuccess(u, "x"), (e) => e.status === 401);
    await waitForCount(client, seen, 2);
    assert.deepEqual(seen.map((s) => s.type), ["env.realtime", "env.roomcast"]);
  } finally {
    await client.close();
  }
});

test("binding: every request goes through its fetch (called as its method) to https://roomcast; wrong setups throw", async (t) => {
  // Stands in for a service binding (tests/client/broadcaster-binding.test.mjs has the real one):
  // a private field fails if fetch is called without its object.
  class Binding {
    #to = w.base;
    urls = [];
    fetch(url, init) {
      this.urls.push(url);
      return fetch(url.replace("https://roomcast", this.#to), init);
    }
  }
  const binding = new Binding();
  const saved = process.env.ROOMCAST_URL;
  t.after(() => { if (saved === undefined) delete process.env.ROOMCAST_URL; else process.env.ROOMCAST_URL = saved; });
  process.env.ROOMCAST_URL = "http://127.0.0.1:9"; // not used with a binding
  const u = uid();
  const { client, seen } = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u) });
  t.after(() => client.close());
  await waitForState(client, "connected");
  const rc = createBroadcaster({ binding, apiKey: API_KEY });
  await rc.broadcastSuccess(u, "bound.one");
  await rc.publish(`user_${u}`, { type: "bound.two" });
  await waitForCount(client, seen, 2);
  assert.deepEqual(seen.map((m) => m.type), ["bound.one", "bound.two"]);
  assert.deepEqual(binding.urls, ["https://roomcast/broadcast", `https://roomcast/rooms/user_${u}/broadcast`]);

  assert.throws(() => createBroadcaster({ binding: {}, apiKey: API_KEY }), /`binding` must have a fetch\(url, init\) method/);
  assert.throws(() => createBroadcaster({ binding: null, apiKey: API_KEY }), /`binding` must have a fetch/);
  assert.throws(() => createBroadcaster({ binding, url: w.base, apiKey: API_KEY }), /`url` or `binding`, not both/);
  assert.throws(() => createBroadcaster({ binding, fetch, apiKey: API_KEY }), /`fetch` or `binding`, not both/);
});

/** Clients for users, each on its user room; closed after the test. */
async function usersOnline(t, subs, extra = {}) {
  const out = {};
  for (const u of subs) {
    out[u] = makeClient({ url: w.base, rooms: [`user_${u}`, ...(extra[u] ?? [])], token: tokenFor(u, { rooms: extra[u] }) });
    t.after(() => out[u].client.close());
  }
  for (const u of subs) await waitForState(out[u].client, "connected");
  return out;
}

test("broadcastMany: one key for the call; a lost answer and a dropped connection still deliver once per user", async (t) => {
  const subs = [uid(), uid(), uid()];
  const users = await usersOnline(t, subs);
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 3, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = ["lose", "drop", "pass"];
  const r = await rc.broadcastMany(subs, "report.ready", { reportId: "r1" });
  assert.equal(seenByProxy.length, 3);
  const keys = new Set(seenByProxy.map((s) => s.key));
  assert.equal(keys.size, 1, "one idempotency key across retries");
  const [key] = keys;
  assert.deepEqual(seenByProxy[0].body, { userIds: subs, message: { type: "report.ready", data: { reportId: "r1" }, status: "success", id: key } });
  assert.equal(r.success, true);
  for (const u of subs) {
    assert.equal(r.rooms[`user_${u}`].id, key, "the same id in every room");
    assert.equal(r.rooms[`user_${u}`].duplicate, true, "published by the first attempt");
  }
  for (const u of subs) await waitForCount(users[u].client, users[u].seen, 1);
  for (const u of subs) {
    assert.equal(await quiet(users[u].client, "notification", 200), true);
    assert.deepEqual(users[u].seen.map((x) => [x.type, x.id]), [["report.ready", key]], `user ${u} sees it once`);
    assert.equal((await w.history(`user_${u}`)).body.notifications.length, 1);
  }
});

test("a 207 (some rooms failed) is retried with the same key: only the failed room gets it then, nobody twice", async (t) => {
  const subs = [uid(), uid(), uid()];
  const users = await usersOnline(t, subs);
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 2, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = ["partial", "pass"];
  const r = await rc.broadcastMany(subs, "team.invite", {}, { idempotencyKey: `invite-${subs[0]}` });
  assert.equal(seenByProxy.length, 2);
  assert.deepEqual(seenByProxy.map((s) => s.key), [`invite-${subs[0]}`, `invite-${subs[0]}`]);
  assert.deepEqual(subs.map((u) => r.rooms[`user_${u}`].duplicate), [true, true, false], "the retry published only in the failed room");
  for (const u of subs) await waitForCount(users[u].client, users[u].seen, 1);
  for (const u of subs) {
    assert.equal(await quiet(users[u].client, "notification", 200), true);
    assert.equal(users[u].seen.length, 1);
  }

  // A partial failure on every attempt: a retryable BroadcastError naming the failed room.
  plan = ["partial", "partial", "partial"];
  const late = uid();
  await assert.rejects(
    rc.broadcastMany([subs[0], late], "team.invite"),
    (err) => err instanceof BroadcastError && err.status === 207 && err.code === "partial_failure" && err.retryable &&
      err.attempts === 3 && err.failedRooms.length === 1 && err.failedRooms[0] === `user_${late}`,
  );
  plan = [];
});

test("broadcastSuccess with a requestId: a 207 for the request room is retried, the user sees it once", async (t) => {
  const u = uid();
  const req = `q${u}`;
  const users = await usersOnline(t, [u], { [u]: [`request_${req}`] });
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 2, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = ["partial", "pass"];
  const r = await rc.broadcastSuccess(u, "note.done", {}, { requestId: req });
  assert.equal(seenByProxy.length, 2);
  assert.equal(r.rooms[`user_${u}`].duplicate, true);
  assert.equal(r.rooms[`request_${req}`].duplicate, false);
  await waitForCount(users[u].client, users[u].seen, 1);
  assert.equal(await quiet(users[u].client, "notification", 300), true);
  assert.equal((await w.history(`request_${req}`)).body.notifications.length, 1);
});

test("a 207 that no retry can fix (the real worker: an id taken in one room) is thrown at once", async () => {
  const [a, b] = [uid(), uid()];
  const key = `taken-${a}`;
  // user_a already holds this id, published under another key.
  assert.equal((await w.publish(`user_${a}`, { type: "x.y", id: key }, { "idempotency-key": `other-${a}` })).status, 200);
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 3, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = [];
  await assert.rejects(
    rc.broadcastMany([a, b], "x.y", {}, { idempotencyKey: key }),
    (err) => err instanceof BroadcastError && err.status === 207 && !err.retryable && err.attempts === 1 &&
      err.failedRooms.join() === `user_${a}` && /user_.*duplicate_id/.test(err.message),
  );
  assert.equal(seenByProxy.length, 1, "not retried");
  assert.equal((await w.history(`user_${b}`)).body.notifications.length, 1, "the other room has it");
});

test("broadcastMany refuses bad userIds before sending anything", async () => {
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY });
  seenByProxy.length = 0;
  await assert.rejects(rc.broadcastMany([], "x.y"), /non-empty array/);
  await assert.rejects(rc.broadcastMany(["a", "a"], "x.y"), /repeated/);
  await assert.rejects(rc.broadcastMany(Array.from({ length: 101 }, (_, i) => `u${i}`), "x.y"), /at most 100/);
  await assert.rejects(rc.broadcastNotification({ userId: "a", userIds: ["b"], message: { type: "x" } }), /not both/);
  assert.equal(seenByProxy.length, 0);
});

test("progress: ephemeral, pending, delivered once, never in history; a lost one is not retried", async (t) => {
  const u = uid();
  const req = `p${u}`;
  const users = await usersOnline(t, [u], { [u]: [`request_${req}`] });
  const { client, seen } = users[u];
  const rc = createBroadcaster({ url: proxyUrl(), apiKey: API_KEY, retries: 3, retryDelayMs: 5 });
  seenByProxy.length = 0;
  plan = [];
  const r = await rc.progress(u, "upload.progress", { pct: 10 }, { requestId: req });
  assert.equal(r.success, true);
  assert.equal(r.rooms[`user_${u}`].ephemeral, true);
  assert.equal(seenByProxy[0].key, undefined, "no idempotency key: the server keeps nothing to compare with");
  assert.deepEqual(seenByProxy[0].body.message, { type: "upload.progress", data: { pct: 10 }, status: "pending", ephemeral: true });
  await waitForCount(client, seen, 1);
  assert.equal(seen[0].ephemeral, true);
  assert.equal(seen[0].status, "pending");
  assert.equal(seen[0].seq, undefined);

  // Lost on the way back, or no answer at all: null after one attempt, no retry.
  seenByProxy.length = 0;
  plan = ["lose"];
  assert.equal(await rc.progress(u, "upload.progress", { pct: 20 }), null);
  plan = ["drop"];
  assert.equal(await rc.progress(u, "upload.progress", { pct: 30 }), null);
  assert.equal(seenByProxy.length, 2, "one attempt each");
  // The first of those reached the user (the answer was what got lost); the dropped one did not.
  await waitForCount(client, seen, 2);
  assert.equal(await quiet(client, "notification", 300), true);
  assert.deepEqual(seen.map((x) => x.data.pct), [10, 20]);
  // Bad input still throws, and many users at once work too.
  await assert.rejects(rc.progress(u, "presence.x"), (err) => err.status === 400 && err.code === "reserved_type");
  const other = uid();
  const many = await rc.progress([u, other], "upload.progress", { pct: 40 }, { status: "success" });
  assert.deepEqual(Object.keys(many.rooms).sort(), [`user_${other}`, `user_${u}`].sort());
  await waitForCount(client, seen, 3);
  assert.equal(seen[2].status, "success");
  for (const room of [`user_${u}`, `request_${req}`]) {
    assert.equal((await w.history(room)).body.notifications.length, 0, `nothing stored in ${room}`);
  }
});
