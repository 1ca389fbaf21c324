// The client side: WebSocket pools and a publisher, in the benchmark's own Node process.
// Made cheap on purpose (no permessage-deflate, no UTF-8 validation, no JSON.parse per frame:
// a frame's seq is read straight from the bytes), because its CPU is shared with the runtime.
import WebSocket from "ws";
import { Agent, request as httpRequest } from "node:http";
import { API_KEY, JWT_SECRET } from "./peers.mjs";
import { mintToken } from "./load.mjs";

const SEQ = Buffer.from('"seq":');
const LAST_SEQ = Buffer.from('"lastSeq":');
const CONNECTED = Buffer.from('"connected"');
const BATCH = Buffer.from('{"type":"batch"');

function readInt(buf, at) {
  let n = 0;
  for (let i = at; i < buf.length; i++) {
    const c = buf[i];
    if (c < 48 || c > 57) break;
    n = n * 10 + (c - 48);
  }
  return n;
}

/** An HS256 client token for roomcast (the JS peers ignore it). */
export function token(sub = "bench", ttl = 6 * 3600) {
  return mintToken(JWT_SECRET, { sub, ttl, rooms: ["*"] });
}

/**
 * N sockets in one room. Tracks, per socket, the last seq seen and whether frames came in
 * order with no gap; per seq, how many sockets have it and when the last one did.
 */
export class Pool {
  /** `batch`: ask for batch=1 (roomcast's batched frames; the JS peers ignore it). */
  constructor(rt, room, { batch = false } = {}) {
    this.rt = rt;
    this.room = room;
    this.batch = batch;
    this.batchFrames = 0; // batch frames received (each carrying one or more notifications)
    this.sockets = [];
    this.lastSeq = [];
    this.order = 0; // frames out of order or after a gap
    this.frames = 0;
    this.counts = new Map(); // seq -> sockets that have it
    this.waiters = new Map(); // seq -> { resolve, at }
    this.doneAt = new Map(); // seq -> time the last socket got it
    this.closed = 0;
    // A room idle for ~10 s hibernates; js-hibernating and partyserver keep seq in memory only
    // and would restart it at 1. A JSON ping from one socket every 2 s keeps each room awake
    // (a text "ping" would not: the runtime answers that without waking the room).
    this.keepalive = setInterval(() => {
      const ws = this.sockets.find((w) => w.readyState === WebSocket.OPEN);
      if (ws) ws.send('{"type":"ping"}');
    }, 2000);
    this.keepalive.unref();
  }

  /** Opens `n` more sockets, at most `concurrency` handshakes at a time. */
  async open(n, { concurrency = 200, since, tok = token() } = {}) {
    const qs = new URLSearchParams({ token: tok });
    if (since !== undefined) qs.set("since", String(since));
    if (this.batch) qs.set("batch", "1");
    const url = `${this.rt.wsBase}/rooms/${this.room}/subscribe?${qs}`;
    let next = 0;
    const worker = async () => {
      while (next < n) {
        next++;
        await this.openOne(url, { since });
      }
    };
    await Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
  }

