// The machinery of the load tool (bench/load.mjs) and the soak (bench/soak.mjs): client tokens,
// a publisher over HTTP(S) that retries with its Idempotency-Key, and subscribers that check
// exactly-once, in-order delivery by seq, across reconnects with since=.
//
// A subscriber's notifications are counted against the seqs of its room: everything after the
// room's lastSeq at its first `connected` must arrive exactly once, in seq order. A seq skipped
// over is remembered as missing; if it arrives later it is out of order, if never it is lost. A
// repeat of a seq is a duplicate, unless it carries an attempt not seen before for that seq (a
// redelivery of a requiresAck notification, which the rules allow).
import WebSocket from "ws";
import { createHmac } from "node:crypto";
import http from "node:http";
import https from "node:https";
import { percentile } from "./stats.mjs";

/** Seqs remembered per subscriber for telling a redelivery from a duplicate. */
const WINDOW = 512;

/** An HS256 token: `sub`, `exp` (`ttl` seconds from now), `iat`, and `rooms` when given. */
export function mintToken(secret, { sub, ttl = 3600, rooms } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = b64({ alg: "HS256", typ: "JWT" });
  const body = b64({ sub, exp: now + ttl, iat: now, ...(rooms ? { rooms } : {}) });
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** ws(s):// for an http(s):// base URL (without a trailing slash). */
export function wsBaseOf(base) {
  const u = new URL(base);
  if (u.protocol !== "http:" && u.protocol !== "https:") throw new Error(`not an http(s) URL: ${base}`);
  return `${u.protocol === "https:" ? "wss:" : "ws:"}//${u.host}${u.pathname.replace(/\/$/, "")}`;
}

/** `{code, message}` of the protocol's error body, or the raw text. */
export function describeError(status, body) {
  const e = body && typeof body === "object" ? body.error : undefined;
  if (e?.code) return `HTTP ${status} ${e.code}: ${e.message}`;
  const text = typeof body === "string" ? body.trim().slice(0, 200) : JSON.stringify(body)?.slice(0, 200);
  return `HTTP ${status}${text ? `: ${text}` : ""}`;
}

/**
 * HTTP(S) requests to one roomcast over keep-alive connections, with the API key.
 * `idleMs` drops an idle connection before the server does: workerd closes one after 5 s idle,
 * and a request sent into a closing connection fails on the network without having been read.
 */
export class Publisher {
  constructor({ base, apiKey, maxSockets = 64, idleMs = 4000 }) {
    this.base = new URL(base);
    this.prefix = this.base.pathname.replace(/\/$/, "");
    this.apiKey = apiKey;
    this.mod = this.base.protocol === "https:" ? https : http;
    this.agent = new this.mod.Agent({ keepAlive: true, maxSockets, timeout: idleMs });
  }

  /**
   * Resolves `{status, body}` (body parsed when JSON); rejects on a network error. With
   * `auth: false` the API key is not sent (a request that authenticates otherwise).
   */
  request(method, pathname, body, headers = {}, { auth = true } = {}) {
    const text = body === undefined ? undefined : JSON.stringify(body);
    return new Promise((resolve, reject) => {
      const req = this.mod.request({
        protocol: this.base.protocol, hostname: this.base.hostname, port: this.base.port,
        path: this.prefix + pathname, method, agent: this.agent,
        headers: {
          ...(auth ? { authorization: `Bearer ${this.apiKey}` } : {}), ...headers,
          ...(text ? { "content-type": "application/json", "content-length": Buffer.byteLength(text) } : {}),
        },
      }, (res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          const t = Buffer.concat(chunks).toString();
          let parsed = t;
          try { parsed = JSON.parse(t); } catch {}
          resolve({ status: res.statusCode, body: parsed });
        });
        res.on("error", reject);
      });
      req.setTimeout(30_000, () => req.destroy(new Error("no answer within 30 s")));
      req.on("error", reject);
      req.end(text);
    });
  }

  /**
   * POST /rooms/{room}/broadcast with an Idempotency-Key, sent again with the same key while
   * the request fails on the network (a publisher's retry: the room answers the first result).
   * Resolves `{status, body}` of the answer; rejects after `attempts` network failures.
   */
  async publish(room, message, key, { attempts = 3, onRetry } = {}) {
    for (let attempt = 1; ; attempt++) {
      try {
        return await this.request("POST", `/rooms/${encodeURIComponent(room)}/broadcast`, message, { "idempotency-key": key });
      } catch (e) {
        if (attempt >= attempts) throw e;
        onRetry?.(e);
      }
    }
  }

  close() { this.agent.destroy(); }
}

