// The platform's floor: the original TypeScript design in plain JS. Hibernatable sockets
// (ctx.acceptWebSocket / ctx.getWebSockets), JSON.stringify once per publish, send to each.
import { DurableObject } from "cloudflare:workers";
import { workerFetch, readPublish, renderFrame, connectedFrame, json } from "./common.js";

export class Room extends DurableObject {
  seq = 0;

  async fetch(request) {
    if (request.method === "POST") {
      const body = await readPublish(request);
      if (!body) return json(400, { success: false });
      const frame = renderFrame(body, this.seq + 1);
      this.seq = frame.seq;
      const text = JSON.stringify(frame);
      let count = 0;
      for (const ws of this.ctx.getWebSockets()) {
        try { ws.send(text); count++; } catch {}
      }
      return json(200, { success: true, broadcastCount: count, id: frame.id, seq: frame.seq });
    }
    const { 0: client, 1: server } = new WebSocketPair();
    this.ctx.acceptWebSocket(server);
    server.send(connectedFrame(this.seq));
    return new Response(null, { status: 101, webSocket: client });
  }

  webSocketMessage() {}
  webSocketClose(ws, code) { try { ws.close(code === 1005 ? 1000 : code); } catch {} }
}

export default { fetch: workerFetch };
