// Diagnostic peer (bench/diag.mjs), not in the main table: js-durable reshaped step by step
// toward what roomcast's room does per publish, to price each step in plain JS.
//   env.DIAG_SCHEMA = "1": roomcast's log schema (14 columns, unique id and key, two indexes,
//     the AFTER INSERT trigger that updates three meta rows) and its two prune DELETEs.
//   env.DIAG_LOG = "1": one structured console.log line per publish, like roomcast's.
import { DurableObject } from "cloudflare:workers";
import { workerFetch, readPublish, renderFrame, connectedFrame, json } from "./common.js";

const SCHEMA = [
  "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value)",
  `CREATE TABLE IF NOT EXISTS notifications (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, type TEXT NOT NULL, payload TEXT NOT NULL,
    status TEXT NOT NULL, requires_ack INTEGER NOT NULL, created_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL, last_attempt_at INTEGER, acked_at INTEGER, acked_by TEXT,
    delivery TEXT NOT NULL, idempotency_key TEXT UNIQUE, broadcast_count INTEGER NOT NULL)`,
  "CREATE INDEX IF NOT EXISTS notifications_pending ON notifications(seq) WHERE delivery = 'pending'",
  "CREATE INDEX IF NOT EXISTS notifications_created ON notifications(created_at)",
  `CREATE TRIGGER IF NOT EXISTS notifications_appended AFTER INSERT ON notifications BEGIN
    UPDATE meta SET value = CASE key
      WHEN 'last_seq' THEN MAX(value, NEW.seq)
      WHEN 'publishes' THEN value + 1
      ELSE NEW.created_at END
    WHERE key IN ('last_seq', 'publishes', 'last_broadcast_at');
  END`,
  `CREATE TRIGGER IF NOT EXISTS notifications_pruned AFTER DELETE ON notifications BEGIN
    UPDATE meta SET value = MAX(value, OLD.seq) WHERE key = 'pruned_through';
  END`,
  "INSERT OR IGNORE INTO meta (key, value) VALUES ('last_seq', 0), ('pruned_through', 0), ('publishes', 0), ('last_broadcast_at', 0)",
];

export class Room extends DurableObject {
  constructor(ctx, env) {
    super(ctx, env);
    this.schema = env.DIAG_SCHEMA === "1";
    this.log = env.DIAG_LOG === "1";
    const sql = ctx.storage.sql;
    if (this.schema) {
      for (const s of SCHEMA) sql.exec(s);
      this.seq = sql.exec("SELECT value FROM meta WHERE key = 'last_seq'").one().value;
    } else {
      sql.exec("CREATE TABLE IF NOT EXISTS log (seq INTEGER PRIMARY KEY, id TEXT NOT NULL, type TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL)");
      this.seq = sql.exec("SELECT COALESCE(MAX(seq), 0) AS s FROM log").one().s;
    }
  }

  async fetch(request) {
    if (request.method === "POST") {
      const body = await readPublish(request);
      if (!body) return json(400, { success: false });
      const frame = renderFrame(body, this.seq + 1);
      const text = JSON.stringify(frame);
      const sockets = this.ctx.getWebSockets();
      const sql = this.ctx.storage.sql;
      const now = Date.now();
      if (this.schema) {
        sql.exec(
          `INSERT INTO notifications (seq, id, type, payload, status, requires_ack, created_at,
             attempts, last_attempt_at, delivery, idempotency_key, broadcast_count)
           VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
          frame.seq, frame.id, frame.type, text, "success", 0, now, 1, now, "sent", null, sockets.length,
        );
        sql.exec("DELETE FROM notifications WHERE delivery <> 'pending' AND seq <= ?", Math.max(0, frame.seq - 1000));
        sql.exec("DELETE FROM notifications WHERE delivery <> 'pending' AND created_at < ?", now - 604800_000);
      } else {
        sql.exec("INSERT INTO log (seq, id, type, payload, created_at) VALUES (?, ?, ?, ?, ?)",
          frame.seq, frame.id, frame.type, text, now);
      }
      this.seq = frame.seq;
      let count = 0;
      for (const ws of sockets) { try { ws.send(text); count++; } catch {} }
      if (this.log) {
        console.log(JSON.stringify({ event: "publish", room: "diag", id: frame.id, seq: frame.seq,
          type: frame.type, requiresAck: false, broadcastCount: count }));
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
