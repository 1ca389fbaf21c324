// Test harness: runs the compiled worker (build/) in workerd through Miniflare, on a free
// loopback port, and gives tests real WebSocket clients and HTTP helpers.
import { Miniflare } from "miniflare";
import { createHmac, sign as cryptoSign } from "node:crypto";
import { fileURLToPath } from "node:url";
import path from "node:path";
import WebSocket from "ws";

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
export const JWT_SECRET = "test-secret-0123456789abcdef0123456789";
export const API_KEY = "test-key-1";
export const COMPATIBILITY_DATE = "2026-04-20";
/** The compiled worker; ROOMCAST_BUILD_DIR points elsewhere (e.g. a private copy of build/). */
export const BUILD_DIR = process.env.ROOMCAST_BUILD_DIR ?? path.join(ROOT, "build");

/** Settings every test worker gets unless it overrides them. */
export const BASE_BINDINGS = { JWT_SECRET, BROADCAST_API_KEYS: API_KEY };

/**
 * Starts the worker. `bindings` override BASE_BINDINGS (a value of `undefined` removes one);
 * `persist` is a directory for Durable Object storage that outlives this runtime; `port` a fixed
 * loopback port (default: a free one), e.g. to restart a runtime where its clients expect it.
 * `onStdout`, when given, gets the runtime's stdout stream (the worker's JSON log lines).
 * `workers` are further Miniflare worker options run next to roomcast in the same runtime (whose
 * worker is named "roomcast", for their `serviceBindings`); reach them with `mf.getWorker(name)`.
 */
export async function startWorker({ bindings = {}, persist, port = 0, onStdout, workers = [] } = {}) {
  const merged = { ...BASE_BINDINGS, ...bindings };
  for (const [k, v] of Object.entries(merged)) if (v === undefined) delete merged[k];
  const roomcast = {
    modules: true,
    scriptPath: path.join(BUILD_DIR, "index.js"),
    modulesRoot: BUILD_DIR,
    modulesRules: [{ type: "CompiledWasm", include: ["**/*.wasm"], fallthrough: true }],
    compatibilityDate: COMPATIBILITY_DATE,
    durableObjects: { ROOMS: { className: "NotificationRoom", useSQLite: true } },
    bindings: merged,
  };
  const mf = new Miniflare({
    // The first worker gets the runtime's HTTP port. Named only next to others: the name is part
    // of where persisted Durable Object storage lives (tests/fixtures/upgrade has unnamed).
    ...(workers.length ? { workers: [{ name: "roomcast", ...roomcast }, ...workers] } : roomcast),
    durableObjectsPersist: persist ?? false,
    host: "127.0.0.1",
    port,
    // The worker logs one JSON line per event; in test output that is noise (a fan-out test
    // prints thousands). ROOMCAST_TEST_LOGS=1 shows them. stderr (errors, panics) always shows.
    handleRuntimeStdio(stdout, stderr) {
      if (onStdout) onStdout(stdout);
      else if (process.env.ROOMCAST_TEST_LOGS) stdout.pipe(process.stdout);
      else stdout.resume();
      stderr.pipe(process.stderr);
    },
  });
  const url = await mf.ready;
  const base = url.href.replace(/\/$/, "");
  return new Worker(mf, base);
}

export class Worker {
  constructor(mf, base) {
    this.mf = mf;
    this.base = base;
    this.wsBase = base.replace(/^http/, "ws");
    this.sockets = new Set();
  }

  /** fetch against the worker; returns { status, headers, body (parsed JSON or text) }. */
  async request(method, pathname, { body, headers = {}, raw } = {}) {
    const init = { method, headers: { ...headers } };
    if (body !== undefined) {
      init.body = raw ? body : JSON.stringify(body);
      if (!raw && !Object.keys(headers).some((h) => h.toLowerCase() === "content-type")) {
        init.headers["content-type"] = "application/json";
      }
    }
    const res = await fetch(this.base + pathname, init);
    const text = await res.text();
    let parsed = text;
    try { parsed = JSON.parse(text); } catch {}
    return { status: res.status, headers: res.headers, body: parsed };
  }

  /** POST /rooms/{room}/broadcast with the test API key. */
  publish(room, message, headers = {}) {
    return this.request("POST", `/rooms/${room}/broadcast`, {
      body: message,
      headers: { authorization: `Bearer ${API_KEY}`, ...headers },
    });
  }

  history(room, query = "") {
    return this.request("GET", `/rooms/${room}/history${query}`, {
      headers: { authorization: `Bearer ${API_KEY}` },
    });
  }

  /**
   * Opens a WebSocket to a room and resolves once the `connected` frame arrived.
   * Rejects with { status, body } when the upgrade is refused.
   */
  async connect(room, { token = tokenFor("u1"), query = "", headers = {}, viaQuery = false } = {}) {
    const qs = new URLSearchParams(query);
    if (viaQuery && token) qs.set("token", token);
    const suffix = qs.toString() ? `?${qs}` : "";
    const h = { ...headers };
    if (!viaQuery && token) h.authorization = `Bearer ${token}`;
    const client = new Client(`${this.wsBase}/rooms/${room}/subscribe${suffix}`, h);
    this.sockets.add(client);
    await client.opened;
    return client;
  }

