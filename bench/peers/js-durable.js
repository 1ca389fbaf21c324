// js-hibernating plus one SQLite write per publish: what "a JS Durable Object that does the
// same durable write" costs. seq comes from the log, so it survives eviction.
import { DurableObject } from "cloudflare:workers";
import { workerFetch, readPublish, renderFrame, connectedFrame, json } from "./common.js";

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    const sql = ctx.storage.sql;
    sql.exec(`CREATE TABLE IF NOT EXISTS log (
      seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL,
      payload TEXT NOT NULL, created_at INTEGER NOT NULL)`);
    this.seq = sql.exec("SELECT COALESCE(MAX(seq), 0) AS s FROM log").one().s;
  }

  async fetch(request) {
    if (request.method === "POST") {
      const body = await readPublish(request);
      if (!body) return json(400, { success: false });
      const frame = renderFrame(body, this.seq + 1);
      const text = JSON.stringify(frame);
      this.ctx.storage.sql.exec(
        "INSERT INTO log (seq, id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)",
        frame.seq, frame.id, frame.type, text, Date.now(),
      );
      this.seq = frame.seq;
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
