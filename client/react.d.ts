// Types of react.js. Guide: docs/client.md.
import type { ReactNode, ReactElement } from "react";
import type {
  ClientEvent, ConnectedInfo, ConnectionState, DeliveryContext, DisconnectedInfo, Notification, PresenceUser,
  RealtimeClient, RealtimeClientOptions, RealtimeError, RecoveryInfo, TokenReason, TypedContext, WebSocketLike,
} from "./roomcast.js";

export interface UseRealtimeOptions {
  /** Subscribes to `user_{userId}`. Nothing connects while it is empty. */
  userId: string | null | undefined;
  /**
   * Also subscribes to `request_{requestId}` (the token must allow that room). Changing it keeps
   * the user room's socket; a request room not seen before is joined from seq 0, one seen before
   * resumes from its last seq.
   */
  requestId?: string | null;
  /**
   * Keep the newest `keep` notifications in `notifications` (newest first). Default 0: the list
   * stays empty.
   */
  keep?: number;
  /** Each notification once; a returned promise delays the auto-ack until it resolves. */
  onMessage?: (n: Notification, ctx: DeliveryContext) => void | Promise<void>;
  onConnect?: (info: ConnectedInfo) => void;
  onDisconnect?: (info: DisconnectedInfo) => void;
  /** After a resumed connection; `recovered: false` means: refetch your state. */
  onRecovery?: (info: RecoveryInfo) => void;
  onError?: (error: RealtimeError) => void;
  /**
   * Without a provider: notifications it rejects are neither handed over nor acked. Inside a
   * provider: only what this hook hands over (the provider's own filter decides the acks).
   */
  messageFilter?: (n: Notification, ctx: DeliveryContext) => boolean;
  /** Default true; false leaves the rooms (and closes the hook's own client). */
  enabled?: boolean;

  // The client's settings: used when there is no RealtimeProvider above (else the provider's).
  /** The server's base URL; default: the page's origin. Keep it stable (a string). */
  url?: string;
  /** A client token; a new value is used from the next connection on. */
  token?: string;
  /** Called before every (re)connection; preferred over `token` for short-lived tokens. */
  getToken?: (ctx: { roomId: string; reason: TokenReason }) => string | Promise<string>;
  maxReconnectAttempts?: number;
  /** Server-side type filter, e.g. ["note.*"]. */
  types?: string[];
  /** Default true; with false, call `ack(id)`. */
  autoAck?: boolean;
  /** The WebSocket constructor (tests, Node); default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Further RealtimeClient options (keepalive, backoff), read when the client is created. */
  clientOptions?: Partial<RealtimeClientOptions>;
}

/** The connection over the hook's rooms. */
export interface ConnectionInfo {
  /** `error` if a room stopped, `connected` when all are, else the least advanced. */
  state: ConnectionState;
  /** Consecutive connection attempts of the room furthest from connected (0 when all are). */
  attempt: number;
  /** When one of the hook's rooms last said `connected`, ms since the epoch; null before that. */
  lastConnectedAt: number | null;
}

export interface UseRealtimeResult {
  /** The latest notification handed to the app, or null. */
  lastMessage: Notification | null;
  /** With `keep`: the newest `keep` notifications, newest first. Otherwise always empty. */
  notifications: readonly Notification[];
  isConnected: boolean;
  /** Same as `connection.state`. */
  connectionState: ConnectionState;
  connection: ConnectionInfo;
  /**
   * The fatal error that stopped one of the hook's rooms (`code` "unauthorized", "forbidden",
   * "token_expired", "max_reconnect_attempts"…, with `roomId`), or null.
   */
  error: RealtimeError | null;
  /** Sends a raw protocol frame to every connected room of the hook (or one); returns how many. */
  sendMessage: (frame: string | object, options?: { roomId?: string }) => number;
  /** Acknowledges notifications (with `autoAck: false`). */
  ack: (ids: string | string[]) => void;
  /** Tries rooms stopped by an error again (e.g. after the user signed in again). */
  reconnect: () => void;
  /** The client in use (the provider's or the hook's own); null until it exists. */
  client: RealtimeClient | null;
}

/** `connectionState` of `useRealtime()` under a provider: the connection over the provider's rooms. */
export interface ConnectionStatus {
  /** `error` if a room stopped, `connected` when all are, else the least advanced; `disconnected` with no rooms. */
  status: ConnectionState;
  /** Consecutive connection attempts of the room furthest from connected (0 when all are). */
  reconnectAttempt: number;
  /** The fatal error that stopped one of the rooms, or null. */
  error: RealtimeError | null;
  /** When one of the rooms last said `connected`, ms since the epoch; null before that. */
  lastConnectedAt: number | null;
}

/** A `subscribe` handler: a notification (`ctx.kind` "notification") or a client event ("event"). */
export type SubscribeHandler = (message: Notification | ClientEvent, ctx: TypedContext) => void | Promise<void>;

