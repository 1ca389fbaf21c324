// The Inngest functions of examples/functions.mjs, run by @inngest/test's InngestTestEngine
// (their real steps, in process, no Inngest server) and publishing to the real worker, while a
// RealtimeClient holds the user's rooms as a browser would. What the user sees: each job's
// success once, nothing while a failed step waits for its retry, one success after a retry
// (even when the retried step had already published), and the error once after the last attempt.
//
// @inngest/test does not model retries or failure handlers (its README says so): a retry is a
// second execution with the state Inngest would send back (the steps that had succeeded), and
// the failure path runs the function's own onFailure handler on the `inngest/function.failed`
// event, the way Inngest runs it after the last attempt.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Inngest } from "inngest";
import { InngestTestEngine } from "@inngest/test";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { makeClient, waitForState, waitForCount, quiet, pollUntil } from "./helpers.mjs";
import { createBroadcaster } from "../../client/broadcaster.js";
import { createFunctions, createMemoryStore, EVENTS } from "../../examples/functions.mjs";

// Failed steps are expected here; Inngest's logger would print each one.
const silent = { info() {}, warn() {}, error() {}, debug() {} };
const inngest = new Inngest({ id: "roomcast-example-test", logger: silent });

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

let n = 0;
const uid = () => `i${process.pid}x${Date.now().toString(36)}x${n++}`;

/** A user with a client subscribed to user_{u} and to every request_{u}-… room given. */
async function subscriber(t, u, requests) {
  const rooms = [`user_${u}`, ...requests.map((r) => `request_${r}`)];
  const c = makeClient({ url: w.base, rooms, token: tokenFor(u, { rooms: [`request_${u}-*`] }) });
  t.after(() => c.client.close());
  await waitForState(c.client, "connected");
  return c;
}

const execute = (fn, event, steps) => new InngestTestEngine({ function: fn, events: [event], ...(steps ? { steps } : {}) }).execute();

/** Runs `fn`'s onFailure handler as Inngest does after the last attempt of a run of `event`. */
function runFailureHandler(fn, event, error) {
  const failure = inngest.createFunction(
    { id: `${fn.id()}-failure`, triggers: [{ event: "inngest/function.failed" }] },
    fn.opts.onFailure,
  );
  const failed = {
    name: "inngest/function.failed",
    data: { function_id: fn.id(), run_id: `run-${event.id}`, error: { name: error.name, message: error.message }, event },
  };
  return new InngestTestEngine({ function: failure, events: [failed] }).execute();
}

/** A broadcaster straight to the worker (as ROOMCAST_URL / ROOMCAST_API_KEY would configure it). */
const broadcaster = (extra = {}) => createBroadcaster({ url: w.base, apiKey: API_KEY, retryDelayMs: 5, ...extra });

