// roomcast publishing helper for backends (job handlers, API routes, Workers): POST /broadcast
// with retries that can never notify twice. Needs only `fetch` (Node 18+, Deno, Bun, Workers), or
// a service binding inside a Worker; it uses no Node-only API, so it runs in workerd as is.
// Never use it in a browser: it holds an API key. Types: broadcaster.d.ts. Guide: docs/client.md.
//
//   import { createBroadcaster } from "./broadcaster.js";
//   const rc = createBroadcaster(); // url and apiKey from ROOMCAST_URL / ROOMCAST_API_KEY (or REALTIME_*)
//   await rc.broadcastSuccess("u1", "note.creation.completed", { noteId }, { requestId, idempotencyKey: `${runId}:done` });
//   // In another Worker, with `[[services]] binding = "ROOMCAST", service = "roomcast"`:
//   createBroadcaster({ binding: env.ROOMCAST, apiKey: env.ROOMCAST_API_KEY });

/** The final failure of a publish: `status` is the HTTP status (0 when none arrived). */
export class BroadcastError extends Error {
  /**
   * @param {string} message
   * @param {{status?: number, code?: string, body?: unknown, attempts?: number, cause?: unknown}} [details]
   */
  constructor(message, details = {}) {
    super(message, details.cause === undefined ? undefined : { cause: details.cause });
    this.name = "BroadcastError";
    this.status = details.status ?? 0;
    this.code = details.code ?? "unknown";
    this.body = details.body;
    this.attempts = details.attempts ?? 1;
    /** With a 207: the rooms that failed (retrying with the same key completes just those). */
    this.failedRooms = details.failedRooms ?? [];
    this.#retryable = details.retryable;
  }

  #retryable;

  /** Whether a later call (with the same idempotency key) may succeed. */
  get retryable() {
    if (this.#retryable !== undefined) return this.#retryable;
    return this.status === 0 || this.status === 207 || this.status >= 500;
  }
}

/**
 * Room errors in a 207 that a retry cannot change (the request itself is wrong for that room);
 * any other failed room (unreachable, overloaded, internal) is worth retrying.
 */
const PERMANENT_ROOM_ERRORS = new Set([
  "duplicate_id", "invalid_body", "invalid_json", "reserved_type", "invalid_room_id", "payload_too_large",
  "unauthorized", "forbidden",
]);

/**
 * Delay before retry number `retry` (1-based): exponential backoff with full jitter.
 * @param {number} retry
 * @param {{retryDelayMs?: number, maxRetryDelayMs?: number}} options
 * @param {() => number} random
 */
export function retryDelay(retry, { retryDelayMs = 250, maxRetryDelayMs = 5000 } = {}, random = Math.random) {
  return Math.floor(random() * Math.min(maxRetryDelayMs, retryDelayMs * 2 ** (retry - 1)));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function newKey() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === "function") return c.randomUUID();
  throw new BroadcastError("crypto.randomUUID is unavailable: pass an idempotencyKey", { code: "no_random" });
}

/** Most user ids one POST /broadcast takes (the server's limit). */
const MAX_USER_IDS = 100;

function checkUserIds(userIds) {
  if (!Array.isArray(userIds) || userIds.length === 0 || userIds.some((u) => typeof u !== "string" || u === "")) {
    throw new TypeError("userIds must be a non-empty array of user ids");
  }
  if (userIds.length > MAX_USER_IDS) {
    throw new TypeError(`at most ${MAX_USER_IDS} userIds per call (got ${userIds.length}): split the list, with one idempotency key per part`);
  }
  if (new Set(userIds).size !== userIds.length) throw new TypeError("userIds has a repeated id");
}

/** The first of `names` set (non-empty) in the environment, where there is one (Node, Bun). */
function fromEnv(names) {
  const env = globalThis.process?.env;
  if (!env) return undefined;
  for (const name of names) if (env[name]) return env[name];
  return undefined;
}

/** Environment variables read when `url` / `apiKey` are not given, in this order. */
export const ENV = Object.freeze({
  url: Object.freeze(["ROOMCAST_URL", "REALTIME_URL"]),
  apiKey: Object.freeze(["ROOMCAST_API_KEY", "REALTIME_API_KEY"]),
});

/**
 * Where requests go without a binding: `url` (or the environment's) with `fetch`.
 * @param {{url?: string, fetch?: typeof fetch}} options
 */
function overTheNetwork({ url = fromEnv(ENV.url), fetch: fetchImpl = globalThis.fetch }) {
  if (!url) throw new TypeError(`createBroadcaster needs \`url\` (the roomcast server's base URL) or \`binding\` (a service binding to it), or ${ENV.url.join(" or ")} in the environment`);
  if (typeof fetchImpl !== "function") throw new TypeError("no fetch implementation: pass `fetch`");
  return { base: String(url).replace(/\/+$/, ""), fetchImpl };
}

