// Upgrades (docs/protocol.md "Delivery": nothing that matters lives only in memory, seq is never reused
// across restarts): storage written by an earlier release, opened by this build. Each fixture in
// tests/fixtures/upgrade/<release>/ is that release's persisted Durable Object storage plus a
// manifest of what it holds (made by scripts/make-upgrade-fixture.mjs). The test copies it, so
// the committed fixture is never changed, and checks that the migrations lose nothing, keep
// every counter, keep idempotency keys and pending rounds, let clients resume with since=, and
// run once: a second start on the migrated storage finds it exactly as the first one left it.
import { test } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { cp, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { ROOT, API_KEY, startWorker, tokenFor } from "./support/harness.mjs";
import { nothingMore } from "./support/checks.mjs";

const FIXTURES = path.join(ROOT, "tests/fixtures/upgrade");
const releases = readdirSync(FIXTURES).filter((d) => existsSync(path.join(FIXTURES, d, "manifest.json"))).sort();

test("there is an upgrade fixture to test", () => {
  assert.ok(releases.length > 0, `no fixture under ${FIXTURES}`);
});

const ISO_Z = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
/** The clocks are the same machine's; this only absorbs rounding of the stored times. */
const SLACK_MS = 5;

/** Checks a stored notification against the fixture's record of it, field by field. */
function sameAsRecorded(got, want, madeAt, where) {
  assert.ok(got, `${where}: missing after the upgrade`);
  const { publishedBetween: [from, to], ...fields } = want;
  for (const [k, v] of Object.entries(fields)) assert.deepEqual(got[k], v, `${where}: ${k}`);
  // Fields a later schema adds must describe the stored row truthfully.
  if (!("createdAt" in fields) && "createdAt" in got) {
    assert.match(got.createdAt, ISO_Z, `${where}: createdAt`);
    const t = Date.parse(got.createdAt);
    assert.ok(t >= from - SLACK_MS && t <= to + SLACK_MS, `${where}: createdAt ${got.createdAt} is not when it was published`);
  }
  if (!("lastAttemptAt" in fields) && "lastAttemptAt" in got) {
    if (want.attempts === 0) assert.equal(got.lastAttemptAt, null, `${where}: lastAttemptAt of one never sent`);
    else {
      assert.match(String(got.lastAttemptAt), ISO_Z, `${where}: lastAttemptAt`);
      const t = Date.parse(got.lastAttemptAt);
      assert.ok(t >= from - SLACK_MS && t <= Date.parse(madeAt), `${where}: lastAttemptAt ${got.lastAttemptAt}`);
    }
  }
}

for (const release of releases) {
  const dir = path.join(FIXTURES, release);
  const manifest = JSON.parse(readFileSync(path.join(dir, "manifest.json"), "utf8"));
  const rooms = Object.keys(manifest.rooms);
  const max = manifest.maxAttempts;
  const tokens = {
    user_alice: tokenFor("alice"), user_bob: tokenFor("bob"), user_carol: tokenFor("carol"),
    request_job42: tokenFor("carol", { rooms: ["request_job42"] }),
  };

  test(`storage written by release ${release} opens with this build and loses nothing`, { timeout: 60_000 }, async () => {
    const persist = await mkdtemp(path.join(tmpdir(), `roomcast-upgrade-${release}-`));
    let w;
    const auth = { authorization: `Bearer ${API_KEY}` };
    const history = async (room, since = 0) => {
      const h = await w.history(room, `?since=${since}&limit=1000`);
      assert.equal(h.status, 200, `${room}: ${JSON.stringify(h.body)}`);
      return h.body;
    };
    const health = async (room) => {
      const h = await w.request("GET", `/rooms/${room}/health`, { headers: auth });
      assert.equal(h.status, 200, `${room}: ${JSON.stringify(h.body)}`);
      return h.body;
    };
    const publishOk = async (room, msg, headers) => {
      const r = await w.publish(room, msg, headers);
      assert.equal(r.status, 200, `${room}: ${JSON.stringify(r.body)}`);
      return r.body;
    };
    try {
      await cp(path.join(dir, "data"), persist, { recursive: true });
      w = await startWorker({ bindings: manifest.bindings, persist });

      // ---- every notification, counter and last seq is still there ----
      for (const room of rooms) {
        const want = manifest.rooms[room];
        const h = await history(room);
        assert.equal(h.lastSeq, want.lastSeq,
          `${room}: lastSeq ${h.lastSeq}, the fixture has ${want.lastSeq} (0 means the runtime did not find the fixture's storage)`);
        assert.deepEqual(h.notifications.map((n) => n.seq), want.notifications.map((n) => n.seq), `${room}: seqs`);
        for (const [i, n] of want.notifications.entries()) {
          sameAsRecorded(h.notifications[i], n, manifest.madeAt, `${room} seq ${n.seq}`);
        }
        const got = await health(room);
        for (const [k, v] of Object.entries(want.health)) assert.deepEqual(got[k], v, `${room} health: ${k}`);
      }

      // ---- idempotency keys written by the old release still answer duplicate ----
      for (const k of manifest.keys) {
        const again = await publishOk(k.room, k.message, k.via === "header" ? { "idempotency-key": k.key } : {});
        assert.deepEqual(again, { ...k.answer, duplicate: true }, `${k.room}: key ${k.key} (${k.via})`);
      }
      for (const b of manifest.broadcasts) {
        const again = await w.request("POST", "/broadcast", { body: b.body, headers: { ...auth, "idempotency-key": b.key } });
        assert.equal(again.status, 200, JSON.stringify(again.body));
        const want = Object.fromEntries(Object.entries(b.answer.rooms).map(([r, a]) => [r, { ...a, duplicate: true }]));
        assert.deepEqual(again.body.rooms, want, `POST /broadcast key ${b.key}`);
      }
      for (const room of rooms) {
        assert.equal((await history(room)).lastSeq, manifest.rooms[room].lastSeq, `${room}: a duplicate takes no seq`);
      }

      // ---- pending notifications go on with their rounds where they stood ----
      for (const room of rooms) {
        const pending = manifest.rooms[room].notifications.filter((n) => n.deliveryStatus === "pending");
        if (!pending.length) continue;
        const c = await w.connect(room, { token: tokens[room] });
        for (const p of pending) {
          const f = await c.next(5000);
          assert.deepEqual([f.id, f.seq, f.attempt], [p.id, p.seq, p.attempts + 1], `${room}: the next round of a pending notification`);
          assert.ok(f.attempt <= max);
        }
        c.send({ type: "ack", ids: pending.map((p) => p.id) });
        c.send({ type: "ping" });
        assert.equal((await c.next()).type, "pong");
        const h = await history(room);
        // Retention keeps the newest HISTORY_LIMIT; a pending one older than that was kept only
        // while pending, so once acked it is gone from history.
        const cutoff = manifest.rooms[room].lastSeq - Number(manifest.bindings.HISTORY_LIMIT);
        for (const p of pending) {
          const e = h.notifications.find((n) => n.id === p.id);
          if (p.seq <= cutoff) {
            assert.equal(e, undefined, `${room} ${p.id}: acked and past the history limit, so pruned`);
            continue;
          }
          assert.deepEqual([e.deliveryStatus, e.attempts, e.ackedBy], ["acked", p.attempts + 1, room === "user_bob" ? "bob" : room === "user_alice" ? "alice" : "carol"], `${room} ${p.id}`);
        }
        await c.close();
      }

      // ---- clients resume across the upgrade with since= and get exactly what follows ----
      for (const room of rooms) {
        const want = manifest.rooms[room];
        const pruned = manifest.prunedThrough?.[room] ?? 0;
        const kept = want.notifications;
        // Resume from the middle of what is kept, and (where the log was pruned) from before it.
        const sinces = [kept[Math.floor(kept.length / 2)].seq - 1, ...(pruned ? [pruned - 1, pruned] : [])];
        for (const since of sinces) {
          const c = await w.connect(room, { token: tokens[room], query: { since: String(since) } });
          assert.equal(c.hello.lastSeq, want.lastSeq, `${room} since=${since}: lastSeq`);
          assert.equal(c.hello.recovered, since >= pruned, `${room} since=${since}: recovered`);
          const expected = kept.filter((n) => n.seq > since);
          const got = [];
          for (const _ of expected) got.push(await c.next());
          assert.deepEqual(got.map((f) => [f.id, f.seq, f.type, f.data]), expected.map((n) => [n.id, n.seq, n.type, n.data]),
            `${room} since=${since}: the replay`);
          assert.ok(await c.quiet(2 * Number(manifest.bindings.ACK_RETRY_INTERVAL_MS)), `${room} since=${since}: nothing more`);
          await c.close();
        }
        // The next publish continues the seq, live to a client that resumed at the last one.
        const c = await w.connect(room, { token: tokens[room], query: { since: String(want.lastSeq) } });
        assert.equal(c.hello.recovered, true);
        const next = await publishOk(room, { type: "after.upgrade", data: { room } });
        assert.equal(next.seq, want.lastSeq + 1, `${room}: the first seq after the upgrade`);
        const f = await c.next();
        assert.deepEqual([f.id, f.seq, f.attempt], [next.id, next.seq, 1]);
        assert.ok(await nothingMore(c));
        await c.close();
      }

      // ---- the migrations ran once: a second start finds the storage as the first left it ----
      const before = {};
      for (const room of rooms) before[room] = { history: await history(room), health: await health(room) };
      await w.stop();
      w = await startWorker({ bindings: manifest.bindings, persist });
      for (const room of rooms) {
        assert.deepEqual(await history(room), before[room].history, `${room}: history after a second start`);
        // The durable counters (the ones the fixture recorded; not, say, memory figures).
        const h = await health(room);
        for (const k of Object.keys(manifest.rooms[room].health)) {
          assert.deepEqual(h[k], before[room].health[k], `${room}: health ${k} after a second start`);
        }
        const next = await publishOk(room, { type: "after.restart" });
        assert.equal(next.seq, before[room].history.lastSeq + 1, `${room}: seq after a second start`);
      }
    } finally {
      await w?.stop();
      await rm(persist, { recursive: true, force: true });
    }
  });
}
