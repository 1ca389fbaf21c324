// Five Inngest functions that tell the user how their background job went, through roomcast:
// note creation, task creation, task completion, project creation, and a conversation message.
//
// The pattern, in each: the work is done in steps (a step that succeeded is not run again when
// Inngest retries the function); success is published in a step of its own; when the function
// has failed for good (every retry used up), its `onFailure` handler publishes the error. Every
// publish carries an idempotency key made of the triggering event's id and the notification
// type, which stays the same across Inngest's retries of a step, of the failure handler, and
// even a replay of the run: the user never sees a notification twice.
//
// The broadcaster reads ROOMCAST_URL (or REALTIME_URL) and ROOMCAST_API_KEY (or
// REALTIME_API_KEY). The store is a stand-in for your database (and, for the conversation, for
// the model that writes the reply). Serve the functions with examples/serve.mjs.
import { Inngest, NonRetriableError } from "inngest";
import { createBroadcaster } from "../client/broadcaster.js";

/** The Inngest client of the examples. */
export const inngest = new Inngest({ id: "roomcast-example" });

/** Events that start the five functions (`data` always has `userId`, optionally `requestId`). */
export const EVENTS = Object.freeze({
  createNote: "app/note.create.requested", // data: {title, body?}
  createTask: "app/task.create.requested", // data: {title, projectId?}
  completeTask: "app/task.complete.requested", // data: {taskId}
  createProject: "app/project.create.requested", // data: {name}
  sendMessage: "app/conversation.message.sent", // data: {threadId, text}
});

/**
 * The idempotency key of a notification: stable for one triggering event and one notification
 * type, so every retry (and a replay of the run) publishes it at most once. Inngest gives every
 * event an id; the run id is the fallback.
 */
export function notificationKey(event, runId, type) {
  return `${event?.id ?? runId}:${type}`;
}

function who(event) {
  const { userId, requestId } = event.data ?? {};
  if (typeof userId !== "string" || userId === "") {
    // Retrying cannot add a user: fail now (and tell nobody: there is nobody to tell).
    throw new NonRetriableError(`${event.name}: data.userId is required`);
  }
  return { userId, requestId: typeof requestId === "string" && requestId !== "" ? requestId : undefined };
}

/**
 * The notifying halves of every function, on one broadcaster.
 * @param {import("../client/broadcaster.d.ts").Broadcaster} broadcaster
 */
export function notifier(broadcaster) {
  return {
    /** Publishes `{type}` with status success as the step "notify-success". */
    success({ event, step, runId }, type, data) {
      const { userId, requestId } = who(event);
      return step.run("notify-success", () =>
        broadcaster.broadcastSuccess(userId, type, data, {
          requestId,
          requiresAck: true,
          idempotencyKey: notificationKey(event, runId, type),
        }));
    },

    /**
     * An `onFailure` handler: after the last attempt Inngest runs it with the
     * `inngest/function.failed` event (the original event and the error in its data). Publishes
     * `{type}` with status error and the error's message as the step "notify-failure".
     * `describe` picks what the notification's data says about the job from the original event.
     */
    failure(type, describe = () => ({})) {
      return async ({ event, step, runId }) => {
        const original = event.data?.event;
        const { userId, requestId } = original?.data ?? {};
        if (typeof userId !== "string" || userId === "") return { notified: false };
        const message = event.data?.error?.message || "the job failed";
        await step.run("notify-failure", () =>
          broadcaster.broadcastError(userId, type, message, {
            requestId: requestId || undefined,
            requiresAck: true,
            data: describe(original.data),
            idempotencyKey: notificationKey(original, runId, type),
          }));
        return { notified: true };
      };
    },
  };
}

/**
 * A stand-in for the app's database: ids are `${kind}-${n}`. Replace with your own.
 */
