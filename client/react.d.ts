// Types of react.js. Guide: docs/client.md.
import type {
  ConnectedInfo, ConnectionState, DeliveryContext, DisconnectedInfo, Notification,
  RealtimeClientOptions, RealtimeError, RecoveryInfo, TokenReason, WebSocketLike,
} from "./roomcast.js";

export interface UseRealtimeOptions {
  /** Subscribes to `user_{userId}`. Nothing connects while it is empty. */
  userId: string | null | undefined;
  /** Also subscribes to `request_{requestId}` (the token must allow that room). */
  requestId?: string | null;
  /** The server's base URL; default: the page's origin. Keep it stable (a string). */
  url?: string;
  /** A client token; a new value is used from the next connection on. */
  token?: string;
  /** Called before every (re)connection; preferred over `token` for short-lived tokens. */
  getToken?: (ctx: { roomId: string; reason: TokenReason }) => string | Promise<string>;
  /** Each notification once; a returned promise delays the auto-ack until it resolves. */
  onMessage?: (n: Notification, ctx: DeliveryContext) => void | Promise<void>;
  onConnect?: (info: ConnectedInfo) => void;
  onDisconnect?: (info: DisconnectedInfo) => void;
  /** After a resumed connection; `recovered: false` means: refetch your state. */
  onRecovery?: (info: RecoveryInfo) => void;
  onError?: (error: RealtimeError) => void;
  messageFilter?: (n: Notification, ctx: DeliveryContext) => boolean;
  maxReconnectAttempts?: number;
  /** Server-side type filter, e.g. ["note.*"]. */
  types?: string[];
  /** Default true; with false, call `ack(id)`. */
  autoAck?: boolean;
  /** The WebSocket constructor (tests, Node); default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocketLike;
  /** Default true; false closes the connection. */
  enabled?: boolean;
  /** Further RealtimeClient options (keepalive, backoff), read when the client is created. */
  clientOptions?: Partial<RealtimeClientOptions>;
}

export interface UseRealtimeResult {
  /** The latest notification handed to the app, or null. */
  lastMessage: Notification | null;
  isConnected: boolean;
  connectionState: ConnectionState;
  /** Sends a raw protocol frame to every connected room (or one); returns how many. */
  sendMessage: (frame: string | object, options?: { roomId?: string }) => number;
  /** Acknowledges notifications (with `autoAck: false`). */
  ack: (ids: string | string[]) => void;
}

export function useRealtime(options: UseRealtimeOptions): UseRealtimeResult;