test("the five flows: each job's success reaches the user once, through the user and request rooms", async (t) => {
  const u = uid();
  const req = (flow) => `${u}-${flow}`;
  const flows = ["note", "task", "done", "project", "chat"];
  const { client, seen } = await subscriber(t, u, flows.map(req));
  const fns = createFunctions({ inngest, broadcaster: broadcaster(), store: createMemoryStore() });
  const event = (flow, name, data) => ({ id: `evt-${req(flow)}`, name, data: { userId: u, requestId: req(flow), ...data } });

  const note = await execute(fns.createNote, event("note", EVENTS.createNote, { title: "My Note" }));
  const task = await execute(fns.createTask, event("task", EVENTS.createTask, { title: "Write tests", projectId: "p1" }));
  const done = await execute(fns.completeTask, event("done", EVENTS.completeTask, { taskId: task.result.id }));
  const project = await execute(fns.createProject, event("project", EVENTS.createProject, { name: "Launch" }));
  const chat = await execute(fns.sendMessage, event("chat", EVENTS.sendMessage, { threadId: "t1", text: "hello" }));
  for (const r of [note, task, done, project, chat]) assert.equal(r.error, undefined, r.error?.message);

  await waitForCount(client, seen, 5);
  assert.equal(await quiet(client, "notification", 300), true, "each once, though published to two rooms");
  assert.deepEqual(seen.map((s) => [s.type, s.status, s.requestId, s.requiresAck]), [
    ["note.creation.completed", "success", req("note"), true],
    ["task.creation.completed", "success", req("task"), true],
    ["task.completion.completed", "success", req("done"), true],
    ["project.creation.completed", "success", req("project"), true],
    ["conversation.response.generated", "success", req("chat"), true],
  ]);
  assert.deepEqual(seen[0].data, { entityId: note.result.id, title: "My Note" });
  assert.deepEqual(seen[1].data, { entityId: task.result.id, title: "Write tests", projectId: "p1" });
  assert.deepEqual(seen[2].data, { entityId: task.result.id, title: "Write tests" });
  assert.equal(seen[3].data.entityId, project.result.id);
  assert.match(seen[3].data.boardId, /^board-/);
  // The conversation's success has the original app's name and fields.
  assert.deepEqual(Object.keys(seen[4].data).sort(), ["assistantMessageId", "response", "threadId", "userMessageId"]);
  assert.equal(seen[4].data.threadId, "t1");
  assert.equal(seen[4].data.response, "You said: hello");
  assert.equal(seen[4].data.assistantMessageId, chat.result.id);
  assert.match(seen[4].data.userMessageId, /^message-/);
  assert.notEqual(seen[4].data.userMessageId, seen[4].data.assistantMessageId);
  // Acked by the client (requiresAck), in the user room and each request room.
  await pollUntil(async () => (await w.history(`user_${u}`)).body.notifications.every((x) => x.deliveryStatus === "acked"));
  assert.equal((await w.history(`user_${u}`)).body.notifications.length, 5);
  assert.equal((await w.history(`request_${req("note")}`)).body.notifications[0].deliveryStatus, "acked");
});

test("a failed step is retried: nothing while it waits, then exactly one success", async (t) => {
  const u = uid();
  const { client, seen } = await subscriber(t, u, [`${u}-busy`, `${u}-lost`]);

  // (1) The work step fails once (the database is busy); Inngest retries it.
  const store = createMemoryStore();
  let inserts = 0;
  const busyOnce = { ...store, insert: async (...args) => { if (++inserts === 1) throw new Error("database busy"); return store.insert(...args); } };
  const fns = createFunctions({ inngest, broadcaster: broadcaster(), store: busyOnce });
  const busy = { id: `evt-${u}-busy`, name: EVENTS.createNote, data: { userId: u, requestId: `${u}-busy`, title: "Retried" } };
  const first = await execute(fns.createNote, busy);
  assert.equal(first.error?.message, "database busy");
  assert.equal(await quiet(client, "notification", 300), true, "no error notification for an attempt that will be retried");
  const retry = await execute(fns.createNote, busy);
  assert.equal(retry.error, undefined);
  await waitForCount(client, seen, 1);
  assert.deepEqual([seen[0].type, seen[0].status, seen[0].requestId], ["note.creation.completed", "success", `${u}-busy`]);

  // (2) The notify step publishes, then loses the answer (the step fails after its effect).
  // Inngest retries that step with the note memoized: same key, no second notification.
  let calls = 0;
  const losing = (url, init) => fetch(url, init).then((res) => {
    if (++calls === 1) throw new TypeError("socket hang up");
    return res;
  });
  const store2 = createMemoryStore();
  const created = [];
  const recording = { ...store2, insert: async (...args) => { const row = await store2.insert(...args); created.push(row); return row; } };
  const fns2 = createFunctions({ inngest, broadcaster: broadcaster({ fetch: losing, retries: 0 }), store: recording });
  const lost = { id: `evt-${u}-lost`, name: EVENTS.createProject, data: { userId: u, requestId: `${u}-lost`, name: "Lost answers" } };
  const attempt1 = await execute(fns2.createProject, lost);
  assert.match(attempt1.error?.message ?? "", /socket hang up/);
  await waitForCount(client, seen, 2);
  const [project, board] = created;
  const attempt2 = await execute(fns2.createProject, lost, [
    { id: "create-project", handler: () => project },
    { id: "create-board", handler: () => board },
  ]);
  assert.equal(attempt2.error, undefined);
  assert.equal(created.length, 2, "the retry did not create the project again");
  assert.equal(await quiet(client, "notification", 300), true, "the retried step did not notify twice");
  assert.deepEqual(seen.map((s) => s.type), ["note.creation.completed", "project.creation.completed"]);
  assert.equal(seen[1].data.entityId, project.id);
  const history = (await w.history(`request_${u}-lost`)).body.notifications;
  assert.equal(history.length, 1, "published once");
});

