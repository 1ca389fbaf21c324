// Types of roomcast.js. Guide: docs/client.md; wire protocol: docs/protocol.md.

/** The client's connection state over all of its rooms (or one room's, from `roomState`). */
export type ConnectionState = "disconnected" | "connecting" | "connected" | "reconnecting" | "error";

interface NotificationFields<Data> {
  /** Unique per publish; the same publish sent to user_ and request_ rooms has one id. */
  id: string;
  type: string;
  data: Data;
  status: "success" | "error" | "pending";
  /** ISO-8601 UTC, ending in Z. */
  timestamp: string;
  requestId?: string;
  error?: string;
  requiresAck: boolean;
}

/** A stored notification: it has a seq, may be replayed, redelivered and acked. */
export interface StoredNotification<Data = Record<string, unknown>> extends NotificationFields<Data> {
  /** Position in its room's log: grows by exactly 1 per publish, never reused. */
  seq: number;
  /** 1 on first delivery, more on redelivery. */
  attempt: number;
  ephemeral?: false;
}

/**
 * An ephemeral notification (a progress update published with `ephemeral: true`): sent only to
 * the sockets connected at that moment, with no seq, never replayed, redelivered or acked.
 */
export interface EphemeralNotification<Data = Record<string, unknown>> extends NotificationFields<Data> {
  ephemeral: true;
  seq?: undefined;
  attempt?: undefined;
  requiresAck: false;
}

/** A notification as the server sends it: check `ephemeral` (or `seq`) to tell the two apart. */
export type Notification<Data = Record<string, unknown>> = StoredNotification<Data> | EphemeralNotification<Data>;

/** A client event another connection of the room sent with `emit`. */
export interface ClientEvent<Data = Record<string, unknown>> {
  type: "event";
  /** The event name, e.g. "typing.start". */
  event: string;
  data: Data;
  /** The sender's user id (its token's `sub`), set by the server: it cannot be forged. */
  userId: string;
  /** ISO-8601 UTC, ending in Z. */
  timestamp: string;
}

/** One user online in a room. */
export interface PresenceUser {
  userId: string;
  /**
   * The user's open connections in the room when this client's connection opened; 1 for a
   * user who arrived later (the server does not announce a user's further tabs).
   */
  connections: number;
  /** The state the user last set with `setPresence` (default `{}`). */
  state: Record<string, unknown>;
  /** When the user's current stretch of presence began (ISO-8601); null when unknown. */
  since: string | null;
}

/** The `presence` event: a room's map changed. */
export interface PresenceInfo {
  roomId: string;
  /** The new map (also `client.presence(roomId)`); a new object on every change. */
  users: ReadonlyMap<string, PresenceUser>;
  /** How many users are online (may exceed `users.size`: see `presenceCount`). */
  count: number;
  /**
   * "snapshot": a (re)connection's `connected` frame replaced the map; "joined" / "left" /
   * "updated": one user (`userId`) changed; "cleared": the room was left, closed or stopped.
   */
  change: "snapshot" | "joined" | "left" | "updated" | "cleared";
  userId?: string;
}

export interface JoinedInfo {
  roomId: string;
  userId: string;
  state: Record<string, unknown>;
  timestamp: string;
}

export interface LeftInfo {
  roomId: string;
  userId: string;
  timestamp: string;
}

/** What `sync()` found for one room (also the `synced` event). */
export interface SyncResult {
  roomId: string;
  /** The seq the replay started after (null for a `synced` this client did not ask for). */
  since: number | null;
  /** The room's latest seq. */
  lastSeq: number | null;
  /** false: the log no longer reached back to `since`: refetch your state. */
  recovered: boolean;
}

/** The context of a listener added by notification type or event name. */
export interface TypedContext extends DeliveryContext {
  kind: "notification" | "event";
}

/**
 * What `on` takes besides the client's own events: a notification type or client event name
 * (`memory.created`), a prefix pattern (`note.*`), or `*` (all of them). The types accept names
 * with a dot or a colon; for another name use the `notification` / `event` events.
 */
export type TypePattern = `${string}.${string}` | `${string}:${string}` | "*";

export interface DeliveryContext {
  /** The room the notification arrived through. */
  roomId: string;
}

/**
 * Why a token is asked for: the first connection, a reconnection, after the server closed with
 * 4001 ("expired"), or after the server refused the token with 401 ("unauthorized"). For the
 * last two, return a fresh token, not a cached one.
 */
export type TokenReason = "connect" | "reconnect" | "expired" | "unauthorized";