  openOne(url, { since } = {}) {
    const i = this.sockets.length;
    this.lastSeq.push(-1);
    const ws = new WebSocket(url, { perMessageDeflate: false, skipUTF8Validation: true });
    this.sockets.push(ws);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${this.rt.name}: socket ${i} not connected in 60 s`)), 60_000);
      ws.on("unexpected-response", (_q, res) => {
        clearTimeout(timer);
        reject(new Error(`${this.rt.name}: upgrade refused ${res.statusCode}`));
      });
      ws.on("error", (e) => { clearTimeout(timer); reject(e); });
      ws.on("close", () => { this.closed++; });
      ws.on("message", (buf) => {
        const at = buf.indexOf(SEQ);
        if (at === -1) {
          if (buf.indexOf(CONNECTED) !== -1) {
            const l = buf.indexOf(LAST_SEQ);
            // With since=, the replay starts after `since`; without, live frames after lastSeq.
            this.lastSeq[i] = since ?? (l === -1 ? 0 : readInt(buf, l + LAST_SEQ.length));
            clearTimeout(timer);
            resolve(ws);
          }
          return;
        }
        if (buf.indexOf(BATCH) === 0) {
          // Every notification in a batch carries one "seq", in order.
          this.batchFrames++;
          for (let s = at; s !== -1; s = buf.indexOf(SEQ, s + SEQ.length)) this.onFrame(i, readInt(buf, s + SEQ.length));
          return;
        }
        const seq = readInt(buf, at + SEQ.length);
        this.onFrame(i, seq);
      });
    });
  }

  onFrame(i, seq) {
    this.frames++;
    if (seq !== this.lastSeq[i] + 1) this.order++;
    this.lastSeq[i] = seq;
    const c = (this.counts.get(seq) ?? 0) + 1;
    if (c === this.sockets.length) {
      this.counts.delete(seq);
      const t = performance.now();
      this.doneAt.set(seq, t);
      const w = this.waiters.get(seq);
      if (w) { this.waiters.delete(seq); w.resolve(t); }
    } else {
      this.counts.set(seq, c);
    }
  }

  /** Resolves with the time the last socket got `seq` (rejects after `ms`). */
  allGot(seq, ms = 60_000) {
    const done = this.doneAt.get(seq);
    if (done !== undefined) return Promise.resolve(done);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiters.delete(seq);
        reject(new Error(`${this.rt.name}: seq ${seq} reached ${this.counts.get(seq) ?? 0}/${this.sockets.length} sockets in ${ms} ms`));
      }, ms);
      this.waiters.set(seq, { resolve: (v) => { clearTimeout(t); resolve(v); } });
    });
  }

  /** Forgets per-seq bookkeeping (keeps the order check). */
  reset() { this.counts.clear(); this.doneAt.clear(); this.waiters.clear(); }

  async close() {
    clearInterval(this.keepalive);
    const closing = this.sockets.map((ws) => new Promise((r) => {
      if (ws.readyState === WebSocket.CLOSED) return r();
      ws.once("close", r);
      ws.terminate();
    }));
    await Promise.all(closing);
    this.sockets = [];
    this.lastSeq = [];
  }
}

/** Publishes over one keep-alive HTTP agent per runtime. */
export class Publisher {
  constructor(rt, room) {
    this.rt = rt;
    this.room = room;
    this.agent = new Agent({ keepAlive: true, maxSockets: 64 });
    const u = new URL(`${rt.base}/rooms/${room}/broadcast`);
    this.opts = {
      host: u.hostname, port: u.port, path: u.pathname, method: "POST", agent: this.agent,
      headers: { authorization: `Bearer ${API_KEY}`, "content-type": "application/json" },
    };
    this.n = 0;
  }

  /** One publish; resolves { seq, count, ms } when the response is complete. */
  publish(data = { entityId: "note-456", title: "My Note", n: this.n }) {
    this.n++;
    const body = JSON.stringify({ type: "note.creation.completed", data });
    const t0 = performance.now();
    return new Promise((resolve, reject) => {
      const req = httpRequest({ ...this.opts, headers: { ...this.opts.headers, "content-length": Buffer.byteLength(body) } }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString();
          if (res.statusCode !== 200) return reject(new Error(`${this.rt.name}: publish ${res.statusCode} ${text.slice(0, 300)}`));
          const r = JSON.parse(text);
          resolve({ seq: r.seq, count: r.broadcastCount, t0, t1: performance.now(), ms: performance.now() - t0 });
        });
      });
      req.on("error", reject);
      req.end(body);
    });
  }

  /** A request that never reaches a Durable Object: the HTTP + Miniflare floor. */
  noop() {
    return new Promise((resolve, reject) => {
      const req = httpRequest({ ...this.opts, method: "GET", path: "/noop", headers: {} }, (res) => {
        res.resume();
        res.on("end", resolve);
      });
      req.on("error", reject);
      req.end();
    });
  }

  close() { this.agent.destroy(); }
}