/** Counters shared by every subscriber of a run. */
export class Tally {
  constructor() {
    this.frames = 0; // notification frames received
    this.delivered = 0; // first receipts of a seq
    this.duplicated = 0;
    this.outOfOrder = 0; // a missing seq that came after a later one
    this.redeliveries = 0;
    this.unrecovered = 0; // `connected` with recovered:false after since=
    this.drops = 0; // open sockets closed without our asking
    this.connectErrors = 0;
    this.latencies = []; // ms, publish → first receipt of live frames
    this.connectMs = []; // ms, socket opened → `connected`
    this.errors = [];
    this.t0 = performance.now();
  }

  /** Keeps the first 20 messages, with the run's time. */
  note(msg) {
    if (this.errors.length < 20) this.errors.push(`${((performance.now() - this.t0) / 1000).toFixed(1)} s: ${msg}`);
  }
}

/**
 * One socket into one room, reconnectable (with since= after its first connection). Publishes
 * carry `data.t` (performance.now() when sent) for the latency of live frames.
 * Callbacks: `onNotification(sub, frame, ws)` for every notification frame (e.g. to ack);
 * `onDelivered(sub, frame)` for each first receipt; `onClose(sub, code, reason)` when the
 * socket closed without `close()` having been called.
 */
export class Subscriber {
  constructor({ wsBase, room, token, tally, onNotification, onDelivered, onClose, label = room }) {
    Object.assign(this, { wsBase, room, token, tally, onNotification, onDelivered, onClose, label });
    this.ws = null;
    this.state = "idle"; // idle | connecting | open | away | closed
    this.firstSeq = null; // the room's lastSeq at the first `connected`: everything after is due
    this.lastSeq = null; // the highest seq received
    this.missing = new Set(); // seqs skipped over, not (yet) received
    this.seen = new Map(); // seq -> bitmask of attempts received, for the last WINDOW seqs
    this.openedAt = 0;
    this.connectedAt = 0;
  }

  /** Seqs up to `roomLastSeq` this subscriber has not received. */
  lost(roomLastSeq) {
    if (this.lastSeq === null) return Math.max(0, roomLastSeq);
    return this.missing.size + Math.max(0, roomLastSeq - this.lastSeq);
  }

  /**
   * Opens the socket (batch=1; since= once it has connected before). Resolves `{ok:true}` at
   * `connected`, or `{ok:false, status?, message}` when refused or failed; never rejects.
   */
  connect({ handshakeTimeout = 30_000 } = {}) {
    this.state = "connecting";
    const qs = new URLSearchParams({ token: this.token, batch: "1" });
    if (this.lastSeq !== null) qs.set("since", String(this.lastSeq));
    this.openedAt = performance.now();
    const ws = new WebSocket(`${this.wsBase}/rooms/${encodeURIComponent(this.room)}/subscribe?${qs}`, {
      perMessageDeflate: false, handshakeTimeout, maxPayload: 64 * 1024 * 1024,
    });
    this.ws = ws;
    return new Promise((resolve) => {
      let settled = false;
      const settle = (r) => { if (!settled) { settled = true; resolve(r); } };
      ws.on("unexpected-response", (_req, res) => {
        const chunks = [];
        res.on("data", (c) => chunks.push(c));
        res.on("end", () => {
          let body = Buffer.concat(chunks).toString();
          try { body = JSON.parse(body); } catch {}
          this.tally.connectErrors++;
          settle({ ok: false, status: res.statusCode, message: `upgrade refused: ${describeError(res.statusCode, body)}` });
          ws.terminate();
        });
      });
      ws.on("error", (e) => {
        if (this.state !== "connecting") return;
        this.tally.connectErrors++;
        this.tally.note(`connect ${this.label}: ${e.message}`);
        settle({ ok: false, message: e.message });
      });
      ws.on("message", (data) => {
        if (this.ws !== ws) return;
        let f;
        try { f = JSON.parse(data.toString()); } catch { return; } // text "pong"
        if (this.receive(f, ws)) settle({ ok: true });
      });
      ws.on("close", (code, reason) => {
        settle({ ok: false, message: `closed ${code} ${reason} before connected` });
        if (this.ws !== ws) return;
        this.ws = null;
        if (this.state === "closed") return;
        if (this.state === "open") this.tally.drops++;
        this.state = "away";
        this.onClose?.(this, code, reason.toString());
      });
    });
  }

