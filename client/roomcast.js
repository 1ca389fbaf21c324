// roomcast client: realtime notifications over WebSockets, for browsers, Node, Deno and Workers.
//
// One self-contained ES module with no dependencies (the server serves this very file at
// /client/roomcast.js). Types: roomcast.d.ts next to it. Guide: docs/client.md.
//
//   import { RealtimeClient } from "/client/roomcast.js";
//   const client = new RealtimeClient({ url: "https://rt.example.com", rooms: ["user_42"],
//                                       getToken: () => fetchMyToken() });
//   client.on("notification", async (n) => { await show(n); }); // acked after this resolves
//   client.on("recovery", (r) => { if (!r.recovered) refetchEverything(); });

/** Close codes the server uses (see docs/protocol.md). */
export const CloseCode = Object.freeze({
  /** Authentication failed, or the token expired while connected. */
  AUTH: 4001,
  /** Rate limit exceeded persistently. */
  RATE_LIMITED: 4002,
  /** Invalid frames persistently: reconnecting would only repeat the mistake. */
  INVALID_FRAMES: 4003,
  /** Idle: the server heard nothing from the connection for IDLE_TIMEOUT_SECONDS. Not an error. */
  IDLE: 4008,
  /** A frame larger than MAX_MESSAGE_BYTES. */
  TOO_BIG: 1009,
});

/** Default options of {@link RealtimeClient}. */
export const DEFAULTS = Object.freeze({
  initialDelayMs: 1000,
  maxDelayMs: 30000,
  multiplier: 2,
  stableAfterMs: 10000,
  rateLimitedDelayMs: 30000,
  maxReconnectAttempts: Infinity,
  pingIntervalMs: 30000,
  pongTimeoutMs: 10000,
  connectTimeoutMs: 15000,
  dedupeSize: 1000,
  ackDelayMs: 20,
  autoAck: true,
  clientEventRate: 20,
  syncOnVisible: true,
});

const ROOM_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const OPEN = 1;
/** Most ids one ack frame may carry (server limit). */
const MAX_ACK_IDS = 256;
const CONTROL_FRAMES = new Set(["connected", "pong", "subscribed", "error", "event", "synced"]);
/** The client's own events; any other name given to `on` is a notification type or event name. */
const EVENTS = new Set([
  "notification", "state", "connected", "disconnected", "reconnecting", "recovery", "subscribed",
  "ack", "duplicate", "error", "status", "presence", "joined", "left", "event", "synced",
]);
/** A notification type or client event name (the server's rule). */
const TYPE = /^[A-Za-z0-9_.:-]{1,128}$/;
/** The server's windows: at most 3 `presence.set` and CLIENT_EVENT_RATE `emit` per 10 s. */
const PRESENCE_SET_RATE = 3;
const RATE_WINDOW_MS = 10000;
/** Sent this much later than the window strictly needs, so network jitter cannot make the
 * server see two frames closer together than they were sent. */
const RATE_MARGIN_MS = 500;
/** How many ephemeral notification ids the client remembers to drop the same publish arriving
 * through a second room. */
const EPHEMERAL_IDS = 256;
const EMPTY_PRESENCE = Object.freeze(new Map());

/**
 * Whether a type pattern (`*`, `note.*`, or an exact type) matches a notification type or event
 * name, as the server matches its filters: `note.*` matches `note.a` and `note.a.b`, not `note`
 * or `notes.x`.
 * @param {string} pattern
 * @param {string} type
 */
export function matchesType(pattern, type) {
  if (pattern === "*") return true;
  if (pattern.endsWith(".*")) {
    const prefix = pattern.slice(0, -1);
    return type.length > prefix.length && type.startsWith(prefix);
  }
  return pattern === type;
}

/**
 * Whether what a listener added by name (`on("typing.*")`) got is a client event rather than a
 * notification (in TypeScript, it narrows the type).
 * @param {unknown} m
 * @returns {boolean}
 */
export function isClientEvent(m) {
  return Boolean(m) && m.type === "event" && typeof m.event === "string";
}

function isPattern(p) {
  return typeof p === "string" && (p === "*" || TYPE.test(p.endsWith(".*") ? p.slice(0, -2) : p));
}

/**
 * Delay before reconnect attempt number `attempt` (1-based): exponential backoff with full
 * jitter, i.e. a uniformly random value in [0, min(maxDelayMs, initialDelayMs * multiplier^(attempt-1))).
 * @param {number} attempt
 * @param {{initialDelayMs?: number, maxDelayMs?: number, multiplier?: number}} [options]
 * @param {() => number} [random] a source of numbers in [0, 1)
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initialDelayMs ?? DEFAULTS.initialDelayMs;
  const max = options.maxDelayMs ?? DEFAULTS.maxDelayMs;
  const multiplier = options.multiplier ?? DEFAULTS.multiplier;
  const cap = Math.min(max, initial * Math.pow(multiplier, Math.max(0, attempt - 1)));
  return Math.floor(random() * cap);
}

/** An error the client reports through its `error` event. `fatal` ones stopped a room. */
export class RealtimeError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {{roomId?: string, fatal?: boolean, cause?: unknown, closeCode?: number, status?: number, serverCode?: string}} [details]
   */
  constructor(code, message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "RealtimeError";
    this.code = code;
    this.roomId = details.roomId;
    this.fatal = details.fatal ?? false;
    this.closeCode = details.closeCode;
    /** The HTTP status the subscribe URL answered when the server refused a connection. */
    this.status = details.status;
    /** The server's error code with that answer (e.g. "forbidden", "origin_not_allowed"). */
    this.serverCode = details.serverCode;
  }
}

/** A tiny typed event emitter: `on` returns the function that unsubscribes. */
export class Emitter {
  #handlers = new Map();

