// The README walkthrough against the real `wrangler dev` (its own build via wrangler.toml's
// [build] command, settings from .dev.vars): mint a dev token, subscribe, publish, receive.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { copyFile, access, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, Client } from "./support/harness.mjs";

const READY_DEADLINE_MS = 180_000; // a cold build is ~60 s; other builds may hold the build lock

/** A port the OS considers free right now. */
function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/** KEY=value lines of a .dev.vars file (comments and blank lines skipped). */
function parseVars(text) {
  const vars = {};
  for (const line of text.split("\n")) {
    const m = /^\s*([A-Za-z_][A-Za-z0-9_]*)\s*=\s*(.*?)\s*$/.exec(line);
    if (m && !line.trimStart().startsWith("#")) vars[m[1]] = m[2].replace(/^"(.*)"$/, "$1");
  }
  return vars;
}

let proc, base, output = "", vars, persistDir;

before(async () => {
  const devVars = path.join(ROOT, ".dev.vars");
  try { await access(devVars); } catch { await copyFile(path.join(ROOT, ".dev.vars.example"), devVars); }
  // What wrangler will actually load, so the keys used here are the ones the worker sees.
  vars = parseVars(await readFile(devVars, "utf8"));
  assert.ok(vars.BROADCAST_API_KEYS, ".dev.vars has no BROADCAST_API_KEYS");
  assert.equal(vars.DEV_MODE, "true", ".dev.vars must have DEV_MODE=true for /dev/token");

  const [port, inspector] = [await freePort(), await freePort()];
  persistDir = await mkdtemp(path.join(tmpdir(), "roomcast-wrangler-"));
  base = `http://127.0.0.1:${port}`;
  proc = spawn(path.join(ROOT, "node_modules/.bin/wrangler"), [
    "dev", "--port", String(port), "--inspector-port", String(inspector), "--ip", "127.0.0.1",
    "--persist-to", persistDir, "--show-interactive-dev-session=false",
  ], {
    cwd: ROOT,
    // Its own process group, so `after` can stop wrangler, the build and workerd together.
    detached: true,
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, CI: "true", WRANGLER_SEND_METRICS: "false", NO_COLOR: "1" },
  });
  proc.stdout.on("data", (d) => (output += d));
  proc.stderr.on("data", (d) => (output += d));
  const exited = new Promise((resolve) => proc.once("exit", (code, signal) => resolve({ code, signal })));

  const deadline = Date.now() + READY_DEADLINE_MS;
  for (;;) {
    const attempt = fetch(`${base}/healthz`, { signal: AbortSignal.timeout(5000) })
      .then(async (r) => (r.status === 200 ? r.json() : null))
      .catch(() => null);
    const r = await Promise.race([attempt, exited.then((e) => ({ exited: e }))]);
    if (r?.exited) {
      assert.fail(`wrangler dev exited early (${JSON.stringify(r.exited)}):\n${output}`);
    }
    if (r?.ok === true) break;
    if (Date.now() > deadline) {
      assert.fail(`wrangler dev not ready within ${READY_DEADLINE_MS / 1000} s:\n${output}`);
    }
    // Between attempts only; a refused connection returns at once.
    await new Promise((res) => setTimeout(res, 500));
  }
});

after(async () => {
  if (proc && proc.exitCode === null && proc.signalCode === null) {
    const gone = new Promise((resolve) => proc.once("exit", resolve));
    try { process.kill(-proc.pid, "SIGTERM"); } catch {}
    const t = setTimeout(() => { try { process.kill(-proc.pid, "SIGKILL"); } catch {} }, 5000);
    await gone;
    clearTimeout(t);
  }
  // workerd may outlive wrangler's exit by a moment; the group kill above reached it too.
  try { process.kill(-proc.pid, "SIGKILL"); } catch {}
  if (persistDir) await rm(persistDir, { recursive: true, force: true });
});

test("README walkthrough through wrangler dev: dev token, subscribe, publish, receive", { timeout: 60_000 }, async () => {
  const health = await fetch(`${base}/healthz`).then((r) => r.json());
  assert.equal(health.ok, true);

  const minted = await fetch(`${base}/dev/token`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sub: "demo" }),
  });
  const mintedBody = await minted.json();
  assert.equal(minted.status, 200, JSON.stringify(mintedBody));
  assert.equal(typeof mintedBody.token, "string");

  const room = "user_demo";
  const c = new Client(`${base.replace(/^http/, "ws")}/rooms/${room}/subscribe?token=${encodeURIComponent(mintedBody.token)}`, {});
  try {
    await c.opened;
    assert.equal(c.hello.type, "connected");
    assert.equal(c.hello.roomId, room);

    const apiKey = vars.BROADCAST_API_KEYS.split(",")[0].trim();
    const res = await fetch(`${base}/rooms/${room}/broadcast`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${apiKey}` },
      body: JSON.stringify({ type: "note.creation.completed", data: { title: "My Note" }, requestId: "req-abc" }),
    });
    const published = await res.json();
    assert.equal(res.status, 200, JSON.stringify(published));
    assert.equal(published.success, true);
    assert.equal(published.broadcastCount, 1);

    const f = await c.next(10_000);
    assert.equal(f.id, published.id);
    assert.equal(f.seq, published.seq);
    assert.equal(f.type, "note.creation.completed");
    assert.deepEqual(f.data, { title: "My Note" });
    assert.equal(f.requestId, "req-abc");

    c.send("ping");
    assert.equal(await c.next(), "pong");
  } finally {
    c.terminate();
  }
});
