#!/usr/bin/env node
// Makes an upgrade fixture: Durable Object storage written by one release of roomcast, with a
// manifest of what is in it, for tests/upgrade.test.mjs to open with the current build.
//
//   node scripts/make-upgrade-fixture.mjs <build-dir> <out-dir> [--release=<commit>] [--force]
//
// It starts <build-dir> (a compiled worker: index.js + index_bg.wasm) in workerd through
// Miniflare with a fresh persist directory, creates a representative state (rooms with
// notifications sent live and offline, acked, failed, pending after one and two rounds, pending
// in the offline queue, with and without idempotency keys and body ids, a room whose history
// was pruned, a request_ room filled by POST /broadcast), checks that the state is what it
// meant to create, stops, folds SQLite's write-ahead log into the database files (so the
// fixture is a few small .sqlite files, not megabytes of WAL), reopens the result to check it
// reads back the same, and writes <out-dir>/data (the storage) and <out-dir>/manifest.json.
//
// Fixtures live in tests/fixtures/upgrade/<release>/ and are committed (the data, never the
// build). Every schema change adds one, made from the release BEFORE the change, so the test
// proves that storage written by what is deployed today opens with the new code. To build an
// older commit without touching your checkout:
//
//   git worktree add /tmp/roomcast-<commit> <commit>
//   ln -s "$PWD/node_modules" /tmp/roomcast-<commit>/node_modules   # or npm ci there
//   (cd /tmp/roomcast-<commit> && bash scripts/build.sh)           # writes its build/
//   node scripts/make-upgrade-fixture.mjs /tmp/roomcast-<commit>/build \
//     tests/fixtures/upgrade/schema<N>-<commit> --release=<commit>
//   git worktree remove /tmp/roomcast-<commit>
//
// Folding the WAL needs SQLite: it uses Python's sqlite3 module (python3 is part of the stock
// toolchain), or the sqlite3 command when there is no python3.
import { spawnSync } from "node:child_process";
import { existsSync, readdirSync, statSync } from "node:fs";
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import assert from "node:assert/strict";

const USAGE = "usage: node scripts/make-upgrade-fixture.mjs <build-dir> <out-dir> [--release=<name>] [--force]";

/**
 * Settings the fixture was made with; the upgrade test runs the new build with the same ones.
 * A TTL of ten years keeps the fixture from expiring: its rows keep the time they were written.
 */
const FIXTURE_BINDINGS = {
  ACK_RETRY_INTERVAL_MS: "300",
  ACK_MAX_ATTEMPTS: "3",
  HISTORY_LIMIT: "12",
  HISTORY_TTL_SECONDS: "315360000",
};

function fail(message) {
  console.error(`make-upgrade-fixture: ${message}`);
  process.exit(2);
}

function parseArgs(argv) {
  const positional = [];
  const flags = {};
  for (const a of argv) {
    if (a === "--help" || a === "-h") { console.log(USAGE); process.exit(0); }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(a);
    if (m) flags[m[1]] = m[2] ?? true;
    else if (a.startsWith("-")) fail(`unknown option ${a}\n${USAGE}`);
    else positional.push(a);
  }
  for (const k of Object.keys(flags)) if (!["release", "force"].includes(k)) fail(`unknown option --${k}\n${USAGE}`);
  if (positional.length !== 2) fail(USAGE);
  return { buildDir: path.resolve(positional[0]), outDir: path.resolve(positional[1]), release: flags.release, force: !!flags.force };
}

