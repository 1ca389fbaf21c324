// Types of broadcaster.js. Guide: docs/client.md.

/** A notification to publish (the body of POST /rooms/{roomId}/broadcast). */
export interface OutgoingMessage<Data = Record<string, unknown>> {
  type: string;
  data?: Data;
  status?: "success" | "error" | "pending";
  timestamp?: string;
  requestId?: string;
  error?: string;
  requiresAck?: boolean;
  /** Default: the idempotency key, so every room and every retry gets the same id. */
  id?: string;
}

export interface PublishResult {
  success: true;
  broadcastCount: number;
  id: string;
  seq: number;
  /** true when an earlier call with the same key had already published it. */
  duplicate: boolean;
}

export interface BroadcastResult {
  success: true;
  /** Per room: `user_{userId}` (each user's, for many) and, with a requestId, `request_{requestId}`. */
  rooms: Record<string, PublishResult>;
}

/** One room's answer to an ephemeral publish: sent to `broadcastCount` sockets, nothing kept. */
export interface EphemeralPublishResult {
  success: true;
  broadcastCount: number;
  id: string;
  ephemeral: true;
}

export interface ProgressResult {
  success: true;
  rooms: Record<string, EphemeralPublishResult>;
}

/** What `binding` needs: a service binding (`env.ROOMCAST`) or anything else with this `fetch`. */
export interface FetchBinding {
  fetch(
    url: string,
    init: { method: "POST"; headers: Record<string, string>; body: string; signal?: AbortSignal },
  ): Promise<{ ok: boolean; status: number; text(): Promise<string> }>;
}

export interface BroadcasterOptions {
  /**
   * The server's base URL. Default (without `binding`): the environment's ROOMCAST_URL, else
   * REALTIME_URL.
   */
  url?: string;
  /**
   * Instead of `url` (and `fetch`): send every request through this, e.g. a service binding to
   * roomcast from another Worker (`[[services]] binding = "ROOMCAST", service = "roomcast"`, then
   * `binding: env.ROOMCAST`). The API key is still required.
   */
  binding?: FetchBinding;
  /**
   * One of the server's BROADCAST_API_KEYS. Server side only: never ship it to a browser.
   * Default: the environment's ROOMCAST_API_KEY, else REALTIME_API_KEY.
   */
  apiKey?: string;
  /** Retries after the first attempt, on network errors, timeouts, 5xx and 207 (some rooms failed). Default 3. */
  retries?: number;
  /** Default globalThis.fetch. Not with `binding`. */
  fetch?: typeof fetch;
  /** Per attempt, ms. Default 10000. */
  timeoutMs?: number;
  /** First retry's delay cap, ms (doubling, full jitter). Default 250. */
  retryDelayMs?: number;
  /** Largest retry delay cap, ms. Default 5000. */
  maxRetryDelayMs?: number;
  /** Source of randomness in [0, 1) for the jitter. */
  random?: () => number;
}

export interface NotifyOptions {
  requestId?: string;
  requiresAck?: boolean;
  /**
   * Makes the publish idempotent across calls: derive it from your job's run id and step
   * (e.g. `${runId}:notify-success`) so a retried step never notifies twice. Default: a new
   * UUID per call (which still makes this call's own retries safe).
   */
  idempotencyKey?: string;
}

export interface ManyOptions extends NotifyOptions {
  /** Default "success". */
  status?: "success" | "error" | "pending";
}

export interface ProgressOptions {
  requestId?: string;
  /** Default "pending". */
  status?: "success" | "error" | "pending";
}

export interface Broadcaster {
  /** POST /broadcast: to `user_{userId}` (or each of `userIds`, 1-100) and `request_{requestId}`. */
  broadcastNotification(args: ({ userId: string; userIds?: undefined } | { userIds: string[]; userId?: undefined }) & {
    requestId?: string;
    message: OutgoingMessage;
    idempotencyKey?: string;
  }): Promise<BroadcastResult>;
  /**
   * One notification to many users (1-100 distinct ids), with one id in every room. One
   * idempotency key for the call and its retries; a 207 (some rooms failed) is retried with it,
   * so only the failed rooms publish then.
   */
  broadcastMany(userIds: string[], type: string, data?: Record<string, unknown>, options?: ManyOptions): Promise<BroadcastResult>;
  /**
   * An ephemeral progress update (status "pending" unless given) to one user or many: to their
   * sockets connected now, never stored, replayed or acked. One attempt, never retried: null when
   * it may have been lost (no answer, 5xx, a room failed); a refused request (4xx) throws.
   */
  progress(
    userId: string | string[],
    type: string,
    data?: Record<string, unknown>,
    options?: ProgressOptions,
  ): Promise<ProgressResult | null>;
  broadcastSuccess(userId: string, type: string, data?: Record<string, unknown>, options?: NotifyOptions): Promise<BroadcastResult>;
  broadcastError(
    userId: string,
    type: string,
    error: unknown,
    options?: NotifyOptions & { data?: Record<string, unknown> },
  ): Promise<BroadcastResult>;
  /** POST /rooms/{roomId}/broadcast: one room. */
  publish(roomId: string, message: OutgoingMessage, options?: { idempotencyKey?: string }): Promise<PublishResult>;
}

/**
 * Without `url` (or `binding`) / `apiKey`, they are read from the environment (`ENV`); neither
 * found throws. `url` or `fetch` together with `binding` throws.
 */
export function createBroadcaster(options?: BroadcasterOptions): Broadcaster;

/** The environment variables read for a missing `url` / `apiKey`, first found wins. */
export const ENV: {
  readonly url: readonly ["ROOMCAST_URL", "REALTIME_URL"];
  readonly apiKey: readonly ["ROOMCAST_API_KEY", "REALTIME_API_KEY"];
};

export class BroadcastError extends Error {
  constructor(message: string, details?: {
    status?: number; code?: string; body?: unknown; attempts?: number; cause?: unknown; failedRooms?: string[]; retryable?: boolean;
  });
  /**
   * The HTTP status of the last attempt; 0 when no answer arrived (network error, timeout); 207
   * when some rooms failed (see `failedRooms`).
   */
  readonly status: number;
  /** The server's error code (e.g. "invalid_body", "partial_failure"), or "network_error" / "timeout". */
  readonly code: string;
  /** With a 207: the rooms that failed (their errors are in `body.rooms`). */
  readonly failedRooms: string[];
  /** The last answer's body. */
  readonly body: unknown;
  /** How many attempts were made. */
  readonly attempts: number;
  /**
   * Whether calling again (with the same idempotency key) may succeed: no answer, 5xx, or a 207
   * whose failed rooms were not refused for the request itself (e.g. `duplicate_id`).
   */
  readonly retryable: boolean;
}

/** Delay before retry `retry` (1-based), ms. */
export function retryDelay(retry: number, options?: { retryDelayMs?: number; maxRetryDelayMs?: number }, random?: () => number): number;
