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
});

const ROOM_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;
const OPEN = 1;
/** Most ids one ack frame may carry (server limit). */
const MAX_ACK_IDS = 256;
const CONTROL_FRAMES = new Set(["connected", "pong", "subscribed", "error"]);

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
    const set = this.#handlers.get(event);
    if (!set || set.size === 0) return [];
    const out = [];
    for (const { fn } of [...set]) {
      try {
        out.push(fn(...args));
      } catch (err) {
        if (event === "error" || !this.listenerCount("error")) {
          queueMicrotask(() => { throw err; });
        } else {
          this.emit("error", err);
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

/** How many left rooms' positions a client remembers for a later join. */
const MAX_POSITIONS = 256;

/**
 * @typedef {'disconnected'|'connecting'|'connected'|'reconnecting'|'error'} ConnectionState
 */

/**
 * Holds one WebSocket per room, keeps it alive, resumes after drops without gaps or
 * duplicates, and acknowledges notifications once the app has handled them.
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
 *
 * A connection that closes before the server said `connected` was refused or never reached
 * the server; browsers cannot tell which (they report 1006). So the client asks the subscribe
 * URL without `Upgrade` (the probe), which answers the status the upgrade got: 401 → one fresh
 * token, then a fatal `unauthorized`; 403 → fatal `forbidden`; 429 → wait Retry-After;
 * network errors, 5xx and 426 ("would have been accepted") → back off as for any drop.
 */
export class RealtimeClient extends Emitter {
  #opts;
  #WS;
  #rooms = new Map();
  /** id -> {rooms: Set<string>, acked: boolean}: the notifications already delivered. */
  #seen = new Map();
  #types;
  #state = "disconnected";
  #closed = true;
  #random;
  #fetch;
  /** roomId -> last seq of rooms that were left, so joining again resumes. */
  #positions = new Map();

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
    this.#opts = o;
    this.#WS = WS;
    this.#random = typeof o.random === "function" ? o.random : Math.random;
    // Called as a plain function: a browser's fetch must not be called as a method of another object.
    this.#fetch = typeof o.fetch === "function" ? o.fetch
      : typeof globalThis.fetch === "function" ? (...args) => globalThis.fetch(...args) : null;
    this.#types = [...new Set(o.types ?? [])];
    for (const id of new Set(rooms)) this.#rooms.set(id, newRoom(id, o.since?.[id]));
    if (o.autoConnect !== false) this.connect();
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
    const room = this.#rooms.get(roomId);
    return room && publicState(room);
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
      state: publicState(room),
      attempt: room.attempt,
      lastConnectedAt: room.lastConnectedAt,
      lastSeq: room.lastSeq,
      error: room.state === "error" ? room.error : null,
    };
  }

  /**
   * Adds a room to a live client and opens it (unless the client is closed: then at the next
   * `connect()`). `since` resumes after that seq (0: everything the room still has); without
   * it, a room this client left earlier resumes where it was, and a new one starts with the
   * offline queue. Joining a room the client holds does nothing.
   * @param {string} roomId
   * @param {{since?: number}} [options]
   * @returns {this}
   */
  join(roomId, options = {}) {
    checkRoomId(roomId);
    if (this.#rooms.has(roomId)) return this;
    const since = options.since ?? this.#positions.get(roomId);
    this.#positions.delete(roomId);
    const room = newRoom(roomId, since);
    this.#rooms.set(roomId, room);
    if (!this.#closed) this.#open(room, "connect");
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
    this.#flushAcks(room);
    const ws = room.ws;
    this.#stop(room, "closed");
    this.#rooms.delete(roomId);
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
    for (const room of this.#rooms.values()) {
      if (room.state === "idle" || room.state === "error" || room.state === "closed") {
        room.attempt = 0;
        this.#open(room, room.everConnected ? "reconnect" : "connect");
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
    const waits = [];
    for (const room of this.#rooms.values()) {
      this.#flushAcks(room);
      const ws = room.ws;
      this.#stop(room, "closed");
      waits.push(closeSocket(ws, timeoutMs));
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
      for (const roomId of targets) {
        const room = this.#rooms.get(roomId);
        if (room) this.#queueAck(room, id);
      }
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
    this.#sendAll({ type: "subscribe", data: { types: list } });
  }

  /**
   * Removes type patterns from the filter; an empty filter means every type.
   * @param {string[]} types
   */
  unsubscribe(types) {
    const list = normalizeTypes(types);
    this.#types = this.#types.filter((t) => !list.includes(t));
    this.#sendAll({ type: "unsubscribe", data: { types: list } });
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
      if (room.state === "connected" && room.ws?.readyState === OPEN) {
        room.ws.send(text);
        n++;
      }
    }
    return n;
  }

  // ---- connection lifecycle ----

  async #open(room, reason) {
    const gen = ++room.gen;
    this.#clearTimers(room);
    room.error = null;
    room.state = room.everConnected ? "reconnecting" : "connecting";
    this.#updateState();
    const o = this.#opts;
    let token;
    try {
      token = typeof o.getToken === "function"
        ? await o.getToken({ roomId: room.id, reason })
        : await o.token;
    } catch (err) {
      if (gen !== room.gen || this.#closed) return;
      this.emit("error", new RealtimeError("token_error", `getToken failed: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
      if (reason === "expired") return this.#fail(room, "token_expired", "the token expired and getToken could not supply a new one", { closeCode: 4001 });
      if (reason === "unauthorized") return this.#failUnauthorized(room, "getToken failed after the server refused the token");
      return this.#retry(room, undefined);
    }
    if (gen !== room.gen || this.#closed) return;
    if (typeof token !== "string" || token === "") {
      return this.#fail(room, "no_token", "no token: getToken returned nothing");
    }
    if (reason === "expired" && token === room.token) {
      return this.#fail(room, "token_expired", "the server closed the connection for the token (4001) and no new token is available", { closeCode: 4001 });
    }
    if (reason === "unauthorized" && token === room.token) {
      return this.#failUnauthorized(room, "getToken returned the same token again");
    }
    if (typeof o.getToken !== "function") {
      const exp = tokenExp(token);
      if (exp !== undefined && exp * 1000 <= Date.now() && reason !== "connect") {
        return this.#fail(room, "token_expired", "the token has expired; pass getToken to refresh it", { closeCode: 4001 });
      }
    }
    room.token = token;

    const params = new URLSearchParams({ token });
    room.resumeFrom = room.lastSeq;
    if (room.lastSeq !== null) params.set("since", String(room.lastSeq));
    if (this.#types.length) params.set("types", this.#types.join(","));
    const base = typeof o.url === "function" ? await o.url({ roomId: room.id }) : (o.url ?? globalThis.location.origin);
    if (gen !== room.gen || this.#closed) return;
    const path = `/rooms/${encodeURIComponent(room.id)}/subscribe?${params}`;
    const url = wsBase(base) + path;
    room.probeUrl = httpBase(base) + path;

    let ws;
    try {
      ws = new this.#WS(url);
    } catch (err) {
      this.emit("error", new RealtimeError("connect_failed", `could not open a WebSocket: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
      return this.#retry(room, undefined);
    }
    room.ws = ws;
    ws.onmessage = (ev) => this.#onFrame(room, ws, ev.data);
    ws.onclose = (ev) => this.#onClose(room, ws, ev.code, ev.reason ?? "");
    ws.onerror = () => { /* a close event follows */ };
    room.timers.connect = setTimeout(
      () => this.#dead(room, ws, "connect timeout"),
      o.connectTimeoutMs,
    );
  }

  #onHello(room, ws, hello) {
    clearTimeout(room.timers.connect);
    room.timers.connect = null;
    const since = room.resumeFrom;
    room.state = "connected";
    room.everConnected = true;
    room.connectedAt = Date.now();
    room.lastConnectedAt = room.connectedAt;
    room.authRetried = false;
    room.connectionId = hello.connectionId ?? null;
    const serverSeq = typeof hello.lastSeq === "number" ? hello.lastSeq : null;
    // Without a known seq, start from the room's; a room whose log is behind ours (storage
    // reset) restarts ours.
    if (serverSeq !== null && (room.lastSeq === null || serverSeq < room.lastSeq)) {
      room.lastSeq = serverSeq;
    }
    this.#startKeepalive(room, ws);
    const resumed = since !== null;
    const recovered = resumed ? hello.recovered !== false : undefined;
    this.#updateState();
    this.emit("connected", {
      roomId: room.id, connectionId: room.connectionId, lastSeq: serverSeq, resumed,
      ...(resumed ? { recovered } : {}),
    });
    if (resumed) this.emit("recovery", { roomId: room.id, since, lastSeq: serverSeq, recovered });
    this.#flushAcks(room);
  }

  #onFrame(room, ws, data) {
    if (ws !== room.ws) return;
    // Any frame proves the connection alive.
    clearTimeout(room.timers.pong);
    room.timers.pong = null;
    if (typeof data !== "string" || data === "pong") return;
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return;
    }
    if (!frame || typeof frame !== "object") return;
    if (CONTROL_FRAMES.has(frame.type) && typeof frame.seq !== "number") {
      switch (frame.type) {
        case "connected":
          return this.#onHello(room, ws, frame);
        case "subscribed":
          return void this.emit("subscribed", { roomId: room.id, types: frame.data?.types ?? [] });
        case "error":
          return void this.emit("error", new RealtimeError(frame.code ?? "server_error", frame.message ?? "error frame from the server", { roomId: room.id }));
        default:
          return;
      }
    }
    if (typeof frame.id === "string" && typeof frame.seq === "number") this.#onNotification(room, frame);
  }

  #onNotification(room, n) {
    if (room.lastSeq === null || n.seq > room.lastSeq) room.lastSeq = n.seq;
    const ctx = { roomId: room.id };
    const rec = this.#seen.get(n.id);
    if (rec) {
      // Already delivered (a redelivery, a replay, or the same publish via another room).
      this.#seen.delete(n.id);
      this.#seen.set(n.id, rec);
      rec.rooms.add(room.id);
      if (n.requiresAck && rec.acked) this.#queueAck(room, n.id);
      this.emit("duplicate", n, ctx);
      return;
    }
    const filter = this.#opts.messageFilter;
    if (typeof filter === "function") {
      let keep;
      try {
        keep = filter(n, ctx);
      } catch (err) {
        this.emit("error", new RealtimeError("filter_error", `messageFilter threw: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
        return;
      }
      if (!keep) return;
    }
    const entry = { rooms: new Set([room.id]), acked: false };
    this.#seen.set(n.id, entry);
    while (this.#seen.size > this.#opts.dedupeSize) this.#seen.delete(this.#seen.keys().next().value);
    room.chain = room.chain.then(() => this.#dispatch(room, n, entry, ctx));
  }

  async #dispatch(room, n, entry, ctx) {
    if (this.#closed) {
      // Not handled: forget it so a later connection delivers it again.
      this.#seen.delete(n.id);
      return;
    }
    const results = await Promise.allSettled(this.listeners("notification").map(async (fn) => fn(n, ctx)));
    const failed = results.find((r) => r.status === "rejected");
    if (failed) {
      // Not acked: the server redelivers it, and then it is handed to the app again.
      if (this.#seen.get(n.id) === entry) this.#seen.delete(n.id);
      const err = failed.reason;
      this.emit("error", new RealtimeError("handler_error", `notification handler failed: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
      return;
    }
    if (n.requiresAck && this.#opts.autoAck) this.ack(n.id);
  }

  #onClose(room, ws, code, reason) {
    if (ws !== room.ws) return;
    const wasConnected = room.state === "connected";
    room.ws = null;
    this.#clearTimers(room, { keepAck: true });
    if (this.#closed || room.state === "closed") return;
    this.emit("disconnected", { roomId: room.id, code, reason, wasConnected });
    if (wasConnected && Date.now() - room.connectedAt >= this.#opts.stableAfterMs) room.attempt = 0;
    if (code === CloseCode.INVALID_FRAMES) {
      return this.#fail(room, "invalid_frames", `the server closed the connection for invalid frames (4003): ${reason}`, { closeCode: code });
    }
    if (code === CloseCode.AUTH && typeof this.#opts.getToken !== "function") {
      return this.#fail(room, "token_expired", `the server refused the token (4001): ${reason}`, { closeCode: code });
    }
    if (!wasConnected) return void this.#probe(room, code);
    this.#retry(room, code);
  }

  /**
   * The socket closed before `connected`: asks the subscribe URL without Upgrade what the
   * upgrade got, and stops, waits or backs off accordingly.
   */
  async #probe(room, code) {
    const gen = room.gen;
    const url = room.probeUrl;
    if (!this.#fetch || !url) return this.#retry(room, code);
    let status = 0;
    let retryAfter;
    let body;
    const ctrl = typeof AbortController === "function" ? new AbortController() : undefined;
    const timer = ctrl ? setTimeout(() => ctrl.abort(), this.#opts.connectTimeoutMs) : undefined;
    try {
      // A simple GET (the token is in the query): no CORS preflight.
      const res = await this.#fetch(url, { method: "GET", credentials: "omit", signal: ctrl?.signal });
      status = res.status;
      retryAfter = res.headers?.get?.("retry-after") ?? undefined;
      const text = await res.text();
      try { body = JSON.parse(text); } catch { /* not JSON */ }
    } catch {
      // No answer (network, CORS, timeout): like any other drop.
    } finally {
      clearTimeout(timer);
    }
    if (gen !== room.gen || this.#closed || room.state === "closed") return;
    const refusal = { status, serverCode: body?.error?.code, serverMessage: body?.error?.message };
    room.refusal = refusal;
    const says = `${status}${refusal.serverCode ? ` ${refusal.serverCode}` : ""}${refusal.serverMessage ? `: ${refusal.serverMessage}` : ""}`;
    if (status === 401) {
      const max = this.#opts.maxReconnectAttempts;
      if (typeof this.#opts.getToken === "function" && !room.authRetried && room.attempt < max) {
        // Once per refusal streak: a cached token may just have expired.
        room.authRetried = true;
        return this.#retry(room, code, { status, delayMs: 0, reason: "unauthorized" });
      }
      return this.#failUnauthorized(room, typeof this.#opts.getToken === "function"
        ? "a fresh token from getToken was refused too"
        : "pass getToken to supply fresh tokens");
    }
    if (status === 403) {
      return this.#fail(room, "forbidden", `not allowed in this room (${says})`, { status, serverCode: refusal.serverCode });
    }
    if (status === 429) {
      return this.#retry(room, code, { status, retryAfterMs: retryAfterMs(retryAfter) });
    }
    if (status >= 400 && status < 500 && status !== 408 && status !== 426) {
      // The request itself is wrong (bad room id, query, route): repeating it cannot help.
      return this.#fail(room, "refused", `the server refused the connection (${says})`, { status, serverCode: refusal.serverCode });
    }
    // 426 (it would be accepted now), 5xx, no answer: a passing problem.
    this.#retry(room, code, { status });
  }

  #failUnauthorized(room, why) {
    const r = room.refusal ?? {};
    const says = `401${r.serverCode ? ` ${r.serverCode}` : ""}${r.serverMessage ? `: ${r.serverMessage}` : ""}`;
    this.#fail(room, "unauthorized", `the server refused the token (${says}); ${why}`, { status: 401, serverCode: r.serverCode });
  }

  /**
   * Schedules the next attempt, or gives up after maxReconnectAttempts. `plan` carries what
   * the probe learned: its `status`, a `retryAfterMs` to honour, or a fixed `delayMs` and
   * token `reason` (the fresh-token retry after a 401).
   */
  #retry(room, code, plan = {}) {
    if (this.#closed) return;
    room.ws = null;
    room.attempt += 1;
    const max = this.#opts.maxReconnectAttempts;
    if (room.attempt > max) {
      return this.#fail(room, "max_reconnect_attempts", `gave up after ${max} reconnect attempts`, { closeCode: code, status: plan.status });
    }
    let delayMs;
    if (plan.delayMs !== undefined) delayMs = plan.delayMs;
    // The server's wait, plus up to initialDelayMs of jitter so the refused do not return at once.
    else if (plan.retryAfterMs !== undefined) delayMs = plan.retryAfterMs + backoffDelay(1, this.#opts, this.#random);
    else {
      delayMs = backoffDelay(room.attempt, this.#opts, this.#random);
      if (code === CloseCode.RATE_LIMITED || plan.status === 429) delayMs += this.#opts.rateLimitedDelayMs;
    }
    room.state = room.everConnected ? "reconnecting" : "connecting";
    this.#updateState();
    const info = { roomId: room.id, attempt: room.attempt, delayMs, code };
    if (plan.status !== undefined) info.status = plan.status;
    if (plan.retryAfterMs !== undefined) info.retryAfterMs = plan.retryAfterMs;
    this.emit("reconnecting", info);
    const reason = plan.reason ?? (code === CloseCode.AUTH ? "expired" : room.everConnected ? "reconnect" : "connect");
    room.timers.reconnect = setTimeout(() => this.#open(room, reason), delayMs);
  }

  /** Gives up on a socket that stopped answering: reconnect without waiting for its close. */
  #dead(room, ws, why) {
    if (ws !== room.ws) return;
    this.#onClose(room, ws, 1006, why);
    try {
      if (typeof ws.terminate === "function") ws.terminate();
      else ws.close(4000, why);
    } catch { /* already closed */ }
  }

  #fail(room, code, message, details = {}) {
    const err = new RealtimeError(code, `room ${room.id}: ${message}`, { ...details, roomId: room.id, fatal: true });
    this.#stop(room, "error");
    room.error = err;
    this.#updateState();
    this.emit("error", err);
  }

  /** Stops a room's socket and timers, leaving it in `state`. */
  #stop(room, state) {
    room.gen++;
    this.#clearTimers(room);
    const ws = room.ws;
    room.ws = null;
    room.state = state;
    if (ws && state !== "closed") {
      try { ws.close(1000); } catch { /* already closed */ }
    }
  }

  #clearTimers(room, { keepAck = false } = {}) {
    for (const [k, t] of Object.entries(room.timers)) {
      if (keepAck && k === "ack") continue;
      clearTimeout(t);
      clearInterval(t);
      room.timers[k] = null;
    }
  }

  #startKeepalive(room, ws) {
    const { pingIntervalMs, pongTimeoutMs } = this.#opts;
    if (!(pingIntervalMs > 0)) return;
    room.timers.ping = setInterval(() => {
      if (ws !== room.ws || ws.readyState !== OPEN) return;
      try { ws.send("ping"); } catch { /* the close event follows */ }
      if (!room.timers.pong) {
        room.timers.pong = setTimeout(() => this.#dead(room, ws, "keepalive timeout"), pongTimeoutMs);
      }
    }, pingIntervalMs);
  }

  // ---- acks, subscriptions ----

  #queueAck(room, id) {
    room.ackQueue.add(id);
    if (!room.timers.ack) {
      room.timers.ack = setTimeout(() => {
        room.timers.ack = null;
        this.#flushAcks(room);
      }, this.#opts.ackDelayMs);
    }
  }

  #flushAcks(room) {
    if (room.ackQueue.size === 0 || room.state !== "connected" || room.ws?.readyState !== OPEN) return;
    const ids = [...room.ackQueue];
    room.ackQueue.clear();
    for (let i = 0; i < ids.length; i += MAX_ACK_IDS) {
      const chunk = ids.slice(i, i + MAX_ACK_IDS);
      room.ws.send(JSON.stringify({ type: "ack", ids: chunk }));
      this.emit("ack", { roomId: room.id, ids: chunk });
    }
  }

  #sendAll(frame) {
    const text = JSON.stringify(frame);
    for (const room of this.#rooms.values()) {
      if (room.state === "connected" && room.ws?.readyState === OPEN) room.ws.send(text);
    }
  }

  #updateState() {
    for (const room of this.#rooms.values()) {
      const key = `${publicState(room)}|${room.attempt}|${room.lastConnectedAt}`;
      if (key !== room.statusKey) {
        room.statusKey = key;
        this.emit("status", this.roomStatus(room.id));
      }
    }
    const states = [...this.#rooms.values()].map(publicState);
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
      this.emit("state", next, prev);
    }
  }
}

function checkRoomId(r) {
  if (typeof r !== "string" || !ROOM_ID.test(r)) throw new TypeError(`invalid room id: ${r}`);
}

/** A room's bookkeeping; `since` (a seq ≥ 0) resumes after it. */
function newRoom(id, since) {
  return {
    id,
    state: "idle",
    everConnected: false,
    ws: null,
    gen: 0,
    attempt: 0,
    lastSeq: Number.isSafeInteger(since) && since >= 0 ? since : null,
    resumeFrom: null,
    token: null,
    connectedAt: 0,
    lastConnectedAt: null,
    connectionId: null,
    timers: { reconnect: null, ping: null, pong: null, connect: null, ack: null },
    ackQueue: new Set(),
    chain: Promise.resolve(),
    error: null,
    refusal: null,
    authRetried: false,
    probeUrl: null,
    statusKey: null,
  };
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

function publicState(room) {
  switch (room.state) {
    case "connecting":
    case "reconnecting":
    case "connected":
    case "error":
      return room.state;
    default:
      return "disconnected";
  }
}

function normalizeTypes(types) {
  const list = Array.isArray(types) ? types : [types];
  if (list.length === 0 || list.some((t) => typeof t !== "string" || t === "")) {
    throw new TypeError("types must be a non-empty array of type patterns");
  }
  return [...new Set(list)];
}