  async stop() {
    for (const c of this.sockets) c.terminate();
    await this.mf.dispose();
  }
}

/** A WebSocket client that queues every frame so tests can await the next one. */
export class Client {
  constructor(url, headers) {
    this.frames = [];
    this.waiters = [];
    this.closed = new Promise((resolve) => (this._onClose = resolve));
    this.ws = new WebSocket(url, { headers, maxPayload: 64 * 1024 * 1024 });
    this.opened = new Promise((resolve, reject) => {
      this.ws.on("unexpected-response", (_req, res) => {
        let data = "";
        res.on("data", (d) => (data += d));
        res.on("end", () => {
          let body = data;
          try { body = JSON.parse(data); } catch {}
          reject(Object.assign(new Error(`upgrade refused: ${res.statusCode}`), {
            status: res.statusCode, headers: res.headers, body,
          }));
        });
      });
      this.ws.on("error", reject);
      this.ws.on("open", async () => {
        try {
          this.hello = await this.next();
          resolve(this);
        } catch (e) { reject(e); }
      });
    });
    this.ws.on("message", (data, isBinary) => {
      const text = isBinary ? data : data.toString();
      let frame = text;
      try { frame = JSON.parse(text); } catch {}
      const w = this.waiters.shift();
      if (w) w.resolve(frame); else this.frames.push(frame);
    });
    this.ws.on("close", (code, reason) => {
      const info = { code, reason: reason.toString() };
      this.closeInfo = info;
      for (const w of this.waiters.splice(0)) w.reject(Object.assign(new Error(`closed ${code}`), info));
      this._onClose(info);
    });
  }

  /** The next frame (JSON-parsed when it is JSON), waiting up to `ms`. */
  next(ms = 5000) {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    if (this.closeInfo) return Promise.reject(Object.assign(new Error("closed"), this.closeInfo));
    return new Promise((resolve, reject) => {
      const w = { resolve: (f) => { clearTimeout(t); resolve(f); }, reject: (e) => { clearTimeout(t); reject(e); } };
      const t = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no frame within ${ms} ms`));
      }, ms);
      this.waiters.push(w);
    });
  }

  /** Frames until one satisfies `pred` (which is returned); the others are returned in `.skipped`. */
  async until(pred, ms = 5000) {
    const skipped = [];
    for (;;) {
      const f = await this.next(ms);
      if (pred(f)) return Object.assign(f, { skipped });
      skipped.push(f);
    }
  }

  /** Resolves true when no frame arrives within `ms` (for asserting silence after an event). */
  async quiet(ms = 300) {
    try { await this.next(ms); return false; } catch (e) { if (e.code) throw e; return true; }
  }

  send(frame) { this.ws.send(typeof frame === "string" ? frame : JSON.stringify(frame)); }
  close(code = 1000) { this.ws.close(code); return this.closed; }
  terminate() { this.ws.terminate(); }
}

const b64url = (buf) => Buffer.from(buf).toString("base64url");

/** An HS256 token signed with `secret` (default: the test secret). */
export function signHs256(claims, secret = JWT_SECRET, header = { alg: "HS256", typ: "JWT" }) {
  const head = b64url(JSON.stringify(header));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac("sha256", secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}

/** A valid token for `sub`, allowed in user_{sub} and `rooms`. */
export function tokenFor(sub, { rooms, ttl = 3600, ...extra } = {}) {
  const now = Math.floor(Date.now() / 1000);
  return signHs256({ sub, exp: now + ttl, iat: now, ...(rooms ? { rooms } : {}), ...extra });
}

/** A fresh, unique room name for one test. */
let counter = 0;
export function roomName(prefix = "t") {
  return `${prefix}_${process.pid}_${Date.now().toString(36)}_${counter++}`;
}

/**
 * A JWT signed with a node:crypto private key: `alg` is taken from `header` (RS256, ES256 or
 * EdDSA). ES256 signatures use the JWS (IEEE P1363, r||s) encoding.
 */
export function signJwt(claims, privateKey, header) {
  const head = b64url(JSON.stringify({ typ: "JWT", ...header }));
  const body = b64url(JSON.stringify(claims));
  const data = Buffer.from(`${head}.${body}`);
  let sig;
  if (header.alg === "RS256") sig = cryptoSign("sha256", data, privateKey);
  else if (header.alg === "ES256") sig = cryptoSign("sha256", data, { key: privateKey, dsaEncoding: "ieee-p1363" });
  else if (header.alg === "EdDSA" || header.alg === "Ed25519") sig = cryptoSign(null, data, privateKey);
  else throw new Error(`signJwt: unsupported alg ${header.alg}`);
  return `${head}.${body}.${b64url(sig)}`;
}