/**
 * What `useRealtime()` (no options) returns under a provider: the fields of `UseRealtimeResult`
 * over the provider's rooms (`rooms`, then `user_{userId}`), with `connectionState` an object,
 * plus `subscribe` and `emit`.
 */
export interface ProviderRealtimeResult extends Omit<UseRealtimeResult, "connectionState"> {
  connectionState: ConnectionStatus;
  /**
   * Calls `handler` with each notification and client event of the provider's rooms whose type
   * or event name matches (`chat.message`, `approval.*`, `*`), once each. Returns the function
   * that removes it. The same function for the provider's whole life.
   */
  subscribe: (typeOrPattern: string, handler: SubscribeHandler) => () => void;
  /**
   * Sends a client event to the provider's first room (or `roomId`): false when it could not be
   * sent (not connected, over the client's `clientEventRate` / `eventRates`, no room).
   */
  emit: (event: string, data?: Record<string, unknown>, options?: { roomId?: string }) => boolean;
}

/** Under a RealtimeProvider: its rooms, `subscribe`, `emit`. Throws outside one. */
export function useRealtime(): ProviderRealtimeResult;
export function useRealtime(options: UseRealtimeOptions): UseRealtimeResult;

export interface RealtimeProviderProps {
  children?: ReactNode;
  /**
   * Room ids held for the whole tree (e.g. ["team_7"]), whatever hooks mount: what
   * `useRealtime()` reports on, subscribes to and emits into (the first is `emit`'s default).
   */
  rooms?: string[];
  /** Adds `user_{userId}` to the provider's rooms (after `rooms`). */
  userId?: string | null;
  /** The server's base URL; default: the page's origin. Keep it stable (a string). */
  url?: string;
  /** A client token; a new value is used from the next connection on and restarts refused rooms. */
  token?: string;
  getToken?: (ctx: { roomId: string; reason: TokenReason }) => string | Promise<string>;
  maxReconnectAttempts?: number;
  types?: string[];
  autoAck?: boolean;
  /** Notifications it rejects are handed to no hook and not acked. */
  messageFilter?: (n: Notification, ctx: DeliveryContext) => boolean;
  WebSocket?: new (url: string) => WebSocketLike;
  clientOptions?: Partial<RealtimeClientOptions>;
  /** Default true; false closes the shared client. */
  enabled?: boolean;
}

/**
 * One RealtimeClient (one socket per room) for every `useRealtime` below it: rooms are joined
 * when the first hook needs them and left when the last one unmounts; `rooms` and
 * `user_{userId}` are held while the provider is mounted.
 */
export function RealtimeProvider(props: RealtimeProviderProps): ReactElement;

/** The nearest provider's client (null outside a provider and until it exists). */
export function useRealtimeClient(): RealtimeClient | null;

/**
 * The client's settings for `usePresence` / `useEvent` used without a RealtimeProvider (inside
 * one they are ignored: the provider's client is used). Each such hook then has its own client:
 * prefer a provider.
 */
export interface RoomHookOptions {
  url?: string;
  token?: string;
  getToken?: (ctx: { roomId: string; reason: TokenReason }) => string | Promise<string>;
  WebSocket?: new (url: string) => WebSocketLike;
  /** Server-side type filter; it applies to client events too (add e.g. "typing.*"). */
  types?: string[];
  maxReconnectAttempts?: number;
  autoAck?: boolean;
  clientOptions?: Partial<RealtimeClientOptions>;
  /** Default true; false leaves the room. */
  enabled?: boolean;
}

export interface UsePresenceResult {
  /** Who is online, ordered by user id; a new array when it changes. */
  users: readonly PresenceUser[];
  /** How many users are online (can exceed `users.length` in rooms of over 100 users). */
  count: number;
  /** Sets this user's presence state in the room (coalesced to the server's 3 per 10 s). */
  setPresence: (state: Record<string, unknown>) => void;
}

/**
 * Who is online in `roomId`, re-rendering when someone comes, goes or changes their state.
 * Nothing connects while `roomId` is empty.
 */
export function usePresence(roomId: string | null | undefined, options?: RoomHookOptions): UsePresenceResult;

export interface UseEventResult {
  /** The newest matching event of the room (null until one came, and after `roomId` or `name` changed). */
  last: ClientEvent | null;
  /** Sends a client event to the room's other connections; false when it could not be sent. */
  emit: (event: string, data?: Record<string, unknown>) => boolean;
}

/**
 * Client events of `roomId` whose name matches `name` (`typing.start`, `typing.*`, `*`):
 * `handler` (the latest one) is called with each; `last` holds the newest.
 */
export function useEvent(
  roomId: string | null | undefined,
  name: string,
  handler?: ((e: ClientEvent, ctx: DeliveryContext) => void) | null,
  options?: RoomHookOptions,
): UseEventResult;
