import { test, after, before } from "node:test";
import assert from "node:assert/strict";
import { startWorker, tokenFor } from "./support/harness.mjs";

let w;
before(async () => { w = await startWorker(); });
after(async () => { await w?.stop(); });

test("publish reaches a subscriber", async () => {
  const c = await w.connect("user_u1");
  assert.equal(c.hello.type, "connected");
  const r = await w.publish("user_u1", { type: "note.created", data: { a: 1 } });
  assert.equal(r.status, 200, JSON.stringify(r.body));
  assert.equal(r.body.broadcastCount, 1);
  const f = await c.next();
  assert.equal(f.type, "note.created");
  assert.equal(f.seq, r.body.seq);
  c.send("ping");
  assert.equal(await c.next(), "pong");
  c.send({ type: "ping" });
  assert.equal((await c.next()).type, "pong");
});