/** Folds each database's WAL into it and removes the -wal and -shm files. */
function foldWal(dir) {
  for (const name of readdirSync(dir)) {
    const file = path.join(dir, name);
    if (name.endsWith(".sqlite-wal") || name.endsWith(".sqlite-shm")) continue; // go with their database
    if (statSync(file).isDirectory()) { foldWal(file); continue; }
    if (!name.endsWith(".sqlite")) continue;
    const py = spawnSync("python3", ["-c",
      "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1])\nr=c.execute('PRAGMA wal_checkpoint(TRUNCATE)').fetchone()\nassert r[0]==0, r\nc.execute('PRAGMA journal_mode=DELETE')\nc.close()",
      file], { encoding: "utf8" });
    if (py.error?.code === "ENOENT") {
      const cli = spawnSync("sqlite3", [file, "PRAGMA wal_checkpoint(TRUNCATE);", "PRAGMA journal_mode=DELETE;"], { encoding: "utf8" });
      if (cli.error || cli.status !== 0) fail(`could not fold the WAL of ${file}: need python3 or sqlite3 (${cli.error?.message ?? cli.stderr})`);
    } else if (py.status !== 0) {
      fail(`could not fold the WAL of ${file}: ${py.stderr}`);
    }
  }
  for (const name of readdirSync(dir)) {
    if (/\.sqlite-(wal|shm)$/.test(name)) fail(`${name} is still there after folding the WAL`);
  }
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function main() {
  const { buildDir, outDir, release, force } = parseArgs(process.argv.slice(2));
  for (const f of ["index.js", "index_bg.wasm"]) {
    if (!existsSync(path.join(buildDir, f))) fail(`${buildDir} has no ${f}: pass a build directory (bash scripts/build.sh writes build/)`);
  }
  if (existsSync(outDir) && readdirSync(outDir).length && !force) fail(`${outDir} is not empty (--force replaces it)`);
  // The harness reads the build directory when it is first imported.
  process.env.ROOMCAST_BUILD_DIR = buildDir;
  const { startWorker, tokenFor, API_KEY } = await import("../tests/support/harness.mjs");
  const interval = Number(FIXTURE_BINDINGS.ACK_RETRY_INTERVAL_MS);
  const maxAttempts = Number(FIXTURE_BINDINGS.ACK_MAX_ATTEMPTS);

  const persist = await mkdtemp(path.join(tmpdir(), "roomcast-fixture-"));
  const w = await startWorker({ bindings: FIXTURE_BINDINGS, persist });
  const keys = []; // publishes a retry must answer as duplicates
  const broadcasts = []; // the same for POST /broadcast
  const windows = new Map(); // "room/id" -> [ms before the publish, ms after its answer]
  const publish = async (room, msg, key) => {
    const before = Date.now();
    const r = await w.publish(room, msg, key ? { "idempotency-key": key } : {});
    assert.equal(r.status, 200, `publish to ${room}: ${JSON.stringify(r.body)}`);
    windows.set(`${room}/${r.body.id}`, [before, Date.now()]);
    if (key || msg.id) keys.push({ room, key: key ?? msg.id, via: key ? "header" : "body id", message: msg, answer: r.body });
    return r.body;
  };
  /** Connects with a filter that matches only `types`: other pending notifications get no round from it. */
  const connect = (room, sub, types, extra = {}) =>
    w.connect(room, { token: tokenFor(sub, { rooms: [room] }), query: { types, ...extra } });
  const history = async (room) => {
    const h = await w.history(room, "?since=0&limit=1000");
    assert.equal(h.status, 200, JSON.stringify(h.body));
    return h.body;
  };
  const settle = async (room, id, pred, what) => {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const e = (await history(room)).notifications.find((n) => n.id === id);
      if (e && pred(e)) return e;
      if (Date.now() > deadline) fail(`${room} ${id} never became ${what}: ${JSON.stringify(e)}`);
      await sleep(50);
    }
  };

  try {
    // ---- user_alice: one of every delivery state ----
    const A = "user_alice";
    let c = await connect(A, "alice", "fx.plain");
    const plain = await publish(A, { type: "fx.plain", data: { n: 1 } }, "fx-alice-plain");
    assert.equal((await c.next()).id, plain.id);
    await c.close();

    c = await connect(A, "alice", "fx.acked");
    const acked = await publish(A, { type: "fx.acked", data: { n: 2 }, requiresAck: true }, "fx-alice-acked");
    assert.equal((await c.next()).attempt, 1);
    c.send({ type: "ack", notificationId: acked.id });
    await settle(A, acked.id, (e) => e.deliveryStatus === "acked", "acked");
    await c.close();

    c = await connect(A, "alice", "fx.failed");
    const failed = await publish(A, { type: "fx.failed", data: { n: 3 }, requiresAck: true });
    for (let i = 1; i <= maxAttempts; i++) assert.equal((await c.next(interval * 5)).attempt, i);
    await settle(A, failed.id, (e) => e.deliveryStatus === "failed", "failed");
    await c.close();

    c = await connect(A, "alice", "fx.pending.one");
    const pendingOne = await publish(A, { type: "fx.pending.one", data: { n: 4 }, requiresAck: true }, "fx-alice-pending-1");
    assert.equal((await c.next()).attempt, 1);
    await c.close(); // before round 2

    c = await connect(A, "alice", "fx.pending.two");
    const pendingTwo = await publish(A, { type: "fx.pending.two", data: { n: 5 }, requiresAck: true });
    assert.equal((await c.next()).attempt, 1);
    assert.equal((await c.next(interval * 5)).attempt, 2);
    await c.close(); // before round 3

    // Nobody connected: sent to no one, and an offline-queue entry.
    const bodyId = await publish(A, { type: "fx.offline.plain", id: "fx-alice-body-id", data: { n: 6 } });
    const offline = await publish(A, { type: "fx.offline", data: { n: 7 }, requiresAck: true }, "fx-alice-offline");
    await publish(A, {
      type: "note.creation.failed", data: { entityId: "note-8" }, status: "error", error: "disk full",
      requestId: "req-8", timestamp: "2026-01-20T10:00:00.000Z",
    });

    // ---- user_bob: a pruned history that keeps its pending entry ----
    const B = "user_bob";
    const bobPending = await publish(B, { type: "fx.bob.pending", data: { n: 1 }, requiresAck: true }, "fx-bob-pending");
    for (let i = 2; i <= 15; i++) await publish(B, { type: "fx.bob.plain", data: { n: i } }, i === 15 ? "fx-bob-last" : undefined);

    // ---- user_carol and request_job42 through POST /broadcast ----
    const C = "user_carol";
    const R = "request_job42";
    c = await connect(C, "carol", "fx.job.*");
    const before = Date.now();
    const body = { userId: "carol", requestId: "job42", message: { type: "fx.job.done", data: { n: 1 }, requiresAck: true } };
    const both = await w.request("POST", "/broadcast", {
      body, headers: { authorization: `Bearer ${API_KEY}`, "idempotency-key": "fx-job42-done" },
    });
    assert.equal(both.status, 200, JSON.stringify(both.body));
    for (const [room, answer] of Object.entries(both.body.rooms)) windows.set(`${room}/${answer.id}`, [before, Date.now()]);
    broadcasts.push({ key: "fx-job42-done", body, answer: both.body });
    const job = await c.next();
    c.send({ type: "ack", notificationId: job.id });
    await settle(C, job.id, (e) => e.deliveryStatus === "acked", "acked");
    await c.close();
    await publish(R, { type: "fx.job.progress", data: { pct: 50 }, status: "pending" });

    // Let every round that can end do so (a round with nobody to send to is not a round).
    await sleep(interval * 3);
    const expect = [
      [A, plain.id, "sent", 1], [A, acked.id, "acked", 1], [A, failed.id, "failed", maxAttempts],
      [A, pendingOne.id, "pending", 1], [A, pendingTwo.id, "pending", 2], [A, bodyId.id, "sent", 0],
      [A, offline.id, "pending", 0], [B, bobPending.id, "pending", 0], [C, job.id, "acked", 1],
      [R, job.id, "pending", 0],
    ];
    for (const [room, id, status, attempts] of expect) {
      const e = (await history(room)).notifications.find((n) => n.id === id);
      assert.deepEqual([e?.deliveryStatus, e?.attempts], [status, attempts], `${room} ${id}`);
    }

    const rooms = {};
    for (const room of [A, B, C, R]) {
      const h = await history(room);
      const health = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
      assert.equal(health.status, 200);
      rooms[room] = {
        lastSeq: h.lastSeq,
        health: health.body,
        notifications: h.notifications.map((n) => ({ ...n, publishedBetween: windows.get(`${room}/${n.id}`) })),
      };
    }
    assert.deepEqual(rooms[B].notifications.map((n) => n.seq), [1, ...Array.from({ length: 12 }, (_, i) => i + 4)],
      "bob's room keeps its pending seq 1 and the newest 12");
    await w.stop();

    foldWal(persist);
    // The folded files read back the same through the same build.
    const check = await startWorker({ bindings: FIXTURE_BINDINGS, persist });
    try {
      for (const [room, r] of Object.entries(rooms)) {
        const h = await check.history(room, "?since=0&limit=1000");
        assert.deepEqual(h.body.notifications, r.notifications.map(({ publishedBetween, ...n }) => n), `${room} after folding the WAL`);
      }
    } finally {
      await check.stop();
    }
    foldWal(persist);

    await rm(outDir, { recursive: true, force: true });
    await mkdir(outDir, { recursive: true });
    await cp(persist, path.join(outDir, "data"), { recursive: true });
    const manifest = {
      about: "Storage written by the release below, and what it holds. Made by scripts/make-upgrade-fixture.mjs; read by tests/upgrade.test.mjs.",
      release: release ?? path.basename(outDir),
      madeAt: new Date().toISOString(),
      bindings: FIXTURE_BINDINGS,
      maxAttempts,
      prunedThrough: { [B]: 3 },
      keys,
      broadcasts,
      rooms,
    };
    await writeFile(path.join(outDir, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
    const files = await readdir(path.join(outDir, "data"), { recursive: true });
    let bytes = 0;
    for (const f of files) {
      const s = statSync(path.join(outDir, "data", f));
      if (s.isFile()) bytes += s.size;
    }
    console.log(`wrote ${outDir}: ${Object.keys(rooms).length} rooms, ${Object.values(rooms).reduce((s, r) => s + r.notifications.length, 0)} notifications, ${(bytes / 1024).toFixed(0)} KiB of storage`);
  } finally {
    await rm(persist, { recursive: true, force: true });
  }
}

main().catch((e) => { console.error(e); process.exit(1); });
