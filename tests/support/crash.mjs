// Helpers for fault tests: a runtime that can be killed with SIGKILL (the way a machine or the
// process dies, with no chance to finish anything) and restarted on the same storage and port,
// a seeded PRNG so a run can be replayed, and paged history reads.
import { randomInt } from "node:crypto";
import readline from "node:readline";
import { startWorker, API_KEY } from "./harness.mjs";
import { workerdChildren } from "../../bench/lib/proc.mjs";

/**
 * The run's seed: ROOMCAST_CRASH_SEED when set (to replay a failure), else a random one.
 * Tests print it so a failing run names the seed that replays it.
 */
export function crashSeed(env = "ROOMCAST_CRASH_SEED") {
  const given = process.env[env];
  if (given !== undefined && given !== "") {
    const n = Number(given);
    if (!Number.isSafeInteger(n) || n < 0 || n > 0xffffffff) {
      throw new Error(`${env} must be an integer in 0..4294967295, got ${JSON.stringify(given)}`);
    }
    return n;
  }
  return randomInt(0, 0xffffffff);
}

/** mulberry32: small, fast, good enough to pick test actions reproducibly from a 32-bit seed. */
export function prng(seed) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    /** An integer in [lo, hi]. */
    int: (lo, hi) => lo + Math.floor(next() * (hi - lo + 1)),
    chance: (p) => next() < p,
    pick: (list) => list[Math.floor(next() * list.length)],
  };
}

/**
 * A seed derived from the run's seed and a label (FNV-1a): each kill point and each actor gets
 * its own stream, so one cycle's choices do not shift when an earlier cycle ran longer.
 */
export function deriveSeed(seed, label) {
  let h = (seed ^ 0x811c9dc5) >>> 0;
  for (let i = 0; i < label.length; i++) h = Math.imul(h ^ label.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

/** A number in [0, 1) fixed by the seed and a label (for choices whose order depends on timing). */
export function hashUnit(seed, label) {
  return prng(deriveSeed(seed, label)).next();
}

/**
 * A runtime with its workerd pid and its stdout log lines (each parsed, stamped with the time
 * this process read it). `kill()` sends SIGKILL and waits until every line the process wrote
 * before dying has been read.
 */
export class Runtime {
  static async start({ bindings, persist, port = 0, onLine } = {}) {
    const before = new Set(workerdChildren());
    const lines = [];
    let closed;
    const worker = await startWorker({
      bindings,
      persist,
      port,
      onStdout(stream) {
        const rl = readline.createInterface(stream);
        closed = new Promise((resolve) => rl.on("close", resolve));
        rl.on("line", (text) => {
          let entry;
          try { entry = { ...JSON.parse(text), at: performance.now() }; } catch { return; }
          lines.push(entry);
          onLine?.(entry);
        });
      },
    });
    const pids = workerdChildren().filter((p) => !before.has(p));
    if (pids.length !== 1) {
      await worker.stop();
      throw new Error(`expected one new workerd process, found ${JSON.stringify(pids)}`);
    }
    return new Runtime(worker, pids[0], lines, closed);
  }

  constructor(worker, pid, lines, closed) {
    this.worker = worker;
    this.pid = pid;
    this.lines = lines;
    this.closed = closed;
    this.port = Number(new URL(worker.base).port);
  }

  /** SIGKILL now (synchronously, so a caller can kill from inside an event handler). */
  killNow() {
    if (this.killedAt !== undefined) return;
    this.killedAt = performance.now();
    process.kill(this.pid, "SIGKILL");
  }

  /** Kills (if not yet) and waits for the runtime's output to end; then frees Miniflare. */
  async kill() {
    this.killNow();
    await this.closed;
    await this.worker.mf.dispose();
  }

  stop() { return this.worker.stop(); }
}

/**
 * Retries `fn` while it fails with a network error (a pooled keep-alive connection to a killed
 * runtime fails the first request that tries it): for requests that are safe to repeat.
 */
export async function retryNetwork(fn, { tries = 20, delayMs = 50 } = {}) {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (e) {
      if (i >= tries || !(e instanceof TypeError)) throw e;
      await new Promise((r) => setTimeout(r, delayMs));
    }
  }
}

/** Every stored notification of a room, oldest first, read page by page with the API key. */
export async function allHistory(worker, room, { pageSize = 1000 } = {}) {
  const out = [];
  let since = 0;
  let lastSeq = 0;
  for (;;) {
    const r = await retryNetwork(() => worker.request("GET", `/rooms/${room}/history?since=${since}&limit=${pageSize}`, {
      headers: { authorization: `Bearer ${API_KEY}` },
    }));
    if (r.status !== 200) throw new Error(`history of ${room}: ${r.status} ${JSON.stringify(r.body)}`);
    out.push(...r.body.notifications);
    lastSeq = r.body.lastSeq;
    if (!r.body.hasMore || r.body.notifications.length === 0) break;
    since = r.body.notifications.at(-1).seq;
  }
  return { lastSeq, notifications: out };
}

/** Polls `check` (returning truthy when done) every `everyMs` until `ms` passes; throws `what`. */
export async function until(check, what, { ms = 10000, everyMs = 25 } = {}) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
