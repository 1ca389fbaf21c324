// The same room on partyserver (Cloudflare's PartyKit server library), hibernation on,
// routed with routePartykitRequest, broadcast with this.broadcast(JSON.stringify(msg)).
// Bundled by bench/run.mjs with esbuild into bench/build/partyserver.js.
import { Server, routePartykitRequest } from "partyserver";
import { readPublish, renderFrame, connectedFrame, json } from "./common.js";

const ROOM_PATH = /^\/rooms\/([A-Za-z0-9][A-Za-z0-9_.:-]{0,127})\/(subscribe|broadcast)$/;

export class Room extends Server {
  static options = { hibernate: true };
  seq = 0;

  onConnect(connection) {
    connection.send(connectedFrame(this.seq));
  }

  async onRequest(request) {
    if (request.method !== "POST") return json(405, { success: false });
    const body = await readPublish(request);
    if (!body) return json(400, { success: false });
    const frame = renderFrame(body, this.seq + 1);
    this.seq = frame.seq;
    this.broadcast(JSON.stringify(frame));
    const count = this.ctx.getWebSockets().length;
    return json(200, { success: true, broadcastCount: count, id: frame.id, seq: frame.seq });
  }
}

export default {
  async fetch(request, env) {
    const url = new URL(request.url);
    if (url.pathname === "/noop") return new Response(null, { status: 204 });
    const m = ROOM_PATH.exec(url.pathname);
    if (!m) return json(404, { success: false });
    const [, room, action] = m;
    if (action === "broadcast") {
      if (request.method !== "POST") return json(405, { success: false });
      if (request.headers.get("authorization") !== `Bearer ${env.BROADCAST_API_KEYS}`) {
        return json(401, { success: false });
      }
    }
    url.pathname = `/parties/rooms/${room}`;
    const routed = await routePartykitRequest(new Request(url, request), env);
    return routed ?? json(404, { success: false });
  },
};
