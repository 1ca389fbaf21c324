// A runtime restart on the same storage, end to end against workerd: seq continues where it was.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { startWorker, tokenFor } from "./support/harness.mjs";

test("seq continues after the runtime restarts on the same storage", async () => {
  const dir = await mkdtemp(path.join(tmpdir(), "roomcast-persist-"));
  const room = "user_persist";
  try {
    const first = await startWorker({ persist: dir });
    try {
      for (let i = 1; i <= 3; i++) {
        const r = await first.publish(room, { type: "persist.x", data: { i } });
        assert.equal(r.body.seq, i, JSON.stringify(r.body));
      }
    } finally {
      await first.stop();
    }
    const second = await startWorker({ persist: dir });
    try {
      const c = await second.connect(room, { token: tokenFor("persist") });
      assert.equal(c.hello.lastSeq, 3);
      const r = await second.publish(room, { type: "persist.x" });
      assert.equal(r.body.seq, 4, JSON.stringify(r.body));
      assert.equal((await c.next()).seq, 4);
      const c2 = await second.connect(room, { token: tokenFor("persist") });
      assert.equal(c2.hello.lastSeq, 4);
      const h = await second.history(room);
      assert.deepEqual(h.body.notifications.map((n) => n.seq), [1, 2, 3, 4]);
    } finally {
      await second.stop();
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