  /** Handles one parsed frame (a batch frame by frame, in order); true for `connected`. */
  receive(f, ws) {
    if (f.type === "connected") {
      this.state = "open";
      this.connectedAt = performance.now();
      this.tally.connectMs.push(this.connectedAt - this.openedAt);
      if (this.firstSeq === null) this.firstSeq = this.lastSeq = f.lastSeq;
      if (f.recovered === false) {
        this.tally.unrecovered++;
        this.tally.note(`${this.label}: recovered:false after since=${this.lastSeq}`);
      }
      return true;
    }
    if (f.type === "batch" && Array.isArray(f.frames)) for (const g of f.frames) this.receive(g, ws);
    else this.frame(f, ws);
    return false;
  }

  frame(f, ws) {
    if (f.type === "error") { this.tally.note(`${this.label}: error frame ${f.code}: ${f.message}`); return; }
    if (typeof f.seq !== "number") return;
    const t = this.tally;
    t.frames++;
    this.onNotification?.(this, f, ws);
    // Published before this subscriber first connected: not due to it.
    if (this.firstSeq === null || f.seq <= this.firstSeq) return;
    const bit = 2 ** Math.min(f.attempt ?? 1, 30);
    const mask = this.seen.get(f.seq);
    if (mask !== undefined) {
      if (mask & bit || (f.attempt ?? 1) === 1) {
        t.duplicated++;
        t.note(`${this.label}: seq ${f.seq} attempt ${f.attempt} again (last ${this.lastSeq})`);
      } else {
        t.redeliveries++;
        this.seen.set(f.seq, mask | bit);
      }
      return;
    }
    if (f.seq > this.lastSeq) {
      if (f.seq > this.lastSeq + 1) t.note(`${this.label}: got seq ${f.seq} after ${this.lastSeq}`);
      for (let q = this.lastSeq + 1; q < f.seq; q++) this.missing.add(q);
      this.lastSeq = f.seq;
    } else if (this.missing.delete(f.seq)) {
      t.outOfOrder++;
      t.note(`${this.label}: seq ${f.seq} after ${this.lastSeq}`);
    } else {
      // Below the window: every seq there was received or is missing, so this one came before.
      t.duplicated++;
      t.note(`${this.label}: seq ${f.seq} again (last ${this.lastSeq})`);
      return;
    }
    t.delivered++;
    this.seen.set(f.seq, bit);
    if (this.seen.size > WINDOW * 2) for (const k of this.seen.keys()) { if (k > this.lastSeq - WINDOW) break; this.seen.delete(k); }
    // Live (published after this connection was made), not replayed.
    if ((f.attempt ?? 1) === 1 && typeof f.data?.t === "number" && f.data.t >= this.connectedAt) t.latencies.push(performance.now() - f.data.t);
    this.onDelivered?.(this, f);
  }

  /** Closes on purpose (1000), or cuts the connection (`terminate`); no onClose follows. */
  close({ terminate = false } = {}) {
    this.state = "closed";
    const ws = this.ws;
    this.ws = null;
    if (!ws) return;
    if (terminate || ws.readyState !== WebSocket.OPEN) ws.terminate(); else ws.close(1000);
  }

  /** Marks the socket away and drops it (politely or not) as a client losing it would; no onClose. */
  drop({ terminate = false } = {}) {
    this.close({ terminate });
    this.state = "away";
  }
}

/**
 * Runs `fn(item)` over `items` with at most `limit` at a time; resolves with the results in
 * order. `fn` must not reject (it reports its own failures).
 */
export async function mapLimit(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => { while (next < items.length) { const i = next++; out[i] = await fn(items[i], i); } };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

/** `{p50, p99, max}` (or the percentiles asked for) of `xs`, rounded to 0.1 ms; null when empty. */
export function summary(xs, ps = { p50: 50, p99: 99, max: 100 }) {
  const out = {};
  for (const [k, p] of Object.entries(ps)) out[k] = xs.length ? Math.round(percentile(xs, p) * 10) / 10 : null;
  return out;
}
