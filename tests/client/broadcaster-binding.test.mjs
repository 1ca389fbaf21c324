// createBroadcaster inside a second Worker that publishes through a service binding to roomcast,
// both in one runtime: what an app's Worker or Durable Object does instead of calling roomcast over
// the internet. The caller (tests/fixtures/binding-caller/worker.mjs) is plain JS without
// nodejs_compat, so broadcaster.js has to load and run in workerd as it is; the notifications
// reach a real WebSocket client of roomcast.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { startWorker, tokenFor, API_KEY, ROOT, COMPATIBILITY_DATE } from "../support/harness.mjs";
import { makeClient, waitForState, waitForCount, pollUntil } from "./helpers.mjs";

let w;
let caller;
before(async () => {
  w = await startWorker({
    workers: [{
      name: "caller",
      modules: true,
      scriptPath: path.join(ROOT, "tests/fixtures/binding-caller/worker.mjs"),
      modulesRoot: ROOT,
      // client/ is ES modules ("type": "module"), as a bundler would take them.
      modulesRules: [{ type: "ESModule", include: ["**/*.js"] }],
      compatibilityDate: COMPATIBILITY_DATE,
      // As `[[services]] binding = "ROOMCAST", service = "roomcast"` in the caller's wrangler.toml.
      serviceBindings: { ROOMCAST: "roomcast" },
      bindings: { ROOMCAST_API_KEY: API_KEY },
    }],
  });
  caller = await w.mf.getWorker("caller");
});
after(async () => { await w?.stop(); });

let n = 0;
const uid = () => `sb${process.pid}x${Date.now().toString(36)}x${n++}`;

/** Has the caller Worker call `createBroadcaster({binding: env.ROOMCAST, apiKey})[call](...args)`. */
async function viaCaller(call, args, extra = {}) {
  const res = await caller.fetch("http://caller/", { method: "POST", body: JSON.stringify({ call, args, ...extra }) });
  const text = await res.text();
  assert.equal(res.status, 200, `the caller Worker failed: ${text}`);
  return JSON.parse(text);
}

/** A RealtimeClient of the user's room, connected, closed after the test. */
async function userClient(t, u) {
  const c = makeClient({ url: w.base, rooms: [`user_${u}`], token: tokenFor(u) });
  t.after(() => c.client.close());
  await waitForState(c.client, "connected");
  return c;
}

test("a Worker publishes through its binding: the user's socket gets it once, and acks it", async (t) => {
  const u = uid();
  const { client, seen, errors } = await userClient(t, u);
  const key = `invite-${u}`;
  const args = [u, "group.invitation.received", { groupId: "g7" }, { requiresAck: true, idempotencyKey: key }];

  const first = await viaCaller("broadcastSuccess", args);
  assert.equal(first.error, undefined, JSON.stringify(first.error));
  const room = first.result.rooms[`user_${u}`];
  assert.deepEqual({ seq: room.seq, id: room.id, duplicate: room.duplicate, broadcastCount: room.broadcastCount },
    { seq: 1, id: key, duplicate: false, broadcastCount: 1 });
  await waitForCount(client, seen, 1);
  assert.equal(seen[0].type, "group.invitation.received");
  assert.deepEqual(seen[0].data, { groupId: "g7" });
  assert.equal(seen[0].status, "success");
  assert.equal(seen[0].requiresAck, true);
  assert.equal(seen[0].id, key);

  // The step retried with its key: answered as a duplicate, nothing new reaches the socket (the
  // marker published next is the second thing the app sees).
  const again = await viaCaller("broadcastSuccess", args);
  assert.equal(again.result.rooms[`user_${u}`].duplicate, true);
  const marker = await viaCaller("publish", [`user_${u}`, { type: "marker.done" }]);
  assert.equal(marker.result.seq, 2);
  await waitForCount(client, seen, 2);
  assert.deepEqual(seen.map((m) => m.type), ["group.invitation.received", "marker.done"]);

  // The client acked it (autoAck): the log says so, as it would for a publish over the internet.
  await pollUntil(async () => (await w.history(`user_${u}`)).body.notifications.find((m) => m.id === key)?.deliveryStatus === "acked");
  assert.deepEqual(errors, []);
});

test("through the binding, progress is ephemeral and many users get one id", async (t) => {
  const [a, b] = [uid(), uid()];
  const ca = await userClient(t, a);
  const cb = await userClient(t, b);
  const p = await viaCaller("progress", [a, "upload.progress", { pct: 40 }]);
  assert.equal(p.result.rooms[`user_${a}`].ephemeral, true);
  await waitForCount(ca.client, ca.seen, 1);
  assert.equal(ca.seen[0].ephemeral, true);
  assert.equal(ca.seen[0].data.pct, 40);

  const many = await viaCaller("broadcastMany", [[a, b], "team.invite", { teamId: 3 }, { idempotencyKey: `team-${a}` }]);
  assert.equal(many.result.rooms[`user_${a}`].id, many.result.rooms[`user_${b}`].id);
  await waitForCount(ca.client, ca.seen, 2);
  await waitForCount(cb.client, cb.seen, 1);
  assert.equal(ca.seen[1].type, "team.invite");
  assert.equal(cb.seen[0].id, ca.seen[1].id);
});

test("a wrong API key through the binding is refused once, not retried", async () => {
  const u = uid();
  const r = await viaCaller("publish", [`user_${u}`, { type: "x.y" }], { apiKey: "not-a-key" });
  assert.equal(r.error?.name, "BroadcastError");
  assert.equal(r.error.status, 401);
  assert.equal(r.error.attempts, 1);
  assert.equal((await w.history(`user_${u}`)).body.notifications.length, 0);
});