export interface RealtimeClientOptions {
  /**
   * The server's base URL (http(s) or ws(s)); a function is called before every connection
   * (e.g. to switch servers). Default in a browser: the page's origin.
   */
  url?: string | ((ctx: { roomId: string }) => string | Promise<string>);
  /** Room ids, e.g. ["user_42", "request_abc"]: one socket each. `[]` to `join` rooms later. */
  rooms: string[];
  /** A client token (JWT). Used as is on every connection. */
  token?: string;
  /**
   * Called before every (re)connection of every room; return a token (cache it as you like).
   * After the server closed with 4001 (`reason` "expired") or refused the token with 401
   * (`reason` "unauthorized"), the client reconnects only if a different token comes back; a
   * second 401 in a row is fatal (`unauthorized`).
   */
  getToken?: (ctx: { roomId: string; reason: TokenReason }) => string | Promise<string>;
  /** The WebSocket constructor. Default: globalThis.WebSocket (pass `ws`'s in Node 20). */
  WebSocket?: new (url: string) => WebSocketLike;
  /**
   * Used to ask the server why a connection was refused (a GET of the subscribe URL without
   * Upgrade). Default: globalThis.fetch; without one, every refusal is retried with backoff.
   */
  fetch?: (url: string, init: { method: "GET"; credentials: "omit"; signal?: AbortSignal }) => Promise<{
    status: number;
    headers?: { get(name: string): string | null };
    text(): Promise<string>;
  }>;
  /** Server-side type filter, e.g. ["note.*", "task.created"]. Empty/absent: every type. */
  types?: string[];
  /** Client-side filter: notifications it rejects are neither handed to the app nor acked. */
  messageFilter?: (n: Notification, ctx: DeliveryContext) => boolean;
  /** Ack `requiresAck` notifications once every `notification` listener finished. Default true. */
  autoAck?: boolean;
  /** Resume points per room (from `lastSeq()` of an earlier session). */
  since?: Record<string, number>;
  /** Connect in the constructor. Default true. */
  autoConnect?: boolean;
  /** First reconnect delay cap, ms. Default 1000. */
  initialDelayMs?: number;
  /** Largest reconnect delay cap, ms. Default 30000. */
  maxDelayMs?: number;
  /** Growth of the delay cap per attempt. Default 2. */
  multiplier?: number;
  /**
   * Consecutive failed attempts before giving up (state `error`). Default Infinity. Refusals
   * that cannot pass by waiting (401 after a fresh token, 403, other 4xx) stop at once.
   */
  maxReconnectAttempts?: number;
  /** A connection that lasted this long resets the attempt count, ms. Default 10000. */
  stableAfterMs?: number;
  /** Added to the delay after a 4002 close, or a 429 without Retry-After, ms. Default 30000. */
  rateLimitedDelayMs?: number;
  /** How often to send the text frame `ping`, ms (0: never). Default 30000. */
  pingIntervalMs?: number;
  /** How long to wait for any frame (normally `pong`) after a ping, ms. Default 10000. */
  pongTimeoutMs?: number;
  /** How long a connection may take to say `connected`, ms. Default 15000. */
  connectTimeoutMs?: number;
  /** How many recent notification ids to remember for dropping duplicates. Default 1000. */
  dedupeSize?: number;
  /** Acks are batched for this long, ms. Default 20. */
  ackDelayMs?: number;
  /** Source of randomness in [0, 1) for the jitter (tests). Default Math.random. */
  random?: () => number;
  /**
   * Watch who is online: `true` for every room (also rooms joined later), or the room ids that
   * should. Such rooms connect with `presence=1` and keep `presence(roomId)` current.
   */
  presence?: boolean | string[];
  /**
   * Client events one connection may send per 10 s; `emit` beyond it returns false instead of
   * sending something the server would refuse. Match the server's CLIENT_EVENT_RATE. Default 20.
   */
  clientEventRate?: number;
  /**
   * Limits per client event name pattern, on top of `clientEventRate`: `emit` of a name that
   * matches a pattern returns false once that pattern's limit is reached in its window. Either
   * the server's CLIENT_EVENT_RATES text (`"typing.*=5/5s,cursor.move=30/1s"`; windows in `ms`,
   * `s` or `m`) or an object of pattern -> [limit, windowMs] (`{"typing.*": [5, 5000]}`).
   * Give the server's setting. Unreadable values throw a TypeError. Default: none.
   */
  eventRates?: EventRates;
  /** Call `sync()` when the page becomes visible after being hidden (browsers). Default true. */
  syncOnVisible?: boolean;
  /**
   * Log each lifecycle step of each room (connecting and the `since` it resumes from, socket
   * opened, connected, closed, the probe's answer, the reconnect delay chosen, acks sent, a
   * room stopped, an `emit` not sent and why): `true` for `console.debug`, or a function that
   * gets each line and its details. Default false (nothing is logged).
   */
  debug?: boolean | DebugLogger;
}

