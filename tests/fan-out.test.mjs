// Fan-out, end to end against workerd: 1,000 sockets in one room, large fan-outs sent in
// chunks keeping every socket's order, and concurrent publishes taking contiguous seqs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor, roomName } from "./support/harness.mjs";
import { KEY, nothingMore } from "./support/checks.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test("fan-out: 1,000 sockets in one room each get one publish exactly once", async () => {
  const room = roomName("fan");
  const N = 1000, BATCH = 100;
  const clients = [];
  try {
    for (let i = 0; i < N; i += BATCH) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + BATCH); j++) {
        batch.push(w.connect(room, { token: tokenFor(`fan${j}`, { rooms: [room] }) }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    assert.equal(clients.length, N);
    const r = await w.publish(room, { type: "fan.out", data: { n: 1 } });
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.broadcastCount, N);
    const frames = await Promise.all(clients.map((c) => c.next(20_000)));
    for (const f of frames) {
      assert.equal(f.id, r.body.id);
      assert.equal(f.seq, r.body.seq);
    }
    // Exactly once: no socket gets a second frame.
    const quiet = await Promise.all(clients.map((c) => nothingMore(c)));
    assert.equal(quiet.filter((q) => !q).length, 0, "sockets with a second frame");
    const h = await w.request("GET", `/rooms/${room}/health`, { headers: KEY });
    assert.equal(h.body.connections, N);
  } finally {
    for (const c of clients) { c.terminate(); w.sockets.delete(c); }
  }
});

test("large fan-outs (over 256 sockets, sent in chunks) keep every socket's frames in seq order", async () => {
  // Rooms above 256 matching sockets are answered first and fanned out in chunks; publishes,
  // retries and a resuming client must still see each seq once, in order.
  const room = roomName("big");
  const N = 300, PUBLISHES = 20;
  const clients = [];
  try {
    for (let i = 0; i < N; i += 100) {
      const batch = [];
      for (let j = i; j < Math.min(N, i + 100); j++) {
        batch.push(w.connect(room, { token: tokenFor(`big${j}`, { rooms: [room] }) }));
      }
      clients.push(...(await Promise.all(batch)));
    }
    const results = [];
    let resumed;
    for (let i = 0; i < PUBLISHES; i++) {
      results.push(w.publish(room, { type: "big.burst", data: { i } }));
      // A client resuming mid-burst, while chunks are still going out.
      if (i === PUBLISHES / 2) {
        await results[0];
        resumed = w.connect(room, { token: tokenFor("late", { rooms: [room] }), query: { since: "1" } });
      }
    }
    for (const r of await Promise.all(results)) {
      assert.equal(r.status, 200, JSON.stringify(r.body));
      assert.equal(r.body.broadcastCount >= N, true);
    }
    const want = Array.from({ length: PUBLISHES }, (_, i) => i + 1);
    const seen = await Promise.all(clients.map(async (c) => {
      const got = [];
      while (got.length < PUBLISHES) got.push((await c.next(20_000)).seq);
      return got;
    }));
    for (const got of seen) assert.deepEqual(got, want);
    const late = await resumed;
    const lateSeqs = [];
    while (lateSeqs.length < PUBLISHES - 1) lateSeqs.push((await late.next(20_000)).seq);
    assert.deepEqual(lateSeqs, want.slice(1), "the resumed client: 2..20, no gap, no duplicate");
    assert.equal(await nothingMore(late), true);
  } finally {
    for (const c of clients) { c.terminate(); w.sockets.delete(c); }
  }
});

test("100 concurrent publishes take 100 contiguous seqs, delivered in seq order", async () => {
  const room = roomName("seq");
  const c = await w.connect(room, { token: tokenFor("u1", { rooms: [room] }) });
  const results = await Promise.all(
    Array.from({ length: 100 }, (_, i) => w.publish(room, { type: "seq.test", data: { i } })),
  );
  for (const r of results) assert.equal(r.status, 200, JSON.stringify(r.body));
  const seqs = results.map((r) => r.body.seq);
  assert.equal(new Set(seqs).size, 100, "distinct seqs");
  assert.equal(Math.min(...seqs), 1);
  assert.equal(Math.max(...seqs) - Math.min(...seqs), 99);
  const got = [];
  for (let i = 0; i < 100; i++) got.push(await c.next());
  assert.deepEqual(got.map((f) => f.seq), Array.from({ length: 100 }, (_, i) => i + 1));
  // Each frame is the one its publish answered for.
  const idBySeq = new Map(results.map((r) => [r.body.seq, r.body.id]));
  for (const f of got) assert.equal(f.id, idBySeq.get(f.seq));
  assert.ok(await nothingMore(c));
  await c.close();
});