/**
 * The base URL requests through a binding carry: a service binding hands the request to the bound
 * Worker whatever its host, so this only has to be a valid URL (it is what roomcast sees).
 */
const BINDING_BASE = "https://roomcast";

/**
 * Where requests go with a binding: every one through `binding.fetch`, called as its method (a
 * service binding's `fetch` needs its `this`).
 * @param {unknown} binding
 * @param {{url?: string, fetch?: unknown}} options
 */
function throughBinding(binding, { url, fetch: fetchImpl }) {
  if (binding == null || typeof binding.fetch !== "function") {
    throw new TypeError("`binding` must have a fetch(url, init) method, such as a service binding (env.ROOMCAST)");
  }
  // Either would be silently ignored, which hides a wrong setup.
  if (url !== undefined) throw new TypeError("createBroadcaster takes `url` or `binding`, not both");
  if (fetchImpl !== undefined) throw new TypeError("createBroadcaster takes `fetch` or `binding`, not both: requests go through the binding");
  return { base: BINDING_BASE, fetchImpl: (target, init) => binding.fetch(target, init) };
}

/**
 * @param {import("./broadcaster.d.ts").BroadcasterOptions} [options]
 * @returns {import("./broadcaster.d.ts").Broadcaster}
 */
export function createBroadcaster(options) {
  const {
    binding,
    apiKey = fromEnv(ENV.apiKey),
    retries = 3,
    timeoutMs = 10000,
    retryDelayMs = 250,
    maxRetryDelayMs = 5000,
    random = Math.random,
  } = options ?? {};
  const { base, fetchImpl } = binding === undefined ? overTheNetwork(options ?? {}) : throughBinding(binding, options);
  if (!apiKey) throw new TypeError(`createBroadcaster needs \`apiKey\` (one of the server's BROADCAST_API_KEYS), or ${ENV.apiKey.join(" or ")} in the environment`);

  /**
   * POSTs `body` to `path`, retrying network errors, 5xx and partial failures (207) with the same
   * key, at most `tries` times in all.
   */
  async function post(path, body, key, tries = 1 + Math.max(0, retries)) {
    const attempts = tries;
    let last;
    for (let attempt = 1; attempt <= attempts; attempt++) {
      if (attempt > 1) await sleep(retryDelay(attempt - 1, { retryDelayMs, maxRetryDelayMs }, random));
      const ctrl = typeof AbortController === "function" ? new AbortController() : undefined;
      const timer = ctrl && timeoutMs > 0 ? setTimeout(() => ctrl.abort(), timeoutMs) : undefined;
      let res;
      let text;
      try {
        const headers = { "content-type": "application/json", authorization: `Bearer ${apiKey}` };
        if (key !== undefined) headers["idempotency-key"] = key;
        res = await fetchImpl(base + path, {
          method: "POST",
          headers,
          body: JSON.stringify(body),
          signal: ctrl?.signal,
        });
        text = await res.text();
      } catch (err) {
        const timedOut = ctrl?.signal.aborted;
        last = new BroadcastError(
          timedOut ? `no answer within ${timeoutMs} ms` : `network error: ${err?.message ?? err}`,
          { code: timedOut ? "timeout" : "network_error", attempts: attempt, cause: err },
        );
        continue;
      } finally {
        clearTimeout(timer);
      }
      let parsed = text;
      try { parsed = JSON.parse(text); } catch { /* not JSON */ }
      if (res.ok && parsed?.success !== false) return parsed;
      if (res.ok) {
        // 207: some rooms failed. The others have the key, so a retry notifies only the failed ones.
        const failed = Object.entries(parsed?.rooms ?? {}).filter(([, r]) => r?.success === false);
        const permanent = failed.length > 0 && failed.every(([, r]) => PERMANENT_ROOM_ERRORS.has(r?.error?.code));
        const says = failed.map(([room, r]) => `${room}: ${r?.error?.code ?? "failed"}`).join(", ");
        last = new BroadcastError(`publish failed in ${failed.length} room${failed.length === 1 ? "" : "s"} (${says})`, {
          status: res.status, code: parsed?.error?.code ?? "partial_failure", body: parsed, attempts: attempt,
          failedRooms: failed.map(([room]) => room), retryable: !permanent,
        });
        if (permanent) throw last;
        continue;
      }
      const code = parsed?.error?.code ?? `http_${res.status}`;
      const message = parsed?.error?.message ?? `HTTP ${res.status}`;
      last = new BroadcastError(`publish failed: ${message}`, { status: res.status, code, body: parsed, attempts: attempt });
      // 4xx: the request itself is wrong (or unauthorized); repeating it cannot help.
      if (res.status < 500) throw last;
    }
    throw last;
  }

  /** Fills a missing message id from the key, so every room (and every retry) gets one id. */
  function prepare(message, idempotencyKey) {
    if (!message || typeof message !== "object" || Array.isArray(message)) {
      throw new TypeError("message must be an object like {type, data}");
    }
    const key = idempotencyKey ?? message.id ?? newKey();
    return { key, message: message.id === undefined ? { ...message, id: key } : message };
  }

  /** The `message` of a typed call: type, data, status and the options that go in it. */
  function compose(type, data, status, opts) {
    const message = { type, data: data ?? {}, status: opts.status ?? status };
    if (opts.requiresAck !== undefined) message.requiresAck = opts.requiresAck;
    return message;
  }

  const api = {
    /**
     * Publishes to user_{userId} (or every user_{id} of `userIds`) and, with requestId,
     * request_{requestId}, with one id in every room.
     * @param {{userId?: string, userIds?: string[], requestId?: string, message: object, idempotencyKey?: string}} args
     */
    async broadcastNotification({ userId, userIds, requestId, message, idempotencyKey }) {
      if (userIds !== undefined) {
        if (userId !== undefined) throw new TypeError("broadcastNotification takes userId or userIds, not both");
        checkUserIds(userIds);
      } else if (!userId) {
        throw new TypeError("broadcastNotification needs userId (or userIds)");
      }
      const p = prepare(message, idempotencyKey);
      const body = userIds !== undefined ? { userIds, message: p.message } : { userId, message: p.message };
      if (requestId != null) body.requestId = requestId;
      return post("/broadcast", body, p.key);
    },

    /**
     * One notification to many users (POST /broadcast with `userIds`, 1-100 distinct ids): every
     * user room gets the same id. One idempotency key for the call and its retries; when some
     * rooms failed (207), the retry completes just those (the others answer duplicate:true).
     * @param {string[]} userIds
     * @param {string} type
     * @param {object} [data]
     * @param {{requestId?: string, requiresAck?: boolean, status?: "success"|"error"|"pending", idempotencyKey?: string}} [opts]
     */
    broadcastMany(userIds, type, data = {}, opts = {}) {
      const message = compose(type, data, "success", opts);
      return api.broadcastNotification({ userIds, requestId: opts.requestId, message, idempotencyKey: opts.idempotencyKey });
    },

    /**
     * An ephemeral progress update (`status: "pending"` unless given): sent to the user's sockets
     * connected now, never stored, replayed or acked. One attempt: a lost update does not matter
     * (the next one replaces it), so it is not retried and resolves null instead of throwing
     * when no answer came or the server failed; a refused request (4xx) still throws.
     * @param {string | string[]} userId one user, or many (the `userIds` form)
     * @param {string} type
     * @param {object} [data]
     * @param {{requestId?: string, status?: "success"|"error"|"pending"}} [opts]
     */
    async progress(userId, type, data = {}, opts = {}) {
      const message = { ...compose(type, data, "pending", { status: opts.status }), ephemeral: true };
      const many = Array.isArray(userId);
      if (many) checkUserIds(userId);
      else if (!userId) throw new TypeError("progress needs userId");
      const body = many ? { userIds: userId, message } : { userId, message };
      if (opts.requestId != null) body.requestId = opts.requestId;
      try {
        return await post("/broadcast", body, undefined, 1);
      } catch (err) {
        if (err instanceof BroadcastError && err.retryable) return null;
        throw err;
      }
    },

    /**
     * A `status: "success"` notification.
     * @param {string} userId
     * @param {string} type
     * @param {object} [data]
     * @param {{requestId?: string, requiresAck?: boolean, idempotencyKey?: string}} [opts]
     */
    broadcastSuccess(userId, type, data = {}, opts = {}) {
      const message = { type, data, status: "success" };
      if (opts.requiresAck !== undefined) message.requiresAck = opts.requiresAck;
      return api.broadcastNotification({ userId, requestId: opts.requestId, message, idempotencyKey: opts.idempotencyKey });
    },

    /**
     * A `status: "error"` notification carrying the error's message.
     * @param {string} userId
     * @param {string} type
     * @param {unknown} error an Error or a string
     * @param {{requestId?: string, data?: object, requiresAck?: boolean, idempotencyKey?: string}} [opts]
     */
    broadcastError(userId, type, error, opts = {}) {
      const text = error instanceof Error ? error.message : typeof error === "string" ? error : JSON.stringify(error);
      const message = { type, data: opts.data ?? {}, status: "error", error: text || "error" };
      if (opts.requiresAck !== undefined) message.requiresAck = opts.requiresAck;
      return api.broadcastNotification({ userId, requestId: opts.requestId, message, idempotencyKey: opts.idempotencyKey });
    },

    /**
     * Publishes to one room (POST /rooms/{roomId}/broadcast).
     * @param {string} roomId
     * @param {object} message
     * @param {{idempotencyKey?: string}} [opts]
     */
    async publish(roomId, message, opts = {}) {
      const p = prepare(message, opts.idempotencyKey);
      return post(`/rooms/${encodeURIComponent(roomId)}/broadcast`, p.message, p.key);
    },
  };
  return api;
}