/** The `eventRates` option: the server's CLIENT_EVENT_RATES text, or pattern -> [limit, windowMs]. */
export type EventRates = string | Record<string, [limit: number, windowMs: number]>;

/**
 * Gets each debug line: `message` names the room (`room user_42: connected (lastSeq 5)`);
 * `details` has the `roomId` and the step's values (code, reason, status, delayMs, since…).
 */
export type DebugLogger = (message: string, details: { roomId: string; [key: string]: unknown }) => void;

/** What the client needs of a WebSocket (the browser's, `ws`'s, Deno's, undici's). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export interface ConnectedInfo {
  roomId: string;
  connectionId: string | null;
  /** The room's latest seq when this connection opened. */
  lastSeq: number | null;
  /** Whether this connection resumed (asked for what it missed with `since`). */
  resumed: boolean;
  /** Present when resumed: false means the server could not replay everything. */
  recovered?: boolean;
}

export interface DisconnectedInfo {
  roomId: string;
  /** The WebSocket close code (4001 token, 4002 rate limit, 4003 invalid frames, 4008 idle, 1006 lost...). */
  code: number;
  reason: string;
  wasConnected: boolean;
}

export interface ReconnectingInfo {
  roomId: string;
  /** 1-based count of consecutive attempts. */
  attempt: number;
  delayMs: number;
  code: number | undefined;
  /**
   * After a connection that closed before `connected`: the status the subscribe URL answered
   * (426: it would be accepted now; 429: limited; 5xx; 0: no answer).
   */
  status?: number;
  /** After a 429: the server's Retry-After, ms (`delayMs` is this plus a little jitter). */
  retryAfterMs?: number;
}

/** One room's connection, from `roomStatus(roomId)` and the `status` event. */
export interface RoomStatus {
  roomId: string;
  state: ConnectionState;
  /** Consecutive attempts since the room last connected (0 while connected). */
  attempt: number;
  /** When the room last said `connected`, ms since the epoch; null before the first time. */
  lastConnectedAt: number | null;
  lastSeq: number | null;
  /** The fatal error that stopped the room; null unless `state` is "error". */
  error: RealtimeError | null;
}

/** After each resumed connection, and after each `sync()`. */
export interface RecoveryInfo {
  roomId: string;
  /** The seq the client resumed (or synced) after. */
  since: number;
  /** The room's latest seq. */
  lastSeq: number | null;
  /** false: notifications after `since` are gone from the server's log; refetch your state. */
  recovered: boolean;
}

export interface RealtimeEvents {
  notification: (n: Notification, ctx: DeliveryContext) => void | Promise<void>;
  state: (state: ConnectionState, previous: ConnectionState) => void;
  connected: (info: ConnectedInfo) => void;
  disconnected: (info: DisconnectedInfo) => void;
  reconnecting: (info: ReconnectingInfo) => void;
  recovery: (info: RecoveryInfo) => void;
  subscribed: (info: { roomId: string; types: string[] }) => void;
  ack: (info: { roomId: string; ids: string[] }) => void;
  duplicate: (n: Notification, ctx: DeliveryContext) => void;
  error: (error: RealtimeError) => void;
  /** A room's state, attempt count or last connection time changed. */
  status: (status: RoomStatus) => void;
  /** A presence-watching room's map of who is online changed. */
  presence: (info: PresenceInfo) => void;
  /** A user came online in a presence-watching room (also: came while this client was away). */
  joined: (info: JoinedInfo) => void;
  /** A user's last connection closed (also: went while this client was away). */
  left: (info: LeftInfo) => void;
  /** A client event from another connection (every name; see also `on(name)`). */
  event: (e: ClientEvent, ctx: DeliveryContext) => void;
  /** A `sync()` of a room finished. */
  synced: (result: SyncResult) => void;
}

export type RealtimeErrorCode =
  | "token_error"
  | "token_expired"
  | "no_token"
  | "unauthorized"
  | "forbidden"
  | "refused"
  | "invalid_frames"
  | "max_reconnect_attempts"
  | "connect_failed"
  | "handler_error"
  | "filter_error"
  | (string & {});