export function createMemoryStore() {
  const rows = new Map();
  let next = 1;
  return {
    async insert(kind, fields) {
      const row = { id: `${kind}-${next++}`, ...fields, createdAt: new Date().toISOString() };
      rows.set(row.id, row);
      return row;
    },
    async update(id, fields) {
      const row = rows.get(id);
      if (!row) throw new NonRetriableError(`no such row: ${id}`);
      Object.assign(row, fields);
      return row;
    },
    /** Stands in for the model that answers a message. */
    async reply(text) {
      return `You said: ${text}`;
    },
  };
}

/**
 * The five functions.
 * @param {{inngest?: Inngest, broadcaster?: import("../client/broadcaster.d.ts").Broadcaster, store?: ReturnType<typeof createMemoryStore>}} [deps]
 */
export function createFunctions({ inngest: client = inngest, broadcaster = createBroadcaster(), store = createMemoryStore() } = {}) {
  const notify = notifier(broadcaster);

  const createNote = client.createFunction(
    {
      id: "create-note",
      triggers: [{ event: EVENTS.createNote }],
      onFailure: notify.failure("note.creation.failed", (d) => ({ title: d?.title })),
    },
    async (ctx) => {
      const { event, step } = ctx;
      const { userId } = who(event);
      const note = await step.run("create-note", () =>
        store.insert("note", { userId, title: event.data.title, body: event.data.body ?? "" }));
      await notify.success(ctx, "note.creation.completed", { entityId: note.id, title: note.title });
      return note;
    },
  );

  const createTask = client.createFunction(
    {
      id: "create-task",
      triggers: [{ event: EVENTS.createTask }],
      onFailure: notify.failure("task.creation.failed", (d) => ({ title: d?.title })),
    },
    async (ctx) => {
      const { event, step } = ctx;
      const { userId } = who(event);
      const task = await step.run("create-task", () =>
        store.insert("task", { userId, title: event.data.title, projectId: event.data.projectId ?? null, done: false }));
      await notify.success(ctx, "task.creation.completed", { entityId: task.id, title: task.title, projectId: task.projectId });
      return task;
    },
  );

  const completeTask = client.createFunction(
    {
      id: "complete-task",
      triggers: [{ event: EVENTS.completeTask }],
      onFailure: notify.failure("task.completion.failed", (d) => ({ entityId: d?.taskId })),
    },
    async (ctx) => {
      const { event, step } = ctx;
      who(event);
      const task = await step.run("complete-task", () =>
        store.update(event.data.taskId, { done: true, completedAt: new Date().toISOString() }));
      await notify.success(ctx, "task.completion.completed", { entityId: task.id, title: task.title });
      return task;
    },
  );

  const createProject = client.createFunction(
    {
      id: "create-project",
      triggers: [{ event: EVENTS.createProject }],
      onFailure: notify.failure("project.creation.failed", (d) => ({ name: d?.name })),
    },
    async (ctx) => {
      const { event, step } = ctx;
      const { userId } = who(event);
      const project = await step.run("create-project", () => store.insert("project", { userId, name: event.data.name }));
      // A second step: a retry after it fails does not create the project again.
      const board = await step.run("create-board", () => store.insert("board", { projectId: project.id, columns: ["todo", "done"] }));
      await notify.success(ctx, "project.creation.completed", { entityId: project.id, name: project.name, boardId: board.id });
      return project;
    },
  );

  const sendMessage = client.createFunction(
    {
      id: "reply-to-message",
      triggers: [{ event: EVENTS.sendMessage }],
      onFailure: notify.failure("conversation.response.failed", (d) => ({ threadId: d?.threadId })),
    },
    async (ctx) => {
      const { event, step } = ctx;
      const { userId } = who(event);
      const { threadId, text } = event.data;
      const message = await step.run("save-message", () => store.insert("message", { userId, threadId, text, role: "user" }));
      const answer = await step.run("generate-reply", () => store.reply(text));
      const reply = await step.run("save-reply", () => store.insert("message", { threadId, text: answer, role: "assistant" }));
      // The names and fields the original app's chat listens for.
      await notify.success(ctx, "conversation.response.generated", {
        threadId, userMessageId: message.id, assistantMessageId: reply.id, response: answer,
      });
      return reply;
    },
  );

  return { createNote, createTask, completeTask, createProject, sendMessage };
}
