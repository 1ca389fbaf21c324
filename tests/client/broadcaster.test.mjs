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
/** What the proxy does with the next requests: "pass" | "drop" (no answer) | "lose" (forward, then 503). */
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
    const upstream = await fetch(w.base + req.url, {
      method: req.method,
      headers: { "content-type": req.headers["content-type"], authorization: req.headers.authorization, "idempotency-key": req.headers["idempotency-key"] },
      body,
    });
    const text = await upstream.text();
    if (action === "lose") {
      // The publish happened, but the caller never learns it: a gateway error instead.
      res.writeHead(502, { "content-type": "application/json" });
      res.end(JSON.stringify({ success: false, error: { code: "partial_failure", message: "simulated" } }));
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
    (err) => err instanceof BroadcastError && err.status === 502 && err.code === "partial_failure" && err.attempts === 3 && err.retryable,
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
