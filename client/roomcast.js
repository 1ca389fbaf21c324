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
 * - `presence` ({roomId, users, count, change, userId?}): a presence-watching room's map of who
 *   is online changed; `joined` / `left` ({roomId, userId, ...}): a user arrived or went.
 * - `event` (e, {roomId}): a client event another connection sent with `emit`.
 * - `synced` ({roomId, since, lastSeq, recovered}): a `sync()` of a room finished.
 * - Any other name is a notification type or client event name, or a pattern of them
 *   (`memory.created`, `note.*`, `*`): the listener gets the notifications and the client
 *   events that match, as (n, {roomId, kind}).
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
  /** pattern -> Set<{fn}>: listeners by notification type or event name. */
  #patterns = new Map();
  /** ephemeral id -> the rooms it arrived through (see #onEphemeral). */
  #ephemeral = new Map();
  /** Rooms that watch presence, or true for every room. */
  #presenceRooms;
  /** When the page was hidden (null while visible or outside a browser). */
  #hiddenAt = null;
  #onVisibility = () => this.#visibilityChanged();

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
    if (o.presence !== undefined && typeof o.presence !== "boolean" && !Array.isArray(o.presence)) {
      throw new TypeError("`presence` is true (every room), false, or an array of room ids");
    }
    this.#presenceRooms = o.presence === true ? true : new Set(Array.isArray(o.presence) ? o.presence : []);
    for (const id of new Set(rooms)) this.#rooms.set(id, newRoom(id, o.since?.[id], this.#watches(id)));
    if (o.autoConnect !== false) this.connect();
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
          this.#flushAcks(held);
          this.#stop(held, "idle");
          this.#open(held, held.everConnected ? "reconnect" : "connect");
        }
      }
      return this;
    }
    const since = options.since ?? this.#positions.get(roomId);
    this.#positions.delete(roomId);
    const room = newRoom(roomId, since, options.presence ?? this.#watches(roomId));
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
    this.#clearPresence(room);
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
    this.#watchVisibility(false);
    const waits = [];
    for (const room of this.#rooms.values()) {
      this.#flushAcks(room);
      const ws = room.ws;
      this.#stop(room, "closed");
      waits.push(closeSocket(ws, timeoutMs));
      this.#clearPresence(room);
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
    room.presenceWanted = JSON.stringify(state);
    this.#flushPresence(room);
  }

  /**
   * Sends a client event (e.g. `typing.start`) to the room's other connections; the server
   * stamps it with this user's id. It must be allowed by the server's CLIENT_EVENT_TYPES (a
   * refused one comes back as an `error` with code `event_not_allowed`, and counts toward the
   * server's invalid-frame close). Events are not queued: false when the room is not connected,
   * or when this connection already sent `clientEventRate` events in the last 10 s (sending
   * more would only be refused).
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
    if (!room || room.state !== "connected" || room.ws?.readyState !== OPEN) return false;
    const now = Date.now();
    const recent = prune(room.eventTimes, now);
    if (recent.length >= this.#opts.clientEventRate) return false;
    recent.push(now);
    room.ws.send(JSON.stringify(data === undefined ? { type: "emit", event } : { type: "emit", event, data }));
    return true;
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
    return Promise.all(rooms.map((room) => this.#syncRoom(room))).then((all) => all.filter(Boolean));
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
      this.#fire("error", new RealtimeError("token_error", `getToken failed: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
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
    if (room.watchPresence) params.set("presence", "1");
    const base = typeof o.url === "function" ? await o.url({ roomId: room.id }) : (o.url ?? globalThis.location.origin);
    if (gen !== room.gen || this.#closed) return;
    const path = `/rooms/${encodeURIComponent(room.id)}/subscribe?${params}`;
    const url = wsBase(base) + path;
    room.probeUrl = httpBase(base) + path;

    let ws;
    try {
      ws = new this.#WS(url);
    } catch (err) {
      this.#fire("error", new RealtimeError("connect_failed", `could not open a WebSocket: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
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
    // A new connection: the server's windows start again, and it has not seen our state.
    room.presenceTimes = [];
    room.presenceSent = null;
    room.eventTimes = [];
    const resumed = since !== null;
    const recovered = resumed ? hello.recovered !== false : undefined;
    // Before `connected`, so its listeners read the new map.
    if (room.watchPresence) this.#presenceSnapshot(room, hello);
    this.#updateState();
    this.#fire("connected", {
      roomId: room.id, connectionId: room.connectionId, lastSeq: serverSeq, resumed,
      ...(resumed ? { recovered } : {}),
    });
    if (resumed) this.#fire("recovery", { roomId: room.id, since, lastSeq: serverSeq, recovered });
    this.#flushAcks(room);
    this.#flushPresence(room);
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
    if (typeof frame.type !== "string") return;
    if (CONTROL_FRAMES.has(frame.type) && typeof frame.seq !== "number") {
      switch (frame.type) {
        case "connected":
          return this.#onHello(room, ws, frame);
        case "subscribed":
          return void this.#fire("subscribed", { roomId: room.id, types: frame.data?.types ?? [] });
        case "error":
          return void this.#fire("error", new RealtimeError(frame.code ?? "server_error", frame.message ?? "error frame from the server", { roomId: room.id, serverCode: frame.code }));
        case "event":
          return this.#onEvent(room, frame);
        case "synced":
          return this.#onSynced(room, frame);
        default:
          return;
      }
    }
    // Presence frames: reserved types, no id or seq.
    if (frame.type.startsWith("presence.") && typeof frame.userId === "string") return this.#onPresence(room, frame);
    if (typeof frame.id !== "string") return;
    if (typeof frame.seq === "number") this.#onNotification(room, frame);
    else if (frame.ephemeral === true) this.#onEphemeral(room, frame);
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
      this.#fire("duplicate", n, ctx);
      return;
    }
    const filter = this.#opts.messageFilter;
    if (typeof filter === "function") {
      let keep;
      try {
        keep = filter(n, ctx);
      } catch (err) {
        this.#fire("error", new RealtimeError("filter_error", `messageFilter threw: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
        return;
      }
      if (!keep) return;
    }
    const entry = { rooms: new Set([room.id]), acked: false };
    this.#seen.set(n.id, entry);
    while (this.#seen.size > this.#opts.dedupeSize) this.#seen.delete(this.#seen.keys().next().value);
    room.chain = room.chain.then(() => this.#dispatch(room, n, entry, ctx));
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
    const filter = this.#opts.messageFilter;
    if (typeof filter === "function") {
      try {
        if (!filter(n, ctx)) return;
      } catch (err) {
        this.#fire("error", new RealtimeError("filter_error", `messageFilter threw: ${err?.message ?? err}`, { roomId: room.id, cause: err }));
        return;
      }
    }
    room.chain = room.chain.then(() => this.#dispatch(room, n, null, ctx));
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
    if (typeof e.event !== "string") return;
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

  // ---- presence ----

  /** Whether a room watches presence by the client's `presence` option. */
  #watches(roomId) {
    return this.#presenceRooms === true || this.#presenceRooms.has(roomId);
  }

  /**
   * The `connected` frame's presence replaces the room's map: nothing from before the
   * connection is kept. After a reconnect, users who came or went meanwhile are announced.
   */
  #presenceSnapshot(room, hello) {
    const p = hello.presence && typeof hello.presence === "object" ? hello.presence : { count: 0, users: [] };
    const next = new Map();
    for (const u of Array.isArray(p.users) ? p.users : []) {
      if (u && typeof u.userId === "string") next.set(u.userId, presenceUser(u.userId, u.connections ?? 1, u.state, u.since ?? null));
    }
    const before = room.presence;
    room.presence = next;
    room.presenceCount = typeof p.count === "number" ? p.count : next.size;
    this.#fire("presence", { roomId: room.id, users: next, count: room.presenceCount, change: "snapshot" });
    if (!before) return;
    const at = typeof hello.serverTime === "string" ? hello.serverTime : new Date().toISOString();
    for (const userId of before.keys()) {
      if (!next.has(userId)) this.#fire("left", { roomId: room.id, userId, timestamp: at });
    }
    for (const [userId, u] of next) {
      if (!before.has(userId)) this.#fire("joined", { roomId: room.id, userId, state: u.state, timestamp: u.since ?? at });
    }
  }

  #onPresence(room, f) {
    if (!room.watchPresence || !room.presence) return;
    const next = new Map(room.presence);
    const { userId } = f;
    let change;
    if (f.type === "presence.joined") {
      change = "joined";
      if (!next.has(userId)) room.presenceCount++;
      next.set(userId, presenceUser(userId, 1, f.state, f.timestamp ?? null));
    } else if (f.type === "presence.left") {
      change = "left";
      next.delete(userId);
      room.presenceCount = Math.max(next.size, room.presenceCount - 1);
    } else if (f.type === "presence.updated") {
      change = "updated";
      const had = next.get(userId);
      // A user beyond the first 100 listed when this connection opened: present, since unknown.
      if (!had) room.presenceCount = Math.max(room.presenceCount, next.size + 1);
      next.set(userId, presenceUser(userId, had?.connections ?? 1, f.state, had?.since ?? null));
    } else {
      return;
    }
    room.presence = next;
    const info = { roomId: room.id, users: next, count: room.presenceCount, change, userId };
    this.#fire("presence", info);
    if (change === "joined") this.#fire("joined", { roomId: room.id, userId, state: next.get(userId).state, timestamp: f.timestamp });
    if (change === "left") this.#fire("left", { roomId: room.id, userId, timestamp: f.timestamp });
  }

  /** A room left, closed or stopped: its map is emptied (and watchers told so). */
  #clearPresence(room) {
    if (!room.presence) return;
    room.presence = null;
    room.presenceCount = 0;
    this.#fire("presence", { roomId: room.id, users: EMPTY_PRESENCE, count: 0, change: "cleared" });
  }

  /** Sends the wanted presence state when the server's window allows; else later. */
  #flushPresence(room) {
    clearTimeout(room.timers.presence);
    room.timers.presence = null;
    const wanted = room.presenceWanted;
    if (wanted === null || wanted === room.presenceSent) return;
    if (room.state !== "connected" || room.ws?.readyState !== OPEN) return; // sent by #onHello
    const now = Date.now();
    const recent = prune(room.presenceTimes, now);
    if (recent.length >= PRESENCE_SET_RATE) {
      const wait = recent[0] + RATE_WINDOW_MS + RATE_MARGIN_MS - now;
      room.timers.presence = setTimeout(() => this.#flushPresence(room), Math.max(0, wait));
      return;
    }
    recent.push(now);
    room.presenceSent = wanted;
    room.ws.send(`{"type":"presence.set","data":${wanted}}`);
  }

  // ---- sync ----

  #syncRoom(room) {
    if (room.state !== "connected" || room.ws?.readyState !== OPEN) return Promise.resolve(null);
    if (room.sync) return room.sync.promise;
    const since = room.lastSeq ?? 0;
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    room.sync = { since, promise, resolve };
    room.ws.send(JSON.stringify({ type: "sync", since }));
    // A socket that slept may be dead: with no frame at all in pongTimeoutMs it is replaced,
    // as the keepalive would (and the new connection resumes after `since`).
    const ws = room.ws;
    if (!room.timers.pong && this.#opts.pongTimeoutMs > 0) {
      room.timers.pong = setTimeout(() => this.#dead(room, ws, "no answer to sync"), this.#opts.pongTimeoutMs);
    }
    return promise;
  }

  #onSynced(room, f) {
    const pending = room.sync;
    room.sync = null;
    const serverSeq = typeof f.lastSeq === "number" ? f.lastSeq : null;
    // The replay went up to the room's latest seq: later ones arrive live after this frame.
    if (serverSeq !== null && (room.lastSeq === null || serverSeq !== room.lastSeq)) {
      room.lastSeq = serverSeq;
    }
    const since = pending?.since ?? null;
    const result = { roomId: room.id, since, lastSeq: serverSeq, recovered: f.recovered !== false };
    // Settles once what the replay brought has been handed to the app.
    room.chain.then(() => {
      this.#fire("synced", result);
      if (since !== null) this.#fire("recovery", { ...result, since });
      pending?.resolve(result);
    });
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

  /** A sync whose socket went: left out of sync()'s results (the reconnect resumes instead). */
  #endSync(room) {
    const pending = room.sync;
    room.sync = null;
    pending?.resolve(null);
  }

  #onClose(room, ws, code, reason) {
    if (ws !== room.ws) return;
    const wasConnected = room.state === "connected";
    room.ws = null;
    this.#clearTimers(room, { keepAck: true });
    this.#endSync(room);
    if (this.#closed || room.state === "closed") return;
    this.#fire("disconnected", { roomId: room.id, code, reason, wasConnected });
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
    this.#fire("reconnecting", info);
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
    this.#clearPresence(room);
    room.error = err;
    this.#updateState();
    this.#fire("error", err);
  }

  /** Stops a room's socket and timers, leaving it in `state`. */
  #stop(room, state) {
    room.gen++;
    this.#clearTimers(room);
    this.#endSync(room);
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
      this.#fire("ack", { roomId: room.id, ids: chunk });
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
        this.#fire("status", this.roomStatus(room.id));
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
      this.#fire("state", next, prev);
    }
  }
}

function isPlainObject(v) {
  if (v === null || typeof v !== "object" || Array.isArray(v)) return false;
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** Drops the times older than the server's window (plus the margin); returns the array. */
function prune(times, now) {
  while (times.length && now - times[0] >= RATE_WINDOW_MS + RATE_MARGIN_MS) times.shift();
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

/** A room's bookkeeping; `since` (a seq ≥ 0) resumes after it. */
function newRoom(id, since, watchPresence = false) {
  return {
    id,
    watchPresence: Boolean(watchPresence),
    /** userId -> PresenceUser; null until the first `connected` of a watching room. */
    presence: null,
    presenceCount: 0,
    /** The state setPresence asked for (JSON text), the one sent on this connection, and when. */
    presenceWanted: null,
    presenceSent: null,
    presenceTimes: [],
    /** When this connection sent its recent client events. */
    eventTimes: [],
    /** The pending sync(): {since, promise, resolve}. */
    sync: null,
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
    timers: { reconnect: null, ping: null, pong: null, connect: null, ack: null, presence: null },
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
