// What operators read, end to end against workerd: every log line is one JSON object with an
// `event` from the list in docs/operations.md, connects and publishes carry their latency, the
// alarm logs each run, and history keeps the audit trail (createdAt, lastAttemptAt, ackedAt,
// ackedBy).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import path from "node:path";
import { ROOT, startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { ISO_Z, eventually } from "./support/checks.mjs";

const INTERVAL = 300;
let w;
const lines = [];
before(async () => {
  w = await startWorker({
    bindings: { ACK_RETRY_INTERVAL_MS: String(INTERVAL), ACK_MAX_ATTEMPTS: "2" },
    onStdout(stdout) {
      let rest = "";
      stdout.on("data", (d) => {
        const text = rest + d.toString();
        const parts = text.split("\n");
        rest = parts.pop();
        for (const p of parts) if (p.trim()) lines.push(p);
      });
    },
  });
});
after(async () => { await w?.stop(); });

/** The parsed log lines of `event` for `room`. */
const logged = (event, room) =>
  lines.map((l) => { try { return JSON.parse(l); } catch { return null; } })
    .filter((l) => l && l.event === event && (!room || l.room === room));

test("log lines: JSON, documented events, latency on connect and publish, an alarm line per run", async () => {
  const room = roomName("logs");
  const c = await w.connect(room, { token: tokenFor("ops", { rooms: [room] }) });
  const before = Date.now();
  const pub = await w.publish(room, { type: "job.done", requiresAck: true });
  assert.equal(pub.status, 200);
  assert.equal((await c.next()).attempt, 1);

  await eventually(() => logged("publish", room).length === 1, { what: "the publish line" });
  const [p] = logged("publish", room);
  assert.deepEqual([p.id, p.seq, p.type, p.requiresAck, p.broadcastCount], [pub.body.id, pub.body.seq, "job.done", true, 1]);
  assert.ok(Number.isInteger(p.latencyMs) && p.latencyMs >= 0 && p.latencyMs <= Date.now() - before + 1000, `latencyMs ${p.latencyMs}`);
  const [con] = logged("connect", room);
  assert.ok(Number.isInteger(con.latencyMs) && con.latencyMs >= 0, JSON.stringify(con));
  assert.equal(con.sub, "ops");

  // Unacked: the alarm sends round 2, then fails it; each run logs a line.
  assert.equal((await c.next(INTERVAL * 10)).attempt, 2);
  await eventually(() => logged("failed", room).length === 1, { what: "the failed line", ms: INTERVAL * 10 });
  const alarms = logged("alarm", room);
  assert.ok(alarms.length >= 2, `alarm lines: ${JSON.stringify(alarms)}`);
  assert.ok(alarms.some((a) => a.rounds === 1) && alarms.some((a) => a.failed === 1), JSON.stringify(alarms));
  for (const a of alarms) assert.ok(a.lateMs === undefined || a.lateMs >= 0, JSON.stringify(a));
  assert.equal(logged("retry", room).length, 1);

  // Every line is JSON with an event that docs/operations.md describes; no token ever appears.
  const documented = readFileSync(path.join(ROOT, "docs/operations.md"), "utf8");
  for (const l of lines) {
    let j;
    try { j = JSON.parse(l); } catch { continue; } // the runtime's own output
    assert.ok(documented.includes(`\`${j.event}\``), `undocumented event in ${l}`);
    assert.ok(!l.includes(tokenFor("ops").split(".")[0] + "."), "no token in a log line");
  }
  c.terminate();
});

test("history keeps the audit trail: createdAt, lastAttemptAt, ackedAt, ackedBy", async () => {
  const room = roomName("audit");
  const t0 = Date.now();
  const queued = await w.publish(room, { type: "audit.x", requiresAck: true });
  let [e] = (await w.history(room)).body.notifications;
  assert.match(e.createdAt, ISO_Z);
  assert.ok(Math.abs(Date.parse(e.createdAt) - t0) < 5000, e.createdAt);
  assert.deepEqual([e.deliveryStatus, e.attempts, e.lastAttemptAt, e.ackedAt, e.ackedBy], ["pending", 0, null, null, null], "nobody got it yet");

  const c = await w.connect(room, { token: tokenFor("auditor", { rooms: [room] }) });
  const f = await c.next();
  assert.equal(f.id, queued.body.id);
  c.send({ type: "ack", notificationId: f.id });
  [e] = (await eventually(async () => {
    const h = (await w.history(room)).body.notifications;
    return h[0].deliveryStatus === "acked" && h;
  }, { what: "acked" }));
  assert.match(e.lastAttemptAt, ISO_Z, "sent once: lastAttemptAt set");
  assert.ok(Date.parse(e.lastAttemptAt) >= Date.parse(e.createdAt));
  assert.match(e.ackedAt, ISO_Z);
  assert.ok(Date.parse(e.ackedAt) >= Date.parse(e.lastAttemptAt));
  assert.deepEqual([e.attempts, e.ackedBy], [1, "auditor"]);
  c.terminate();
});
