// Shared by the plain JavaScript peers: the Worker half (routing + API key) and the frame.
// Same HTTP surface as roomcast: POST /rooms/{room}/broadcast (Bearer key) -> JSON with a
// count and seq; GET /rooms/{room}/subscribe (WebSocket) -> first frame {"type":"connected"}.
// No JWT check on subscribe (roomcast verifies one per connect: see docs/benchmarks.md).

const ROOM_PATH = /^\/rooms\/([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})\/(subscribe|broadcast)$/;

export function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** The Worker entry point: checks route and key, forwards to the room's Durable Object. */
export function workerFetch(request, env) {
  const url = new URL(request.url);
  if (url.pathname === "/noop") return new Response(null, { status: 204 });
  const m = ROOM_PATH.exec(url.pathname);
  if (!m) return json(404, { success: false, error: { code: "not_found" } });
  const [, room, action] = m;
  if (action === "broadcast") {
    if (request.method !== "POST") return json(405, { success: false });
    if (request.headers.get("authorization") !== `Bearer ${env.BROADCAST_API_KEYS}`) {
      return json(401, { success: false, error: { code: "unauthorized" } });
    }
  } else if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
    return json(426, { success: false });
  }
  return env.ROOMS.get(env.ROOMS.idFromName(room)).fetch(request);
}

/** Reads a publish body (null if it is not one). Await this before taking a seq. */
export async function readPublish(request) {
  const body = await request.json().catch(() => null);
  return typeof body?.type === "string" ? body : null;
}

/**
 * The one frame every socket gets. Called synchronously with the seq it takes: an `await`
 * between taking a seq and sending would let concurrent publishes interleave.
 */
export function renderFrame(body, seq) {
  return {
    id: body.id ?? crypto.randomUUID(),
    seq,
    type: body.type,
    data: body.data ?? {},
    status: body.status ?? "success",
    timestamp: body.timestamp ?? new Date().toISOString(),
    requiresAck: false,
    attempt: 1,
  };
}

export const connectedFrame = (lastSeq) =>
  JSON.stringify({ type: "connected", lastSeq, serverTime: new Date().toISOString() });