  /**
   * @param {string} event
   * @param {(...args: any[]) => unknown} fn
   * @returns {() => void} unsubscribe
   */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    let set = this.#handlers.get(event);
    if (!set) this.#handlers.set(event, (set = new Set()));
    // Wrapped so the same function can be added twice and removed once per `on`.
    const entry = { fn };
    set.add(entry);
    return () => set.delete(entry);
  }

  /**
   * Like `on`, for one call.
   * @param {string} event
   * @param {(...args: any[]) => unknown} fn
   */
  once(event, fn) {
    const off = this.on(event, (...args) => {
      off();
      return fn(...args);
    });
    return off;
  }

  /**
   * Calls every listener; returns what they returned. A listener that throws is reported
   * through `error` (or rethrown asynchronously when nobody listens to `error`).
   * @param {string} event
   * @param {...unknown} args
   * @returns {unknown[]}
   */
  emit(event, ...args) {
    return this.#fire(event, args);
  }

  // Not through `emit`: a subclass may give `emit` another meaning (RealtimeClient sends a
  // client event with it).
  #fire(event, args) {
    const set = this.#handlers.get(event);
    if (!set || set.size === 0) return [];
    const out = [];
    for (const { fn } of [...set]) {
      try {
        out.push(fn(...args));
      } catch (err) {
        if (event === "error" || !this.#handlers.get("error")?.size) {
          queueMicrotask(() => { throw err; });
        } else {
          this.#fire("error", [err]);
        }
      }
    }
    return out;
  }

  /**
   * The listeners of an event, in the order they were added.
   * @param {string} event
   * @returns {Array<(...args: any[]) => unknown>}
   */
  listeners(event) {
    return [...(this.#handlers.get(event) ?? [])].map((e) => e.fn);
  }

  /** @param {string} event */
  listenerCount(event) {
    return this.#handlers.get(event)?.size ?? 0;
  }
}

/** Reads a JWT's `exp` (seconds) without verifying it; undefined when it has none. */
function tokenExp(token) {
  try {
    const part = token.split(".")[1];
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const json = JSON.parse(atob(b64 + "===".slice((b64.length + 3) % 4)));
    return typeof json.exp === "number" ? json.exp : undefined;
  } catch {
    return undefined;
  }
}

/** The WebSocket base (ws: or wss:) for an http(s) or ws(s) URL, without a trailing slash. */
function wsBase(url) {
  const u = String(url).replace(/\/+$/, "");
  if (/^https:/i.test(u)) return "wss:" + u.slice(6);
  if (/^http:/i.test(u)) return "ws:" + u.slice(5);
  return u;
}

/** The http(s) base for an http(s) or ws(s) URL, without a trailing slash (for the probe). */
function httpBase(url) {
  const u = String(url).replace(/\/+$/, "");
  if (/^wss:/i.test(u)) return "https:" + u.slice(4);
  if (/^ws:/i.test(u)) return "http:" + u.slice(3);
  return u;
}

/** Retry-After (delta seconds or an HTTP date) in ms; undefined when absent or unreadable. */
function retryAfterMs(value) {
  if (value == null || value === "") return undefined;
  if (/^\s*\d+\s*$/.test(value)) return Number(value) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/**
 * What the client does after each refusal or close: the one place that decides it (the
 * connection only carries it out). Checked case by case against tests/shared/reconnect-cases.json,
 * which the Python client's `decide` is checked against too.
 *
 * `given.kind`: "close" (the socket opened, then closed with `code`; `wasConnected`: the
 * `connected` frame had arrived), "refused" (the probe answered HTTP `status`; 0 = no answer) or
 * "token" (getToken answered after a refusal: `reason` is what it was asked for, `sameToken`
 * whether it returned the token just refused). Every kind also takes `hasGetToken`,
 * `authRetried` (a fresh token was already tried in this streak of refusals), `everConnected`,
 * `attempt` (attempts made so far in this streak) and `maxAttempts`.
 *
 * The answer: `{action: "reconnect", delay, tokenReason}` (`delay`: "none", "backoff",
 * "backoff+rate_limited" or "retry_after"; `tokenReason`: what getToken is asked for next),
 * `{action: "probe"}` (ask the subscribe URL without Upgrade what the upgrade got, then decide
 * on its status), `{action: "use_token"}`, or `{action: "fail", error}` (stop the room for good).
 * @param {import("./roomcast.d.ts").DecisionInput} given
 * @returns {import("./roomcast.d.ts").Decision}
 */
export function decide(given) {
  const { kind, hasGetToken, authRetried, everConnected, attempt, maxAttempts } = given;
  const exhausted = attempt >= maxAttempts;
  const reconnect = (delay, tokenReason = everConnected ? "reconnect" : "connect") => ({ action: "reconnect", delay, tokenReason });
  const fail = (error) => ({ action: "fail", error });
  switch (kind) {
    case "close": {
      const { code, wasConnected } = given;
      if (code === CloseCode.INVALID_FRAMES) return fail("invalid_frames");
      if (code === CloseCode.AUTH && !hasGetToken) return fail("token_expired");
      // A quiet connection, not a failure: back at once, whatever the attempt count says.
      if (code === CloseCode.IDLE) return reconnect("none");
      // Closed before `connected`: refused or never reached. A browser cannot tell which (it
      // reports 1006 for both); the probe can.
      if (!wasConnected) return { action: "probe" };
      if (exhausted) return fail("max_reconnect_attempts");
      if (code === CloseCode.AUTH) return reconnect("backoff", "expired");
      if (code === CloseCode.RATE_LIMITED) return reconnect("backoff+rate_limited");
      return reconnect("backoff");
    }
    case "refused": {
      const { status } = given;
      if (status === 401) {
        // Once per streak: a cached token may just have expired.
        return hasGetToken && !authRetried && !exhausted ? reconnect("none", "unauthorized") : fail("unauthorized");
      }
      if (status === 403) return fail("forbidden");
      // The request itself is wrong (bad room id, query, route): repeating it cannot help.
      // 408, 426 ("it would be accepted now") and 429 pass with time.
      if (status >= 400 && status < 500 && status !== 408 && status !== 426 && status !== 429) return fail("refused");
      if (exhausted) return fail("max_reconnect_attempts");
      return reconnect(status === 429 ? "retry_after" : "backoff");
    }
    case "token": {
      const { reason, sameToken } = given;
      // The token just refused, again: connecting with it would only be refused again.
      if (sameToken && reason === "unauthorized") return fail("unauthorized");
      if (sameToken && reason === "expired") return fail("token_expired");
      return { action: "use_token" };
    }
    default:
      throw new TypeError(`decide: unknown kind ${JSON.stringify(kind)} (close, refused or token)`);
  }
}

/** A CLIENT_EVENT_RATES window, as the server reads it: `500ms`, `5s`, `1m`. */
const DURATION = /^(\d+)(ms|s|m)$/;
const UNIT_MS = { ms: 1, s: 1000, m: 60000 };

/**
 * The `eventRates` option as a list of {pattern, limit, windowMs}: the server's
 * CLIENT_EVENT_RATES text (`typing.*=5/5s,cursor.move=30/1s`) or an object
 * (`{"typing.*": [5, 5000]}`, a limit and a window in ms).
 */
function parseEventRates(rates) {
  if (rates == null) return [];
  const bad = (what) => new TypeError(`eventRates: ${what} (e.g. "typing.*=5/5s,cursor.move=30/1s" or {"typing.*": [5, 5000]})`);
  let entries;
  if (typeof rates === "string") {
    entries = rates.split(",").map((s) => s.trim()).filter(Boolean).map((item) => {
      const m = /^([^=\s]+)\s*=\s*(\d+)\s*\/\s*(\S+)$/.exec(item);
      const d = m && DURATION.exec(m[3]);
      if (!m || !d) throw bad(`cannot read ${JSON.stringify(item)}: write pattern=count/window`);
      return [m[1], [Number(m[2]), Number(d[1]) * UNIT_MS[d[2]]]];
    });
  } else if (isPlainObject(rates)) {
    entries = Object.entries(rates);
  } else {
    throw bad("a string or an object");
  }
  return entries.map(([pattern, rate]) => {
    if (!isPattern(pattern)) throw bad(`${JSON.stringify(pattern)} is not an event name or pattern`);
    const [limit, windowMs] = Array.isArray(rate) ? rate : [];
    if (!Number.isInteger(limit) || limit < 1 || !(windowMs > 0)) {
      throw bad(`the rate of ${JSON.stringify(pattern)} must be [count, windowMs] with a whole count and a window above 0`);
    }
    return { pattern, limit, windowMs };
  });
}

/** The `debug` option as a function (message, details), or null when off. */
function makeLogger(debug) {
  if (typeof debug === "function") return debug;
  if (debug === true) return (message, details) => console.debug(`[roomcast] ${message}`, details);
  if (debug === undefined || debug === false) return null;
  throw new TypeError("`debug` is true, false, or a function (message, details)");
}

/** How many left rooms' positions a client remembers for a later join. */
const MAX_POSITIONS = 256;

/**
 * @typedef {'disconnected'|'connecting'|'connected'|'reconnecting'|'error'} ConnectionState
 */

/**
 * What a RoomConnection needs of its client: the options and runtime pieces, the client-wide
 * state (closed, the type filter), and where the room hands over what spans rooms (events to
 * fire, notifications to dedupe and dispatch, client events to route by name).
 * @typedef {object} Host
 * @property {Record<string, any>} opts
 * @property {new (url: string) => any} WS
 * @property {((url: string, init: object) => Promise<any>) | null} fetch
 * @property {() => number} random
 * @property {Array<{pattern: string, limit: number, windowMs: number}>} rates
 * @property {((message: string, details: object) => void) | null} log
 * @property {boolean} closed
 * @property {string[]} types
 * @property {(event: string, ...args: unknown[]) => void} fire
 * @property {() => void} changed
 * @property {(room: RoomConnection, n: object) => void} notification
 * @property {(room: RoomConnection, n: object) => void} ephemeral
 * @property {(room: RoomConnection, e: object) => void} event
 */

/**
 * One room's WebSocket: opens it with a token, keeps it alive, resumes after drops, asks the
 * probe why a connection was refused and does what `decide` says; keeps the room's presence
 * map, pending sync, acks and the server's rate windows. What spans rooms (dedupe, listeners,
 * the client's overall state) is the client's, reached through the host.
 */
class RoomConnection {
  /** @type {Host} */
  #host;
  /** The state setPresence asked for (JSON text), the one sent on this connection, and when. */
  #presenceWanted = null;
  #presenceSent = null;
  #presenceTimes = [];
  /** When this connection sent its recent client events: all of them, and per eventRates pattern. */
  #eventTimes = [];
  #rateTimes = new Map();
  /** The pending sync(): {since, promise, resolve}. */
  #pendingSync = null;
  #resumeFrom = null;
  #token = null;
  #connectedAt = 0;
  #connectionId = null;
  #timers = { reconnect: null, ping: null, pong: null, connect: null, ack: null, presence: null };
  #ackQueue = new Set();
  /** Each notification's hand-over waits for the previous one's: order per room. */
  #chain = Promise.resolve();
  /** What the probe last said: {status, serverCode, serverMessage}. */
  #refusal = null;
  #authRetried = false;
  #probeUrl = null;
  /** Bumped whenever the room starts over: answers for an older attempt are ignored. */
  #gen = 0;

  /**
   * @param {string} id
   * @param {number | undefined} since a seq ≥ 0 to resume after
   * @param {boolean} watchPresence
   * @param {Host} host
   */
  constructor(id, since, watchPresence, host) {
    this.id = id;
    this.#host = host;
    this.watchPresence = Boolean(watchPresence);
    /** userId -> PresenceUser; null until the first `connected` of a watching room. */
    this.presence = null;
    this.presenceCount = 0;
    /** idle | connecting | reconnecting | connected | error | closed */
    this.state = "idle";
    this.everConnected = false;
    this.ws = null;
    this.attempt = 0;
    this.lastSeq = Number.isSafeInteger(since) && since >= 0 ? since : null;
    this.lastConnectedAt = null;
    this.error = null;
    /** What the client last reported in `status` for this room. */
    this.statusKey = null;
  }

  /** The state as the client reports it. @returns {ConnectionState} */
  get publicState() {
    switch (this.state) {
      case "connecting":
      case "reconnecting":
      case "connected":
      case "error":
        return this.state;
      default:
        return "disconnected";
    }
  }

  /** Connected, with a socket that can send. */
  get #live() {
    return this.state === "connected" && this.ws?.readyState === OPEN;
  }

  #log(message, details = {}) {
    this.#host.log?.(`room ${this.id}: ${message}`, { roomId: this.id, ...details });
  }

  /** Queues work behind the room's earlier notifications. */
  enqueue(fn) {
    this.#chain = this.#chain.then(fn);
  }

  /** Sends a frame's text if the room is connected; whether it was sent. */
  send(text) {
    if (!this.#live) return false;
    this.ws.send(text);
    return true;
  }

  /** What `decide` is given about this room, plus what happened. */
  #given(kind, what) {
    const o = this.#host.opts;
    return {
      kind, ...what,
      hasGetToken: typeof o.getToken === "function",
      authRetried: this.#authRetried,
      everConnected: this.everConnected,
      attempt: this.attempt,
      maxAttempts: o.maxReconnectAttempts,
    };
  }

  // ---- connection lifecycle ----

  /** Opens a socket (after asking for a token); `reason` is what getToken is told. */
  async open(reason) {
    const host = this.#host;
    const o = host.opts;
    const gen = ++this.#gen;
    this.#clearTimers();
    this.error = null;
    this.state = this.everConnected ? "reconnecting" : "connecting";
    host.changed();
    let token;
    try {
      token = typeof o.getToken === "function"
        ? await o.getToken({ roomId: this.id, reason })
        : await o.token;
    } catch (err) {
      if (gen !== this.#gen || host.closed) return;
      host.fire("error", new RealtimeError("token_error", `getToken failed: ${err?.message ?? err}`, { roomId: this.id, cause: err }));
      if (reason === "expired") return this.#fail("token_expired", "the token expired and getToken could not supply a new one", { closeCode: CloseCode.AUTH });
      if (reason === "unauthorized") return this.#failUnauthorized("getToken failed after the server refused the token");
      return this.#noAnswer();
    }
    if (gen !== this.#gen || host.closed) return;
    if (typeof token !== "string" || token === "") {
      return this.#fail("no_token", "no token: getToken returned nothing");
    }
    const verdict = decide(this.#given("token", { reason, sameToken: token === this.#token }));
    if (verdict.action === "fail") {
      return verdict.error === "unauthorized"
        ? this.#failUnauthorized("getToken returned the same token again")
        : this.#fail(verdict.error, "the server closed the connection for the token (4001) and no new token is available", { closeCode: CloseCode.AUTH });
    }
    if (typeof o.getToken !== "function") {
      const exp = tokenExp(token);
      if (exp !== undefined && exp * 1000 <= Date.now() && reason !== "connect") {
        return this.#fail("token_expired", "the token has expired; pass getToken to refresh it", { closeCode: CloseCode.AUTH });
      }
    }
    this.#token = token;

    const params = new URLSearchParams({ token });
    this.#resumeFrom = this.lastSeq;
    if (this.lastSeq !== null) params.set("since", String(this.lastSeq));
    if (host.types.length) params.set("types", host.types.join(","));
    if (this.watchPresence) params.set("presence", "1");
    // Frames queued behind others may come several to a message; unpacked in #onMessage.
    params.set("batch", "1");
    const base = typeof o.url === "function" ? await o.url({ roomId: this.id }) : (o.url ?? globalThis.location.origin);
    if (gen !== this.#gen || host.closed) return;
    const path = `/rooms/${encodeURIComponent(this.id)}/subscribe?${params}`;
    const url = wsBase(base) + path;
    this.#probeUrl = httpBase(base) + path;
    const since = this.#resumeFrom;
    this.#log(since === null ? `connecting (${reason})` : `connecting (${reason}), resuming since ${since}`,
      { reason, since, attempt: this.attempt });

    let ws;
    try {
      ws = new host.WS(url);
    } catch (err) {
      host.fire("error", new RealtimeError("connect_failed", `could not open a WebSocket: ${err?.message ?? err}`, { roomId: this.id, cause: err }));
      return this.#noAnswer();
    }
    this.ws = ws;
    ws.onopen = () => { if (ws === this.ws) this.#log("socket opened"); };
    ws.onmessage = (ev) => this.#onMessage(ws, ev.data);
    ws.onclose = (ev) => this.#onClose(ws, ev.code, ev.reason ?? "");
    ws.onerror = () => { /* a close event follows */ };
    this.#timers.connect = setTimeout(() => this.#dead(ws, "connect timeout"), o.connectTimeoutMs);
  }

  #onHello(ws, hello) {
    const host = this.#host;
    clearTimeout(this.#timers.connect);
    this.#timers.connect = null;
    const since = this.#resumeFrom;
    this.state = "connected";
    this.everConnected = true;
    this.#connectedAt = Date.now();
    this.lastConnectedAt = this.#connectedAt;
    this.#authRetried = false;
    this.#connectionId = hello.connectionId ?? null;
    const serverSeq = typeof hello.lastSeq === "number" ? hello.lastSeq : null;
    // Without a known seq, start from the room's; a room whose log is behind ours (storage
    // reset) restarts ours.
    if (serverSeq !== null && (this.lastSeq === null || serverSeq < this.lastSeq)) {
      this.lastSeq = serverSeq;
    }
    this.#startKeepalive(ws);
    // A new connection: the server's windows start again, and it has not seen our state.
    this.#presenceTimes = [];
    this.#presenceSent = null;
    this.#eventTimes = [];
    this.#rateTimes.clear();
    const resumed = since !== null;
    const recovered = resumed ? hello.recovered !== false : undefined;
    this.#log(`connected (lastSeq ${serverSeq}${resumed ? `, recovered ${recovered}` : ""})`,
      { connectionId: this.#connectionId, lastSeq: serverSeq, resumed, ...(resumed ? { since, recovered } : {}) });
    // Before `connected`, so its listeners read the new map.
    if (this.watchPresence) this.#presenceSnapshot(hello);
    host.changed();
    host.fire("connected", {
      roomId: this.id, connectionId: this.#connectionId, lastSeq: serverSeq, resumed,
      ...(resumed ? { recovered } : {}),
    });
    if (resumed) host.fire("recovery", { roomId: this.id, since, lastSeq: serverSeq, recovered });
    this.flushAcks();
    this.#flushPresence();
  }

  #onMessage(ws, data) {
    if (ws !== this.ws) return;
    // Any frame proves the connection alive.
    clearTimeout(this.#timers.pong);
    this.#timers.pong = null;
    if (typeof data !== "string" || data === "pong") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.type === "batch" && Array.isArray(frame.frames) && frame.id === undefined) {
      // Frames the server queued behind others, in order: each handled as if it came alone.
      for (const inner of frame.frames) {
        if (ws !== this.ws) return; // one of them ended the connection
        if (inner && typeof inner === "object") this.#onFrame(ws, inner);
      }
      return;
    }
    this.#onFrame(ws, frame);
  }

  #onFrame(ws, frame) {
    const host = this.#host;
    if (typeof frame.type !== "string") return;
    if (CONTROL_FRAMES.has(frame.type) && typeof frame.seq !== "number") {
      switch (frame.type) {
        case "connected":
          return this.#onHello(ws, frame);
        case "subscribed":
          return void host.fire("subscribed", { roomId: this.id, types: frame.data?.types ?? [] });
        case "error":
          return void host.fire("error", new RealtimeError(frame.code ?? "server_error", frame.message ?? "error frame from the server", { roomId: this.id, serverCode: frame.code }));
        case "event":
          return typeof frame.event === "string" ? host.event(this, frame) : undefined;
        case "synced":
          return this.#onSynced(frame);
        default:
          return;
      }
    }
    // Presence frames: reserved types, no id or seq.
    if (frame.type.startsWith("presence.") && typeof frame.userId === "string") return this.#onPresence(frame);
    if (typeof frame.id !== "string") return;
    if (typeof frame.seq === "number") {
      if (this.lastSeq === null || frame.seq > this.lastSeq) this.lastSeq = frame.seq;
      host.notification(this, frame);
    } else if (frame.ephemeral === true) {
      host.ephemeral(this, frame);
    }
  }

  #onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    const host = this.#host;
    const wasConnected = this.state === "connected";
    this.ws = null;
    this.#clearTimers({ keepAck: true });
    this.#endSync();
    if (host.closed || this.state === "closed") return;
    this.#log(`closed: ${code}${reason ? ` ${reason}` : ""}`, { code, reason, wasConnected });
    host.fire("disconnected", { roomId: this.id, code, reason, wasConnected });
    if (wasConnected && Date.now() - this.#connectedAt >= host.opts.stableAfterMs) this.attempt = 0;
    this.#follow(decide(this.#given("close", { code, wasConnected })), { code, reason });
  }

  /**
   * The socket closed before `connected`: asks the subscribe URL without Upgrade what the
   * upgrade got, and decides on its answer.
   */
  async #probe(code) {
    const host = this.#host;
    const gen = this.#gen;
    const url = this.#probeUrl;
    // Nothing to ask with: as a connection that got no answer.
    if (!host.fetch || !url) return this.#follow(decide(this.#given("refused", { status: 0 })), { code });
    let status = 0;
    let retryAfter;
    let body;
    const ctrl = typeof AbortController === "function" ? new AbortController() : undefined;
    const timer = ctrl ? setTimeout(() => ctrl.abort(), host.opts.connectTimeoutMs) : undefined;
    try {
      // A simple GET (the token is in the query): no CORS preflight.
      const res = await host.fetch(url, { method: "GET", credentials: "omit", signal: ctrl?.signal });
      status = res.status;
      retryAfter = res.headers?.get?.("retry-after") ?? undefined;
      const text = await res.text();
      try { body = JSON.parse(text); } catch { /* not JSON */ }
    } catch {
      // No answer (network, CORS, timeout): like any other drop.
    } finally {
      clearTimeout(timer);
    }
    if (gen !== this.#gen || host.closed || this.state === "closed") return;
    this.#refusal = { status, serverCode: body?.error?.code, serverMessage: body?.error?.message };
    const waitMs = status === 429 ? retryAfterMs(retryAfter) : undefined;
    this.#log(`the probe answered ${status === 0 ? "nothing" : this.#says(status)}`,
      { status, serverCode: this.#refusal.serverCode, ...(waitMs !== undefined ? { retryAfterMs: waitMs } : {}) });
    this.#follow(decide(this.#given("refused", { status })), { code, status, retryAfterMs: waitMs });
  }

  /** No socket came of it (getToken threw, the WebSocket constructor threw): as no answer. */
  #noAnswer() {
    this.#follow(decide(this.#given("refused", { status: 0 })), {});
  }

  /** `401 unauthorized: <the server's message>` from what the probe said. */
  #says(status) {
    const r = this.#refusal ?? {};
    return `${status}${r.serverCode ? ` ${r.serverCode}` : ""}${r.serverMessage ? `: ${r.serverMessage}` : ""}`;
  }

  /**
   * Carries out a decision. `ctx`: the close `code` and `reason`, or the probe's `status` and
   * `retryAfterMs`.
   */
  #follow(verdict, ctx) {
    const { code, reason, status } = ctx;
    switch (verdict.action) {
      case "probe":
        return void this.#probe(code);
      case "reconnect":
        return this.#reconnect(verdict, ctx);
      case "fail":
        break;
      default:
        return;
    }
    const hasGetToken = typeof this.#host.opts.getToken === "function";
    switch (verdict.error) {
      case "invalid_frames":
        return this.#fail("invalid_frames", `the server closed the connection for invalid frames (4003): ${reason}`, { closeCode: code });
      case "token_expired":
        return this.#fail("token_expired", `the server refused the token (4001): ${reason}`, { closeCode: code });
      case "unauthorized":
        return this.#failUnauthorized(!hasGetToken ? "pass getToken to supply fresh tokens"
          : this.#authRetried ? "a fresh token from getToken was refused too"
            : `no attempt left for a fresh token (maxReconnectAttempts ${this.#host.opts.maxReconnectAttempts})`);
      case "forbidden":
        return this.#fail("forbidden", `not allowed in this room (${this.#says(status)})`, { status, serverCode: this.#refusal?.serverCode });
      case "refused":
        return this.#fail("refused", `the server refused the connection (${this.#says(status)})`, { status, serverCode: this.#refusal?.serverCode });
      default:
        return this.#fail(verdict.error, `gave up after ${this.#host.opts.maxReconnectAttempts} reconnect attempts`, { closeCode: code, status });
    }
  }

  /** Schedules the next attempt after the delay a decision chose. */
  #reconnect(verdict, { code, status, retryAfterMs: waitMs }) {
    const host = this.#host;
    const o = host.opts;
    if (host.closed) return;
    this.ws = null;
    // An idle close ends a quiet connection that worked: not a failure, so the count restarts.
    if (code === CloseCode.IDLE) this.attempt = 0;
    this.attempt += 1;
    if (verdict.tokenReason === "unauthorized") this.#authRetried = true;
    let delayMs;
    if (verdict.delay === "none") delayMs = 0;
    // The server's wait, plus up to initialDelayMs of jitter so the refused do not return at once.
    else if (verdict.delay === "retry_after" && waitMs !== undefined) delayMs = waitMs + backoffDelay(1, o, host.random);
    else {
      delayMs = backoffDelay(this.attempt, o, host.random);
      // 4002, or a 429 that did not say how long: wait longer.
      if (verdict.delay !== "backoff") delayMs += o.rateLimitedDelayMs;
    }
    this.state = this.everConnected ? "reconnecting" : "connecting";
    host.changed();
    const info = { roomId: this.id, attempt: this.attempt, delayMs, code };
    if (status !== undefined) info.status = status;
    if (waitMs !== undefined) info.retryAfterMs = waitMs;
    this.#log(`reconnecting in ${delayMs} ms (attempt ${this.attempt}, delay ${verdict.delay}, token ${verdict.tokenReason})`,
      { ...info, delay: verdict.delay, tokenReason: verdict.tokenReason });
    host.fire("reconnecting", info);
    this.#timers.reconnect = setTimeout(() => this.open(verdict.tokenReason), delayMs);
  }

  /** Gives up on a socket that stopped answering: reconnect without waiting for its close. */
  #dead(ws, why) {
    if (ws !== this.ws) return;
    this.#onClose(ws, 1006, why);
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(4000, why);
    } catch { /* already closed */ }
  }

  #failUnauthorized(why) {
    this.#fail("unauthorized", `the server refused the token (${this.#says(401)}); ${why}`, { status: 401, serverCode: this.#refusal?.serverCode });
  }

  #fail(code, message, details = {}) {
    const err = new RealtimeError(code, `room ${this.id}: ${message}`, { ...details, roomId: this.id, fatal: true });
    this.#log(`stopped: ${code}`, { error: code, message: err.message });
    this.stop("error");
    this.clearPresence();
    this.error = err;
    this.#host.changed();
    this.#host.fire("error", err);
  }

  /** Stops the socket and timers, leaving the room in `state`. */
  stop(state) {
    this.#gen++;
    this.#clearTimers();
    this.#endSync();
    const ws = this.ws;
    this.ws = null;
    this.state = state;
    if (ws && state !== "closed") {
      try { ws.close(1000); } catch { /* already closed */ }
    }
  }

  #clearTimers({ keepAck = false } = {}) {
    const timers = this.#timers;
    for (const [k, t] of Object.entries(timers)) {
      if (keepAck && k === "ack") continue;
      clearTimeout(t);
      clearInterval(t);
      timers[k] = null;
    }
  }

  #startKeepalive(ws) {
    const { pingIntervalMs, pongTimeoutMs } = this.#host.opts;
    if (!(pingIntervalMs > 0)) return;
    this.#timers.ping = setInterval(() => {
      if (ws !== this.ws || ws.readyState !== OPEN) return;
      try { ws.send("ping"); } catch { /* the close event follows */ }
      if (!this.#timers.pong) {
        this.#timers.pong = setTimeout(() => this.#dead(ws, "keepalive timeout"), pongTimeoutMs);
      }
    }, pingIntervalMs);
  }

  // ---- acks ----

  queueAck(id) {
    this.#ackQueue.add(id);
    if (!this.#timers.ack) {
      this.#timers.ack = setTimeout(() => {
        this.#timers.ack = null;
        this.flushAcks();
      }, this.#host.opts.ackDelayMs);
    }
  }

  flushAcks() {
    if (this.#ackQueue.size === 0 || !this.#live) return;
    const ids = [...this.#ackQueue];
    this.#ackQueue.clear();
    for (let i = 0; i < ids.length; i += MAX_ACK_IDS) {
      const chunk = ids.slice(i, i + MAX_ACK_IDS);
      this.ws.send(JSON.stringify({ type: "ack", ids: chunk }));
      this.#log(`acks sent (${chunk.length})`, { ids: chunk });
      this.#host.fire("ack", { roomId: this.id, ids: chunk });
    }
  }

  // ---- client events ----

  /**
   * Sends a client event unless the server would refuse it for its rate: CLIENT_EVENT_RATE
   * (`clientEventRate` per 10 s) and the `eventRates` patterns the name matches.
   */
  emit(event, data) {
    if (!this.#live) return this.#refuseEmit(event, "the room is not connected");
    const o = this.#host.opts;
    const now = Date.now();
    const all = prune(this.#eventTimes, now);
    if (all.length >= o.clientEventRate) {
      return this.#refuseEmit(event, `${o.clientEventRate} events went out in the last 10 s (clientEventRate)`);
    }
    const limits = this.#host.rates.filter((r) => matchesType(r.pattern, event));
    for (const r of limits) {
      let times = this.#rateTimes.get(r.pattern);
      if (!times) this.#rateTimes.set(r.pattern, (times = []));
      if (prune(times, now, r.windowMs).length >= r.limit) {
        return this.#refuseEmit(event, `${r.limit} events matching ${r.pattern} went out in the last ${r.windowMs} ms (eventRates)`);
      }
    }
    all.push(now);
    for (const r of limits) this.#rateTimes.get(r.pattern).push(now);
    this.ws.send(JSON.stringify(data === undefined ? { type: "emit", event } : { type: "emit", event, data }));
    return true;
  }

  #refuseEmit(event, why) {
    this.#log(`emit ${event} not sent: ${why}`, { event, why });
    return false;
  }

  // ---- presence ----

  /**
   * The `connected` frame's presence replaces the room's map: nothing from before the
   * connection is kept. After a reconnect, users who came or went meanwhile are announced.
   */
  #presenceSnapshot(hello) {
    const fire = this.#host.fire;
    const p = hello.presence && typeof hello.presence === "object" ? hello.presence : { count: 0, users: [] };
    const next = new Map();
    for (const u of Array.isArray(p.users) ? p.users : []) {
      if (u && typeof u.userId === "string") next.set(u.userId, presenceUser(u.userId, u.connections ?? 1, u.state, u.since ?? null));
    }
    const before = this.presence;
    this.presence = next;
    this.presenceCount = typeof p.count === "number" ? p.count : next.size;
    fire("presence", { roomId: this.id, users: next, count: this.presenceCount, change: "snapshot" });
    if (!before) return;
    const at = typeof hello.serverTime === "string" ? hello.serverTime : new Date().toISOString();
    for (const userId of before.keys()) {
      if (!next.has(userId)) fire("left", { roomId: this.id, userId, timestamp: at });
    }
    for (const [userId, u] of next) {
      if (!before.has(userId)) fire("joined", { roomId: this.id, userId, state: u.state, timestamp: u.since ?? at });
    }
  }

  #onPresence(f) {
    if (!this.watchPresence || !this.presence) return;
    const fire = this.#host.fire;
    const next = new Map(this.presence);
    const { userId } = f;
    let change;
    if (f.type === "presence.joined") {
      change = "joined";
      if (!next.has(userId)) this.presenceCount++;
      next.set(userId, presenceUser(userId, 1, f.state, f.timestamp ?? null));
    } else if (f.type === "presence.left") {
      change = "left";
      next.delete(userId);
      this.presenceCount = Math.max(next.size, this.presenceCount - 1);
    } else if (f.type === "presence.updated") {
      change = "updated";
      const had = next.get(userId);
      // A user beyond the first 100 listed when this connection opened: present, since unknown.
      if (!had) this.presenceCount = Math.max(this.presenceCount, next.size + 1);
      next.set(userId, presenceUser(userId, had?.connections ?? 1, f.state, had?.since ?? null));
    } else {
      return;
    }
    this.presence = next;
    fire("presence", { roomId: this.id, users: next, count: this.presenceCount, change, userId });
    if (change === "joined") fire("joined", { roomId: this.id, userId, state: next.get(userId).state, timestamp: f.timestamp });
    if (change === "left") fire("left", { roomId: this.id, userId, timestamp: f.timestamp });
  }

  /** The room was left, closed or stopped: its map is emptied (and watchers told so). */
  clearPresence() {
    if (!this.presence) return;
    this.presence = null;
    this.presenceCount = 0;
    this.#host.fire("presence", { roomId: this.id, users: EMPTY_PRESENCE, count: 0, change: "cleared" });
  }

  /** @param {string} state the JSON text of the state to set */
  setPresence(state) {
    this.#presenceWanted = state;
    this.#flushPresence();
  }

  /** Sends the wanted presence state when the server's window allows; else later. */
  #flushPresence() {
    clearTimeout(this.#timers.presence);
    this.#timers.presence = null;
    const wanted = this.#presenceWanted;
    if (wanted === null || wanted === this.#presenceSent) return;
    if (!this.#live) return; // sent by #onHello
    const now = Date.now();
    const recent = prune(this.#presenceTimes, now);
    if (recent.length >= PRESENCE_SET_RATE) {
      const wait = recent[0] + RATE_WINDOW_MS + RATE_MARGIN_MS - now;
      this.#timers.presence = setTimeout(() => this.#flushPresence(), Math.max(0, wait));
      return;
    }
    recent.push(now);
    this.#presenceSent = wanted;
    this.ws.send(`{"type":"presence.set","data":${wanted}}`);
  }

  // ---- sync ----

  /** Asks for what came after the last seq; resolves with the result, or null if not connected. */
  sync() {
    if (!this.#live) return Promise.resolve(null);
    if (this.#pendingSync) return this.#pendingSync.promise;
    const since = this.lastSeq ?? 0;
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    this.#pendingSync = { since, promise, resolve };
    this.ws.send(JSON.stringify({ type: "sync", since }));
    // A socket that slept may be dead: with no frame at all in pongTimeoutMs it is replaced,
    // as the keepalive would (and the new connection resumes after `since`).
    const ws = this.ws;
    const { pongTimeoutMs } = this.#host.opts;
    if (!this.#timers.pong && pongTimeoutMs > 0) {
      this.#timers.pong = setTimeout(() => this.#dead(ws, "no answer to sync"), pongTimeoutMs);
    }
    return promise;
  }

  #onSynced(f) {
    const fire = this.#host.fire;
    const pending = this.#pendingSync;
    this.#pendingSync = null;
    const serverSeq = typeof f.lastSeq === "number" ? f.lastSeq : null;
    // The replay went up to the room's latest seq: later ones arrive live after this frame.
    if (serverSeq !== null && (this.lastSeq === null || serverSeq !== this.lastSeq)) {
      this.lastSeq = serverSeq;
    }
    const since = pending?.since ?? null;
    const result = { roomId: this.id, since, lastSeq: serverSeq, recovered: f.recovered !== false };
    // Settles once what the replay brought has been handed to the app.
    this.#chain.then(() => {
      fire("synced", result);
      if (since !== null) fire("recovery", { ...result, since });
      pending?.resolve(result);
    });
  }

  /** A sync whose socket went: left out of sync()'s results (the reconnect resumes instead). */
  #endSync() {
    const pending = this.#pendingSync;
    this.#pendingSync = null;
    pending?.resolve(null);
  }
}

/**
 * Holds one WebSocket per room (a RoomConnection each), keeps them alive, resumes after drops
 * without gaps or duplicates, and acknowledges notifications once the app has handled them. The
 * client is the façade over its rooms: it owns what spans them (dedupe, listeners, the overall
 * state) and hands each room the rest.
 *
 * Events (`client.on(name, fn)` returns an unsubscribe function):
 * - `notification` (n, {roomId}): each notification once, in order per room. A returned promise
 *   is awaited before the next notification of that room and before the auto-ack.
 * - `state` (state, previous): the client's connection state changed.
 * - `connected` ({roomId, connectionId, lastSeq, resumed, recovered}), `disconnected`
 *   ({roomId, code, reason, wasConnected}), `reconnecting` ({roomId, attempt, delayMs, code}).
 * - `recovery` ({roomId, since, lastSeq, recovered}) after each resumed connection;
 *   `recovered:false` means the server no longer had everything since: refetch your state.
 * - `subscribed` ({roomId, types}), `ack` ({roomId, ids}), `duplicate` (n, {roomId}),
 *   `error` (RealtimeError).
 * - `status` (RoomStatus): a room's state, attempt count or last connection time changed.
 * - `presence` ({roomId, users, count, change, userId?}): a presence-watching room's map of who
 *   is online changed; `joined` / `left` ({roomId, userId, ...}): a user arrived or went.
 * - `event` (e, {roomId}): a client event another connection sent with `emit`.
 * - `synced` ({roomId, since, lastSeq, recovered}): a `sync()` of a room finished.
 * - Any other name is a notification type or client event name, or a pattern of them
 *   (`memory.created`, `note.*`, `*`): the listener gets the notifications and the client
 *   events that match, as (n, {roomId, kind}).
 *
 * What a room does after each close or refusal is `decide`'s answer (see there).
 */
export class RealtimeClient extends Emitter {
  #opts;
  /** roomId -> RoomConnection */
  #rooms = new Map();
  /** id -> {rooms: Set<string>, acked: boolean}: the notifications already delivered. */
  #seen = new Map();
  #types;
  #state = "disconnected";
  #closed = true;
  /** roomId -> last seq of rooms that were left, so joining again resumes. */
  #positions = new Map();
  /** pattern -> Set<{fn}>: listeners by notification type or event name. */
  #patterns = new Map();
  /** ephemeral id -> the rooms it arrived through (see #onEphemeral). */
  #ephemeral = new Map();
  /** Rooms that watch presence, or true for every room. */
  #presenceRooms;
  /** When the page was hidden (null while visible or outside a browser). */
  #hiddenAt = null;
  #onVisibility = () => this.#visibilityChanged();
  /** @type {Host} what every RoomConnection of this client shares */
  #host;

  /**
   * @param {import("./roomcast.d.ts").RealtimeClientOptions} options
   */
  constructor(options = {}) {
    super();
    // An option given as undefined takes its default.
    const o = { ...DEFAULTS };
    for (const [k, v] of Object.entries(options)) if (v !== undefined) o[k] = v;
    const rooms = o.rooms ?? (o.room ? [o.room] : undefined);
    // An explicit empty list is fine: rooms can be joined later.
    if (!Array.isArray(rooms)) {
      throw new TypeError("RealtimeClient needs `rooms` (an array of room ids; [] to join later)");
    }
    for (const r of rooms) checkRoomId(r);
    if (o.token == null && typeof o.getToken !== "function") {
      throw new TypeError("RealtimeClient needs `token` (a string) or `getToken` (a function)");
    }
    const WS = o.WebSocket ?? globalThis.WebSocket;
    if (typeof WS !== "function") {
      throw new TypeError("no WebSocket implementation: pass `WebSocket` (e.g. from the 'ws' package)");
    }
    if (o.url == null && !globalThis.location?.origin) {
      throw new TypeError("RealtimeClient needs `url` (the roomcast server's base URL)");
    }
    if (o.presence !== undefined && typeof o.presence !== "boolean" && !Array.isArray(o.presence)) {
      throw new TypeError("`presence` is true (every room), false, or an array of room ids");
    }
    this.#opts = o;
    this.#types = [...new Set(o.types ?? [])];
    this.#presenceRooms = o.presence === true ? true : new Set(Array.isArray(o.presence) ? o.presence : []);
    const client = this;
    this.#host = {
      opts: o,
      WS,
      // Called as a plain function: a browser's fetch must not be called as a method of another object.
      fetch: typeof o.fetch === "function" ? o.fetch
        : typeof globalThis.fetch === "function" ? (...args) => globalThis.fetch(...args) : null,
      random: typeof o.random === "function" ? o.random : Math.random,
      rates: parseEventRates(o.eventRates),
      log: makeLogger(o.debug),
      get closed() { return client.#closed; },
      get types() { return client.#types; },
      fire: (event, ...args) => this.#fire(event, ...args),
      changed: () => this.#updateState(),
      notification: (room, n) => this.#onNotification(room, n),
      ephemeral: (room, n) => this.#onEphemeral(room, n),
      event: (room, e) => this.#onEvent(room, e),
    };
    for (const id of new Set(rooms)) this.#rooms.set(id, this.#newRoom(id, o.since?.[id], this.#watches(id)));
    if (o.autoConnect !== false) this.connect();
  }

  #newRoom(id, since, watchPresence) {
    return new RoomConnection(id, since, watchPresence, this.#host);
  }

  /** Fires one of the client's own events (`emit` sends a client event instead). */
  #fire(event, ...args) {
    return super.emit(event, ...args);
  }

  /** The client's connection state, over all of its rooms. @returns {ConnectionState} */
  get state() {
    return this.#state;
  }

  /** The room ids this client holds. @returns {string[]} */
  get rooms() {
    return [...this.#rooms.keys()];
  }

  /** The current type filter (empty: every type). @returns {string[]} */
  get types() {
    return [...this.#types];
  }

  /**
   * One room's state.
   * @param {string} roomId
   * @returns {ConnectionState | undefined}
   */
  roomState(roomId) {
    return this.#rooms.get(roomId)?.publicState;
  }

  /**
   * The last seq seen in a room (persist it and pass it back as `since` to resume across page
   * loads); null before the first connection.
   * @param {string} roomId
   * @returns {number | null}
   */
  lastSeq(roomId) {
    return this.#rooms.get(roomId)?.lastSeq ?? this.#positions.get(roomId) ?? null;
  }

  /**
   * One room's connection: state, consecutive attempts, when it last connected (ms since the
   * epoch, null before the first time), last seq, and the fatal error that stopped it (null
   * unless its state is `error`). Undefined for a room the client does not hold.
   * @param {string} roomId
   * @returns {import("./roomcast.d.ts").RoomStatus | undefined}
   */
  roomStatus(roomId) {
    const room = this.#rooms.get(roomId);
    if (!room) return undefined;
    return {
      roomId,
      state: room.publicState,
      attempt: room.attempt,
      lastConnectedAt: room.lastConnectedAt,
      lastSeq: room.lastSeq,
      error: room.state === "error" ? room.error : null,
    };
  }

  /**
   * Who is online in a room that watches presence: userId -> {userId, connections, state, since}.
   * A new (read-only) Map each time it changes, so it can be compared by identity; empty until
   * the room first connects. Undefined for a room that does not watch presence (see the
   * `presence` option and `join`) or that the client does not hold.
   * @param {string} roomId
   * @returns {ReadonlyMap<string, import("./roomcast.d.ts").PresenceUser> | undefined}
   */
  presence(roomId) {
    const room = this.#rooms.get(roomId);
    if (!room?.watchPresence) return undefined;
    return room.presence ?? EMPTY_PRESENCE;
  }

  /**
   * How many users are online in a presence-watching room (null before it first connected).
   * It can exceed `presence(roomId).size`: the server lists the first 100 users by id when a
   * connection opens, then everyone who arrives.
   * @param {string} roomId
   * @returns {number | null}
   */
  presenceCount(roomId) {
    const room = this.#rooms.get(roomId);
    return room?.watchPresence && room.presence ? room.presenceCount : null;
  }

  /**
   * Adds a room to a live client and opens it (unless the client is closed: then at the next
   * `connect()`). `since` resumes after that seq (0: everything the room still has); without
   * it, a room this client left earlier resumes where it was, and a new one starts with the
   * offline queue. `presence: true` watches the room's presence. Joining a room the client
   * holds does nothing, except that `presence: true` on a room that does not watch presence yet
   * reopens its socket with presence on (resuming after its last seq: nothing is lost).
   * @param {string} roomId
   * @param {{since?: number, presence?: boolean}} [options]
   * @returns {this}
   */
  join(roomId, options = {}) {
    checkRoomId(roomId);
    const held = this.#rooms.get(roomId);
    if (held) {
      if (options.presence === true && !held.watchPresence) {
        held.watchPresence = true;
        if (!this.#closed && held.state !== "error" && held.state !== "closed") {
          held.flushAcks();
          held.stop("idle");
          held.open(held.everConnected ? "reconnect" : "connect");
        }
      }
      return this;
    }
    const since = options.since ?? this.#positions.get(roomId);
    this.#positions.delete(roomId);
    const room = this.#newRoom(roomId, since, options.presence ?? this.#watches(roomId));
    this.#rooms.set(roomId, room);
    if (!this.#closed) room.open("connect");
    this.#updateState();
    return this;
  }

  /**
   * Removes a room: sends its pending acks, closes its socket, stops reconnecting it. Its last
   * seq is remembered, so a later `join` resumes without a gap. Resolves once the socket closed
   * (or after `timeoutMs`).
   * @param {string} roomId
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  leave(roomId, timeoutMs = 2000) {
    const room = this.#rooms.get(roomId);
    if (!room) return Promise.resolve();
    room.flushAcks();
    const ws = room.ws;
    room.stop("closed");
    this.#rooms.delete(roomId);
    room.clearPresence();
    if (room.lastSeq !== null) {
      this.#positions.set(roomId, room.lastSeq);
      if (this.#positions.size > MAX_POSITIONS) this.#positions.delete(this.#positions.keys().next().value);
    }
    this.#updateState();
    return closeSocket(ws, timeoutMs);
  }

  /** Opens every room that is not open or opening (also restarts rooms stopped by an error). */
  connect() {
    this.#closed = false;
    this.#watchVisibility(true);
    for (const room of this.#rooms.values()) {
      if (room.state === "idle" || room.state === "error" || room.state === "closed") {
        room.attempt = 0;
        room.open(room.everConnected ? "reconnect" : "connect");
      }
    }
    this.#updateState();
    return this;
  }

  /**
   * Closes every socket and stops reconnecting. Pending acks are sent first. Resolves once the
   * sockets have closed (or after `timeoutMs`).
   * @param {number} [timeoutMs]
   * @returns {Promise<void>}
   */
  close(timeoutMs = 2000) {
    this.#closed = true;
    this.#watchVisibility(false);
    const waits = [];
    for (const room of this.#rooms.values()) {
      room.flushAcks();
      const ws = room.ws;
      room.stop("closed");
      waits.push(closeSocket(ws, timeoutMs));
      room.clearPresence();
    }
    this.#updateState();
    return Promise.all(waits).then(() => undefined);
  }

  /**
   * Acknowledges notifications (needed only with `autoAck: false`). Sent to every room that
   * delivered the id (so a notification published to both user_ and request_ rooms is cleared
   * in both), queued while a room is reconnecting. Idempotent.
   * @param {string | string[]} ids
   */
  ack(ids) {
    for (const id of Array.isArray(ids) ? ids : [ids]) {
      if (typeof id !== "string" || !id) continue;
      const rec = this.#seen.get(id);
      if (rec) rec.acked = true;
      const targets = rec ? [...rec.rooms] : [...this.#rooms.keys()];
      for (const roomId of targets) this.#rooms.get(roomId)?.queueAck(id);
    }
  }

  /**
   * Adds type patterns to the filter (`note.*`, `task.created`, `*`) on every connection.
   * Note: the first subscribe narrows an unfiltered connection to just these types.
   * @param {string[]} types
   */
  subscribe(types) {
    const list = normalizeTypes(types);
    for (const t of list) if (!this.#types.includes(t)) this.#types.push(t);
    this.send({ type: "subscribe", data: { types: list } });
  }

  /**
   * Removes type patterns from the filter; an empty filter means every type.
   * @param {string[]} types
   */
  unsubscribe(types) {
    const list = normalizeTypes(types);
    this.#types = this.#types.filter((t) => !list.includes(t));
    this.send({ type: "unsubscribe", data: { types: list } });
  }

  /**
   * Sends a raw protocol frame (an object is sent as JSON) to one room or to every connected
   * room. Returns how many sockets it was sent to.
   * @param {string | object} frame
   * @param {{roomId?: string}} [options]
   * @returns {number}
   */
  send(frame, options = {}) {
    const text = typeof frame === "string" ? frame : JSON.stringify(frame);
    let n = 0;
    for (const room of this.#rooms.values()) {
      if (options.roomId && room.id !== options.roomId) continue;
      if (room.send(text)) n++;
    }
    return n;
  }

  /**
   * Adds a listener. A name the client defines (`notification`, `connected`, `presence`,
   * `event`…, see the class comment) is that event. Any other name is a notification type or
   * client event name, or a pattern of them (`memory.created`, `note.*`, `*`): the listener is
   * called with each matching notification (after the `notification` listeners, and like them
   * awaited before the auto-ack) and each matching client event, as (message, {roomId, kind})
   * where `kind` is "notification" or "event". Returns the function that removes it.
   * @param {string} event
   * @param {(...args: any[]) => unknown} fn
   * @returns {() => void}
   */
  on(event, fn) {
    if (EVENTS.has(event)) return super.on(event, fn);
    if (!isPattern(event)) {
      throw new TypeError(`unknown event ${JSON.stringify(event)}: not a client event, a notification type or a pattern like "note.*"`);
    }
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    let set = this.#patterns.get(event);
    if (!set) this.#patterns.set(event, (set = new Set()));
    const entry = { fn };
    set.add(entry);
    return () => {
      set.delete(entry);
      if (set.size === 0 && this.#patterns.get(event) === set) this.#patterns.delete(event);
    };
  }

  /** @param {string} event */
  listeners(event) {
    if (EVENTS.has(event)) return super.listeners(event);
    return [...(this.#patterns.get(event) ?? [])].map((e) => e.fn);
  }

  /** @param {string} event */
  listenerCount(event) {
    if (EVENTS.has(event)) return super.listenerCount(event);
    return this.#patterns.get(event)?.size ?? 0;
  }

  /**
   * Sets this user's presence state in a room (a JSON object, e.g. `{status: "away"}`): every
   * presence watcher of the room sees it in `presence`. The server takes at most 3 per 10 s
   * per connection, so calls are coalesced: the newest state is sent as soon as the limit
   * allows, states in between are skipped. Kept across reconnects (sent again on the new
   * connection). Setting the state this connection last sent again sends nothing.
   * @param {string} roomId
   * @param {Record<string, unknown>} state
   */
  setPresence(roomId, state) {
    const room = this.#rooms.get(roomId);
    if (!room) throw new TypeError(`setPresence: the client does not hold room ${roomId}`);
    if (!isPlainObject(state)) throw new TypeError("setPresence: the state must be a plain object");
    room.setPresence(JSON.stringify(state));
  }

  /**
   * Sends a client event (e.g. `typing.start`) to the room's other connections; the server
   * stamps it with this user's id. It must be allowed by the server's CLIENT_EVENT_TYPES (a
   * refused one comes back as an `error` with code `event_not_allowed`, and counts toward the
   * server's invalid-frame close). Events are not queued: false when the room is not connected,
   * when this connection already sent `clientEventRate` events in the last 10 s, or when an
   * `eventRates` limit of a pattern the name matches is reached (sending more would only be
   * refused). With `debug`, each false says why.
   * @param {string} roomId
   * @param {string} event
   * @param {Record<string, unknown>} [data]
   * @returns {boolean} whether it was sent
   */
  emit(roomId, event, data) {
    if (typeof event !== "string" || !TYPE.test(event)) {
      throw new TypeError(`invalid event name ${JSON.stringify(event)}: 1-128 characters of A-Z a-z 0-9 _ . : -`);
    }
    if (data !== undefined && !isPlainObject(data)) throw new TypeError("emit: data must be a plain object");
    const room = this.#rooms.get(roomId);
    if (room) return room.emit(event, data);
    this.#host.log?.(`room ${roomId}: emit ${event} not sent: the client does not hold this room`, { roomId, event });
    return false;
  }

  /**
   * Asks the server for everything published after the last seq this client saw, in every
   * connected room (or one), without reconnecting: for a page that suspects it missed something
   * (a tab that slept). What comes back is handed to the app like any notification, once.
   * Resolves, once those are handed over, with one result per room that answered; rooms not
   * connected are left out (they resume when they reconnect). Called on its own when the page
   * becomes visible after being hidden (`syncOnVisible`).
   * @param {string} [roomId]
   * @returns {Promise<import("./roomcast.d.ts").SyncResult[]>}
   */
  sync(roomId) {
    const rooms = roomId === undefined ? [...this.#rooms.values()] : [this.#rooms.get(roomId)].filter(Boolean);
    return Promise.all(rooms.map((room) => room.sync())).then((all) => all.filter(Boolean));
  }

  // ---- what spans rooms: dedupe, dispatch, listeners by name ----

  #onNotification(room, n) {
    const ctx = { roomId: room.id };
    const rec = this.#seen.get(n.id);
    if (rec) {
      // Already delivered (a redelivery, a replay, or the same publish via another room).
      this.#seen.delete(n.id);
      this.#seen.set(n.id, rec);
      rec.rooms.add(room.id);
      if (n.requiresAck && rec.acked) room.queueAck(n.id);
      this.#fire("duplicate", n, ctx);
      return;
    }
    if (!this.#passes(room, n, ctx)) return;
    const entry = { rooms: new Set([room.id]), acked: false };
    this.#seen.set(n.id, entry);
    while (this.#seen.size > this.#opts.dedupeSize) this.#seen.delete(this.#seen.keys().next().value);
    room.enqueue(() => this.#dispatch(room, n, entry, ctx));
  }

  /** Whether `messageFilter` (if any) keeps a notification; a filter that throws drops it. */
  #passes(room, n, ctx) {
    const filter = this.#opts.messageFilter;
    if (typeof filter !== "function") return true;
    try {
      return Boolean(filter(n, ctx));
    } catch (err) {
      this.#fire("error", new RealtimeError("filter_error", `messageFilter threw: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
      return false;
    }
  }

  /**
   * An ephemeral notification (a progress update): no seq, never acked, never replayed. Handed
   * to the app like any other, but kept apart from the stored ids (an ephemeral publish may
   * reuse a stored one's id, and must not hide it or be hidden by it). The same publish through
   * a second room (POST /broadcast with a requestId) is dropped; the same id again through the
   * same room is a new publish that reused it.
   */
  #onEphemeral(room, n) {
    const via = this.#ephemeral.get(n.id);
    if (via && !via.has(room.id)) {
      via.add(room.id);
      this.#fire("duplicate", n, { roomId: room.id });
      return;
    }
    this.#ephemeral.delete(n.id);
    this.#ephemeral.set(n.id, new Set([room.id]));
    while (this.#ephemeral.size > EPHEMERAL_IDS) this.#ephemeral.delete(this.#ephemeral.keys().next().value);
    const ctx = { roomId: room.id };
    if (!this.#passes(room, n, ctx)) return;
    room.enqueue(() => this.#dispatch(room, n, null, ctx));
  }

  /** The listeners of a notification type or event name: its exact name and matching patterns. */
  #typeListeners(type) {
    const out = [];
    for (const [pattern, set] of this.#patterns) {
      if (matchesType(pattern, type)) for (const { fn } of set) out.push(fn);
    }
    return out;
  }

  /** `entry` is the notification's record in #seen (null for an ephemeral one). */
  async #dispatch(room, n, entry, ctx) {
    if (this.#closed) {
      // Not handled: forget it so a later connection delivers it again.
      if (entry && this.#seen.get(n.id) === entry) this.#seen.delete(n.id);
      return;
    }
    const typed = this.#typeListeners(n.type);
    const typedCtx = { ...ctx, kind: "notification" };
    const results = await Promise.allSettled([
      ...this.listeners("notification").map(async (fn) => fn(n, ctx)),
      ...typed.map(async (fn) => fn(n, typedCtx)),
    ]);
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      // Not acked: the server redelivers it, and then it is handed to the app again.
      if (entry && this.#seen.get(n.id) === entry) this.#seen.delete(n.id);
      const err = failed.reason;
      this.#fire("error", new RealtimeError("handler_error", `notification handler failed: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
      return;
    }
    if (entry && n.requiresAck && this.#opts.autoAck) this.ack(n.id);
  }

  /** A client event from another connection: to `event` listeners, then to matching names. */
  #onEvent(room, e) {
    const ctx = { roomId: room.id };
    this.#fire("event", e, ctx);
    const typed = this.#typeListeners(e.event);
    if (typed.length === 0) return;
    const typedCtx = { ...ctx, kind: "event" };
    for (const fn of typed) {
      try {
        const r = fn(e, typedCtx);
        if (r && typeof r.then === "function") r.then(undefined, (err) => this.#handlerFailed(room, err));
      } catch (err) {
        this.#handlerFailed(room, err);
      }
    }
  }

  #handlerFailed(room, err) {
    this.#fire("error", new RealtimeError("handler_error", `event handler failed: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
  }

  /** Whether a room watches presence by the client's `presence` option. */
  #watches(roomId) {
    return this.#presenceRooms === true || this.#presenceRooms.has(roomId);
  }

  #visibilityChanged() {
    const hidden = document.visibilityState === "hidden";
    if (hidden) {
      this.#hiddenAt ??= Date.now();
      return;
    }
    if (this.#hiddenAt === null) return;
    this.#hiddenAt = null;
    if (!this.#closed) void this.sync();
  }

  #watchVisibility(on) {
    const doc = globalThis.document;
    if (!doc || typeof doc.addEventListener !== "function" || !this.#opts.syncOnVisible) return;
    doc.removeEventListener("visibilitychange", this.#onVisibility);
    if (on) {
      doc.addEventListener("visibilitychange", this.#onVisibility);
      if (doc.visibilityState === "hidden") this.#hiddenAt ??= Date.now();
    }
  }

  #updateState() {
    for (const room of this.#rooms.values()) {
      const key = `${room.publicState}|${room.attempt}|${room.lastConnectedAt}`;
      if (key !== room.statusKey) {
        room.statusKey = key;
        this.#fire("status", this.roomStatus(room.id));
      }
    }
    const states = [...this.#rooms.values()].map((r) => r.publicState);
    let next;
    if (this.#closed || states.length === 0) next = "disconnected";
    else if (states.includes("error")) next = "error";
    else if (states.every((s) => s === "connected")) next = "connected";
    else if (states.includes("reconnecting")) next = "reconnecting";
    else if (states.includes("connecting")) next = "connecting";
    else next = "disconnected";
    if (next !== this.#state) {
      const prev = this.#state;
      this.#state = next;
      this.#fire("state", next, prev);
    }
  }
}

function isPlainObject(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Drops the times older than a window of the server's (plus a margin, at most a tenth of the
 * window so short windows keep most of their rate); returns the array.
 */
function prune(times, now, windowMs = RATE_WINDOW_MS) {
  const span = windowMs + Math.min(RATE_MARGIN_MS, windowMs / 10);
  while (times.length && now - times[0] >= span) times.shift();
  return times;
}

function presenceUser(userId, connections, state, since) {
  return Object.freeze({
    userId,
    connections: typeof connections === "number" ? connections : 1,
    state: state && typeof state === "object" && !Array.isArray(state) ? state : {},
    since: typeof since === "string" ? since : null,
  });
}

function checkRoomId(r) {
  if (typeof r !== "string" || !ROOM_ID.test(r)) throw new TypeError(`invalid room id: ${r}`);
}

/** Closes a socket and resolves once it closed (or after `timeoutMs`). */
function closeSocket(ws, timeoutMs) {
  if (!ws || ws.readyState === 3) return Promise.resolve();
  const closed = new Promise((resolve) => {
    const t = setTimeout(resolve, timeoutMs);
    const done = () => { clearTimeout(t); resolve(); };
    if (typeof ws.addEventListener === "function") ws.addEventListener("close", done);
    else ws.onclose = done;
  });
  try { ws.close(1000, "client closed"); } catch { /* already closing */ }
  return closed;
}

function normalizeTypes(types) {
  const list = Array.isArray(types) ? types : [types];
  if (list.length === 0 || list.some((t) => typeof t !== "string" || t === "")) {
    throw new TypeError("types must be a non-empty array of type patterns");
  }
  return [...new Set(list)];
}