test("the failure path: after the last attempt the user is told the error once", async (t) => {
  const u = uid();
  const { client, seen } = await subscriber(t, u, [`${u}-full`, `${u}-gone`, `${u}-mute`]);
  const store = createMemoryStore();
  const full = { ...store, insert: async () => { throw new Error("disk full"); } };
  const fns = createFunctions({ inngest, broadcaster: broadcaster(), store: full });

  const event = { id: `evt-${u}-full`, name: EVENTS.createNote, data: { userId: u, requestId: `${u}-full`, title: "Doomed" } };
  const run = await execute(fns.createNote, event);
  assert.equal(run.error?.message, "disk full");
  assert.equal(await quiet(client, "notification", 300), true, "nothing until the function has failed for good");
  const handled = await runFailureHandler(fns.createNote, event, run.error);
  assert.deepEqual(handled.result, { notified: true });
  await waitForCount(client, seen, 1);
  assert.deepEqual(
    [seen[0].type, seen[0].status, seen[0].error, seen[0].requestId, seen[0].requiresAck],
    ["note.creation.failed", "error", "disk full", `${u}-full`, true],
  );
  assert.deepEqual(seen[0].data, { title: "Doomed" });
  // Inngest may run the failure handler again (its own retry): still one notification.
  await runFailureHandler(fns.createNote, event, run.error);
  assert.equal(await quiet(client, "notification", 300), true);

  // A job that cannot succeed (the task does not exist) fails at once, without retries.
  const gone = { id: `evt-${u}-gone`, name: EVENTS.completeTask, data: { userId: u, requestId: `${u}-gone`, taskId: "task-404" } };
  const ko = await execute(fns.completeTask, gone);
  assert.equal(ko.error?.name, "NonRetriableError");
  await runFailureHandler(fns.completeTask, gone, ko.error);
  await waitForCount(client, seen, 2);
  assert.deepEqual([seen[1].type, seen[1].error, seen[1].data], ["task.completion.failed", "no such row: task-404", { entityId: "task-404" }]);

  // The model never answers: the conversation's failure, with its thread.
  const mute = createFunctions({ inngest, broadcaster: broadcaster(), store: { ...createMemoryStore(), reply: async () => { throw new Error("model timed out"); } } });
  const silentReply = { id: `evt-${u}-mute`, name: EVENTS.sendMessage, data: { userId: u, requestId: `${u}-mute`, threadId: "t9", text: "hello?" } };
  const noReply = await execute(mute.sendMessage, silentReply);
  assert.equal(noReply.error?.message, "model timed out");
  await runFailureHandler(mute.sendMessage, silentReply, noReply.error);
  await waitForCount(client, seen, 3);
  assert.deepEqual([seen[2].type, seen[2].status, seen[2].error, seen[2].data], ["conversation.response.failed", "error", "model timed out", { threadId: "t9" }]);

  // An event without a user: the function fails for good, and there is nobody to tell.
  const nobody = { id: `evt-${u}-nobody`, name: EVENTS.createNote, data: { title: "x" } };
  const orphan = await execute(fns.createNote, nobody);
  assert.match(orphan.error?.message ?? "", /data\.userId is required/);
  assert.deepEqual((await runFailureHandler(fns.createNote, nobody, orphan.error)).result, { notified: false });
  assert.equal(await quiet(client, "notification", 300), true);
  assert.equal(seen.length, 3);
});
