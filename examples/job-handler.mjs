#!/usr/bin/env node
// An Inngest-style job handler that tells the user how their job went, through roomcast.
//
// The pattern: do the work in steps (a step that succeeded is not run again when the job is
// retried); publish success as its own step; on failure publish the error, then rethrow so the
// job runner records the failure. Every publish carries an idempotency key derived from the run
// id and the step, so a step that is retried (the process died after the HTTP call, the answer
// was lost...) never notifies the user twice.
//
// Run against the local dev server (`npm run dev` in another terminal):
//   node examples/job-handler.mjs --user demo --request req-1          # a job that succeeds
//   node examples/job-handler.mjs --user demo --request req-2 --fail   # a job that fails
// Watch it arrive on the demo page (http://127.0.0.1:8787/, room user_demo).
// Settings: ROOMCAST_URL (default http://127.0.0.1:8787), ROOMCAST_API_KEY (default: the first
// key of BROADCAST_API_KEYS in .dev.vars, else .dev.vars.example).
import { readFileSync } from "node:fs";
import { randomUUID } from "node:crypto";
import { fileURLToPath } from "node:url";
import { createBroadcaster } from "../client/broadcaster.js";

/**
 * The job: create a note, then tell the user. `step.run(name, fn)` runs `fn` once per run
 * (results are memoized by name across retries), like Inngest's `step.run`.
 */
export function createNoteJob({ broadcaster, createNote }) {
  return async function createNoteHandler({ event, step, runId }) {
    const { userId, requestId, title } = event.data;
    try {
      const note = await step.run("create-note", () => createNote(title));
      await step.run("notify-success", () =>
        broadcaster.broadcastSuccess(userId, "note.creation.completed", { entityId: note.id, title }, {
          requestId,
          requiresAck: true,
          idempotencyKey: `${runId}:notify-success`,
        }));
      return note;
    } catch (err) {
      await step.run("notify-error", () =>
        broadcaster.broadcastError(userId, "note.creation.failed", err, {
          requestId,
          data: { title },
          idempotencyKey: `${runId}:notify-error`,
        }));
      throw err;
    }
  };
}

/**
 * A minimal stand-in for a durable job runner: retries a failing step up to `retries` times and
 * memoizes finished steps, so a retried run skips them.
 */
export async function runJob(handler, event, { retries = 2, runId = randomUUID(), log = () => {} } = {}) {
  const done = new Map();
  const step = {
    async run(name, fn) {
      if (done.has(name)) return done.get(name);
      for (let attempt = 1; ; attempt++) {
        try {
          const value = await fn();
          done.set(name, value);
          log(`step ${name}: ok (attempt ${attempt})`);
          return value;
        } catch (err) {
          log(`step ${name}: ${err.message} (attempt ${attempt})`);
          if (attempt > retries) throw err;
        }
      }
    },
  };
  return handler({ event, step, runId });
}

function devApiKey() {
  for (const file of [".dev.vars", ".dev.vars.example"]) {
    try {
      const text = readFileSync(new URL(`../${file}`, import.meta.url), "utf8");
      const line = text.split("\n").find((l) => l.startsWith("BROADCAST_API_KEYS="));
      if (line) return line.slice("BROADCAST_API_KEYS=".length).split(",")[0].trim();
    } catch { /* try the next file */ }
  }
  return undefined;
}

async function main(argv) {
  const arg = (name, fallback) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : fallback;
  };
  const url = process.env.ROOMCAST_URL ?? "http://127.0.0.1:8787";
  const apiKey = process.env.ROOMCAST_API_KEY ?? devApiKey();
  if (!apiKey) throw new Error("set ROOMCAST_API_KEY (one of the server's BROADCAST_API_KEYS)");
  const userId = arg("user", "demo");
  const requestId = arg("request", `req-${Date.now().toString(36)}`);
  const fail = argv.includes("--fail");
  const broadcaster = createBroadcaster({ url, apiKey });

  // The notify step "crashes" once right after publishing, to show that its retry is harmless.
  let crashed = false;
  const flaky = {
    ...broadcaster,
    async broadcastSuccess(...args) {
      const result = await broadcaster.broadcastSuccess(...args);
      if (!crashed) {
        crashed = true;
        throw new Error("worker lost after publishing");
      }
      return result;
    },
  };
  let nextId = 1;
  const job = createNoteJob({
    broadcaster: flaky,
    createNote: async (title) => {
      if (fail) throw new Error(`could not create "${title}": storage unavailable`);
      return { id: `note-${nextId++}`, title };
    },
  });
  const event = { name: "note/create.requested", data: { userId, requestId, title: arg("title", "My Note") } };
  try {
    const note = await runJob(job, event, { log: (m) => console.log(m) });
    console.log(`done: ${note.id} (user_${userId}, request_${requestId})`);
  } catch (err) {
    console.log(`job failed, user told: ${err.message}`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  main(process.argv.slice(2)).catch((err) => {
    console.error(err);
    process.exit(1);
  });
}