export class RealtimeError extends Error {
  constructor(code: string, message: string, details?: {
    roomId?: string; fatal?: boolean; cause?: unknown; closeCode?: number; status?: number; serverCode?: string;
  });
  /**
   * Fatal: "unauthorized" (401 after a fresh token), "forbidden" (403: room or origin not
   * allowed), "refused" (another 4xx), "token_expired", "no_token", "invalid_frames",
   * "max_reconnect_attempts". Not fatal: "token_error", "connect_failed", "handler_error",
   * "filter_error", and the codes of the server's error frames.
   */
  readonly code: RealtimeErrorCode;
  readonly roomId: string | undefined;
  /** true when the error stopped the room (no more reconnects until `connect()`). */
  readonly fatal: boolean;
  readonly closeCode: number | undefined;
  /** The HTTP status of a refusal (401, 403, 4xx), when the error is one. */
  readonly status: number | undefined;
  /** The server's error code with that refusal, e.g. "forbidden" or "origin_not_allowed". */
  readonly serverCode: string | undefined;
}

export class Emitter<Events extends { [K in keyof Events]: (...args: any[]) => unknown }> {
  /** Adds a listener; returns the function that removes it. */
  on<K extends keyof Events>(event: K, fn: Events[K]): () => void;
  once<K extends keyof Events>(event: K, fn: Events[K]): () => void;
  emit<K extends keyof Events>(event: K, ...args: Parameters<Events[K]>): unknown[];
  listeners<K extends keyof Events>(event: K): Array<Events[K]>;
  listenerCount(event: keyof Events): number;
}

/** A listener by notification type or event name (see `RealtimeClient.on`). */
export type TypeListener = (message: Notification | ClientEvent, ctx: TypedContext) => void | Promise<void>;

/**
 * At runtime an `Emitter`; declared apart because its `emit` sends a client event rather than
 * firing one of its own events.
 */
export class RealtimeClient {
  constructor(options: RealtimeClientOptions);
  /** Adds a listener for one of the client's own events; returns the function that removes it. */
  on<K extends keyof RealtimeEvents>(event: K, fn: RealtimeEvents[K]): () => void;
  /**
   * Adds a listener by notification type or client event name, or a pattern of them
   * (`memory.created`, `note.*`, `*`). Notification listeners are awaited before the auto-ack.
   */
  on(type: TypePattern, fn: TypeListener): () => void;
  once<K extends keyof RealtimeEvents>(event: K, fn: RealtimeEvents[K]): () => void;
  once(type: TypePattern, fn: TypeListener): () => void;
  listeners<K extends keyof RealtimeEvents>(event: K): Array<RealtimeEvents[K]>;
  listeners(type: TypePattern): TypeListener[];
  listenerCount(event: keyof RealtimeEvents | TypePattern): number;
  /**
   * Sends a client event to the room's other connections (allowed by the server's
   * CLIENT_EVENT_TYPES). Not queued: false when the room is not connected, when
   * `clientEventRate` events went out in the last 10 s, or when an `eventRates` limit of a
   * pattern the name matches is reached (with `debug`, the log says which).
   */
  emit(roomId: string, event: string, data?: Record<string, unknown>): boolean;
  /**
   * Who is online in a presence-watching room (a new read-only Map on each change); undefined
   * for a room that does not watch presence or is not held.
   */
  presence(roomId: string): ReadonlyMap<string, PresenceUser> | undefined;
  /** How many users are online in a presence-watching room; null before it connected. */
  presenceCount(roomId: string): number | null;
  /** Sets this user's presence state in a room; coalesced to the server's 3 per 10 s. */
  setPresence(roomId: string, state: Record<string, unknown>): void;
  /**
   * Replays what was published after the last seq seen, in every connected room (or one),
   * without reconnecting; resolves once it is handed over, with one result per room that
   * answered.
   */
  sync(roomId?: string): Promise<SyncResult[]>;
  readonly state: ConnectionState;
  readonly rooms: string[];
  /** The current type filter (empty: every type). */
  readonly types: string[];
  roomState(roomId: string): ConnectionState | undefined;
  /**
   * The last seq seen in a room (also one the client left); persist it and pass it back as
   * `since` to resume later.
   */
  lastSeq(roomId: string): number | null;
  /** One room's state, attempts, last connection time and fatal error; undefined if not held. */
  roomStatus(roomId: string): RoomStatus | undefined;
  /**
   * Adds a room to the live client and opens it. `since` resumes after that seq (0: all the
   * room still has); without it a room left earlier resumes where it was. `presence: true`
   * watches its presence. No-op if held, except that `presence: true` turns presence on for a
   * held room (its socket reopens, resuming after its last seq).
   */
  join(roomId: string, options?: { since?: number; presence?: boolean }): this;
  /** Closes and removes a room, remembering its last seq for a later `join`. */
  leave(roomId: string, timeoutMs?: number): Promise<void>;
  /** Opens every room that is not open (also restarts rooms stopped by an error). */
  connect(): this;
  /** Sends pending acks, closes every socket, stops reconnecting. */
  close(timeoutMs?: number): Promise<void>;
  /** Acknowledges notifications in every room that delivered them. Idempotent. */
  ack(ids: string | string[]): void;
  /** Adds type patterns to the server-side filter. */
  subscribe(types: string[]): void;
  /** Removes type patterns; an empty filter means every type. */
  unsubscribe(types: string[]): void;
  /** Sends a raw protocol frame to one room or all connected rooms; returns how many. */
  send(frame: string | object, options?: { roomId?: string }): number;
}

