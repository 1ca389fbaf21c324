// examples/job-handler.mjs run as a user would run it (a child process against a running
// server): the user sees exactly one success, or exactly one error, despite the retried step.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import path from "node:path";
import { startWorker, tokenFor, API_KEY, ROOT } from "../support/harness.mjs";
import { makeClient, waitForState, waitForCount, quiet } from "./helpers.mjs";

const run = promisify(execFile);
let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test("the job handler example publishes success once, and the error on failure", async () => {
  const u = `ex${process.pid}x${Date.now().toString(36)}`;
  const { client, seen } = makeClient({
    url: w.base,
    rooms: [`user_${u}`, `request_ok-${u}`, `request_ko-${u}`],
    token: tokenFor(u, { rooms: [`request_ok-${u}`, `request_ko-${u}`] }),
  });
  const env = { ...process.env, ROOMCAST_URL: w.base, ROOMCAST_API_KEY: API_KEY };
  const script = path.join(ROOT, "examples/job-handler.mjs");
  try {
    await waitForState(client, "connected");
    const ok = await run(process.execPath, [script, "--user", u, "--request", `ok-${u}`, "--title", "Groceries"], { env, timeout: 20000 });
    assert.match(ok.stdout, /step notify-success: worker lost after publishing \(attempt 1\)/);
    assert.match(ok.stdout, /step notify-success: ok \(attempt 2\)/);
    assert.match(ok.stdout, /done: note-1/);
    await waitForCount(client, seen, 1);

    const ko = await run(process.execPath, [script, "--user", u, "--request", `ko-${u}`, "--fail"], { env, timeout: 20000 });
    assert.match(ko.stdout, /job failed, user told: could not create/);
    await waitForCount(client, seen, 2);
    assert.equal(await quiet(client, "notification", 300), true);

    assert.deepEqual(seen.map((s) => [s.type, s.status, s.requestId]), [
      ["note.creation.completed", "success", `ok-${u}`],
      ["note.creation.failed", "error", `ko-${u}`],
    ]);
    assert.deepEqual(seen[0].data, { entityId: "note-1", title: "Groceries" });
    assert.equal(seen[0].requiresAck, true);
    assert.match(seen[1].error, /storage unavailable/);
    // Each notification was stored once per room.
    assert.equal((await w.history(`user_${u}`)).body.notifications.length, 2);
  } finally {
    await client.close();
  }
});
