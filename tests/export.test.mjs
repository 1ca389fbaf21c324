// scripts/export-history.mjs: a room's history to JSON Lines over the history route, resumable
// by since. Run as a user would (a child process with ROOMCAST_URL / ROOMCAST_API_KEY) against
// the worker in workerd.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { appendFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, API_KEY, startWorker, tokenFor, roomName } from "./support/harness.mjs";

const SCRIPT = path.join(ROOT, "scripts/export-history.mjs");
let w;
let dir;
before(async () => {
  w = await startWorker({ bindings: { ACK_RETRY_INTERVAL_MS: "60000" } });
  dir = await mkdtemp(path.join(tmpdir(), "roomcast-export-"));
});
after(async () => {
  await w?.stop();
  await rm(dir, { recursive: true, force: true });
});

/** Runs the script; resolves { code, stdout, stderr } (a failing exit is an answer, not a throw). */
function exportRun(args, env = {}) {
  return new Promise((resolve) => {
    execFile(process.execPath, [SCRIPT, ...args], {
      env: { ...process.env, ROOMCAST_URL: w.base, ROOMCAST_API_KEY: API_KEY, ...env },
    }, (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
  });
}

async function lines(file) {
  const text = await readFile(file, "utf8");
  assert.ok(text === "" || text.endsWith("\n"), "the file ends with a complete line");
  return text.split("\n").filter(Boolean).map((l) => JSON.parse(l));
}

async function fullHistory(room) {
  const out = [];
  let since = 0;
  for (;;) {
    const h = await w.history(room, `?since=${since}&limit=1000`);
    assert.equal(h.status, 200);
    out.push(...h.body.notifications);
    if (!h.body.hasMore) return out;
    since = out.at(-1).seq;
  }
}

async function publishN(room, from, to) {
  for (let i = from; i <= to; i++) {
    const r = await w.publish(room, { type: "audit.step", data: { i }, requiresAck: i % 5 === 0 }, i % 3 ? {} : { "idempotency-key": `k-${i}` });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
}

test("an export interrupted and resumed holds every notification exactly once, in seq order", async () => {
  const room = roomName("user_audit");
  const file = path.join(dir, `${room}.jsonl`);
  await publishN(room, 1, 47);
  // An ack, so the export carries delivery state too.
  const sub = room.slice("user_".length);
  const c = await w.connect(room, { token: tokenFor(sub) });
  const first = await c.next();
  c.send({ type: "ack", notificationId: first.id });
  c.send({ type: "ping" });
  assert.equal((await c.until((f) => f.type === "pong")).type, "pong");
  await c.close();

  // Interrupted after 2 pages of 10.
  const a = await exportRun([`--room=${room}`, `--out=${file}`, "--page-size=10", "--max-pages=2"]);
  assert.equal(a.code, 0, a.stderr);
  assert.match(a.stderr, /stopped after 2 page/);
  assert.deepEqual((await lines(file)).map((l) => l.seq), Array.from({ length: 20 }, (_, i) => i + 1));

  // Cut off in the middle of writing a line (a kill at the wrong moment).
  await appendFile(file, '{"roomId":"' + room + '","id":"half');
  // More arrives meanwhile; the resumed run takes everything after the last complete line.
  await publishN(room, 48, 63);
  const b = await exportRun([`--room=${room}`, `--out=${file}`, "--page-size=10"]);
  assert.equal(b.code, 0, b.stderr);
  assert.match(b.stderr, /dropped a partial last line/);
  assert.match(b.stderr, /43 notification\(s\) written .*seq 21\.\.63/);

  const got = await lines(file);
  const want = await fullHistory(room);
  assert.equal(want.length, 63);
  assert.deepEqual(got, want.map((n) => ({ roomId: room, ...n })), "every notification once, as history has it, in seq order");
  assert.equal(got.find((l) => l.id === first.id).deliveryStatus, "acked");

  // Up to date: a further run appends nothing.
  const again = await exportRun([`--room=${room}`, `--out=${file}`]);
  assert.equal(again.code, 0, again.stderr);
  assert.match(again.stderr, /0 notification\(s\) written/);
  assert.equal((await lines(file)).length, 63);
});

test("the export says what was pruned before it and exports the rest", async () => {
  const small = await startWorker({ bindings: { HISTORY_LIMIT: "5" } });
  try {
    const room = roomName("user_pruned");
    for (let i = 1; i <= 9; i++) assert.equal((await small.publish(room, { type: "t", data: { i } })).status, 200);
    const file = path.join(dir, `${room}.jsonl`);
    const r = await exportRun([`--room=${room}`, `--out=${file}`], { ROOMCAST_URL: small.base });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /seqs 1\.\.4 are no longer in the room's history/);
    assert.deepEqual((await lines(file)).map((l) => l.seq), [5, 6, 7, 8, 9]);
  } finally {
    await small.stop();
  }
});

test("bad input is refused with a clear message and leaves the file as it was", async () => {
  const room = roomName("user_err");
  await publishN(room, 1, 3);
  const file = path.join(dir, `${room}.jsonl`);

  const noKey = await exportRun([`--room=${room}`, `--out=${file}`], { ROOMCAST_API_KEY: "" });
  assert.equal(noKey.code, 2);
  assert.match(noKey.stderr, /no API key: pass --api-key or set ROOMCAST_API_KEY/);

  const wrongKey = await exportRun([`--room=${room}`, `--out=${file}`, "--api-key=nope"]);
  assert.equal(wrongKey.code, 1);
  assert.match(wrongKey.stderr, /API key was refused \(401\)/);

  for (const [args, re] of [
    [[`--out=${file}`], /--room is required/],
    [[`--room=${room}`], /--out is required/],
    [["--room=a/b", `--out=${file}`], /invalid room id/],
    [[`--room=${room}`, `--out=${file}`, "--page-size=0"], /--page-size must be an integer in 1\.\.1000/],
    [[`--room=${room}`, `--out=${file}`, "--pages=3"], /unknown argument: --pages=3/],
  ]) {
    const r = await exportRun(args);
    assert.equal(r.code, 2, `${args}: ${r.stderr}`);
    assert.match(r.stderr, re);
  }

  const down = await exportRun([`--room=${room}`, `--out=${file}`], { ROOMCAST_URL: "http://127.0.0.1:9" });
  assert.equal(down.code, 1);
  assert.match(down.stderr, /could not reach http:\/\/127\.0\.0\.1:9/);

  // A file of another room is not continued with this one.
  const other = path.join(dir, "other.jsonl");
  const line = `${JSON.stringify({ roomId: "user_someone_else", seq: 7 })}\n`;
  await writeFile(other, line);
  const mixed = await exportRun([`--room=${room}`, `--out=${other}`]);
  assert.equal(mixed.code, 1);
  assert.match(mixed.stderr, /holds room "user_someone_else"/);
  assert.equal(await readFile(other, "utf8"), line);

  // Nothing above wrote a line; the real export still works from the start.
  const ok = await exportRun([`--room=${room}`, `--out=${file}`]);
  assert.equal(ok.code, 0, ok.stderr);
  assert.deepEqual((await lines(file)).map((l) => l.seq), [1, 2, 3]);
});
