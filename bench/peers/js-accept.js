// Non-hibernating variant: server.accept(), sockets kept in a Set by the object itself.
import { DurableObject } from "cloudflare:workers";
import { workerFetch, readPublish, renderFrame, connectedFrame, json } from "./common.js";

export class Room extends DurableObject {
  seq = 0;
  sockets = new Set();

  async fetch(request) {
    if (request.method === "POST") {
      const body = await readPublish(request);
      if (!body) return json(400, { success: false });
      const frame = renderFrame(body, this.seq + 1);
      this.seq = frame.seq;
      const text = JSON.stringify(frame);
      let count = 0;
      for (const ws of this.sockets) {
        try { ws.send(text); count++; } catch { this.sockets.delete(ws); }
      }
      return json(200, { success: true, broadcastCount: count, id: frame.id, seq: frame.seq });
    }
    const { 0: client, 1: server } = new WebSocketPair();
    server.accept();
    this.sockets.add(server);
    const drop = () => this.sockets.delete(server);
    server.addEventListener("close", (e) => {
      drop();
      try { server.close(e.code === 1005 ? 1000 : e.code); } catch {}
    });
    server.addEventListener("error", drop);
    server.send(connectedFrame(this.seq));
    return new Response(null, { status: 101, webSocket: client });
  }
}

export default { fetch: workerFetch };