/** Whether what a listener added by name got is a client event (narrows the type), else a notification. */
export function isClientEvent(m: Notification | ClientEvent): m is ClientEvent;

/** Whether a type pattern (`*`, `note.*`, an exact type) matches a type, as the server's filters do. */
export function matchesType(pattern: string, type: string): boolean;

/** Reconnect delay for attempt `attempt` (1-based): full jitter under an exponential cap. */
export function backoffDelay(
  attempt: number,
  options?: { initialDelayMs?: number; maxDelayMs?: number; multiplier?: number },
  random?: () => number,
): number;

export const CloseCode: {
  readonly AUTH: 4001;
  readonly RATE_LIMITED: 4002;
  readonly INVALID_FRAMES: 4003;
  readonly IDLE: 4008;
  readonly TOO_BIG: 1009;
};

/** What `decide` is told about a room (the members tests/fixtures/reconnect-cases.json uses). */
export type DecisionInput = {
  /** The app passed `getToken`. */
  hasGetToken: boolean;
  /** A fresh token was already tried once in this streak of refusals. */
  authRetried: boolean;
  /** The room has been connected before. */
  everConnected: boolean;
  /** Reconnect attempts made so far in this streak. */
  attempt: number;
  /** The client's `maxReconnectAttempts`. */
  maxAttempts: number;
} & (
  /** The socket opened, then closed with `code`; `wasConnected`: the `connected` frame had arrived. */
  | { kind: "close"; code: number; wasConnected: boolean }
  /** The probe (or the handshake) answered HTTP `status`; 0: no answer. */
  | { kind: "refused"; status: number }
  /** getToken answered after being asked for `reason`; `sameToken`: it is the token just refused. */
  | { kind: "token"; reason: TokenReason; sameToken: boolean }
);

/** What the client does next. */
export type Decision =
  /**
   * Reconnect after `delay` ("none": at once; "backoff": backoffDelay for the next attempt;
   * "backoff+rate_limited": that plus `rateLimitedDelayMs`; "retry_after": the server's
   * Retry-After plus jitter, or backoff+rate_limited without one), asking getToken for `tokenReason`.
   */
  | { action: "reconnect"; delay: "none" | "backoff" | "backoff+rate_limited" | "retry_after"; tokenReason: TokenReason }
  /** Ask the subscribe URL without Upgrade what the upgrade got, then decide on its status. */
  | { action: "probe" }
  /** Go on connecting with the token getToken returned. */
  | { action: "use_token" }
  /** Stop the room for good with this error code. */
  | { action: "fail"; error: "invalid_frames" | "token_expired" | "unauthorized" | "forbidden" | "refused" | "max_reconnect_attempts" };

/** What the client does after each refusal or close: a pure function, the client follows it. */
export function decide(given: DecisionInput): Decision;

export const DEFAULTS: Readonly<Required<Pick<RealtimeClientOptions,
  | "initialDelayMs" | "maxDelayMs" | "multiplier" | "stableAfterMs" | "rateLimitedDelayMs"
  | "maxReconnectAttempts" | "pingIntervalMs" | "pongTimeoutMs" | "connectTimeoutMs"
  | "dedupeSize" | "ackDelayMs" | "autoAck" | "clientEventRate" | "syncOnVisible">>>;
