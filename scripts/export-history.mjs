#!/usr/bin/env node
// Exports a room's history to JSON Lines, for audit or to keep it longer than the room does.
//
//   ROOMCAST_URL=https://rt.example.com ROOMCAST_API_KEY=… \
//     node scripts/export-history.mjs --room=user_42 --out=user_42.jsonl
//
// Each line is one stored notification as GET /rooms/{room}/history returns it (the frame
// fields plus deliveryStatus, attempts, ackedAt, ackedBy, …) with "roomId" first. Lines are in
// seq order. Run it again with the same --out and it continues after the last seq already in
// the file, so it can run on a schedule, or be interrupted and resumed, without writing any
// notification twice. A line cut off by an interruption is dropped and fetched again.
//
// Options (flags win over the environment):
//   --url=<base>        or ROOMCAST_URL       the roomcast Worker
//   --api-key=<key>     or ROOMCAST_API_KEY   one of BROADCAST_API_KEYS
//   --room=<id>         the room to export (required)
//   --out=<file>        the JSON Lines file to create or continue (required)
//   --since=<seq>       start after this seq instead of after the file's last line
//   --page-size=<n>     notifications per request, 1..1000 (default 1000)
//   --max-pages=<n>     stop after n requests (run again to continue)
//
// Notes: the export holds what the room still has. Notifications pruned before an export (by
// HISTORY_LIMIT or HISTORY_TTL_SECONDS) are gone; the script says which seqs are missing.
// Entries are exported as they are at the time: a notification still pending is exported as
// pending and is not updated by a later run (the file is append-only).
import { open, stat } from "node:fs/promises";

const USAGE = `usage: node scripts/export-history.mjs --room=<id> --out=<file> [--url=<base>] [--api-key=<key>]
       [--since=<seq>] [--page-size=<1..1000>] [--max-pages=<n>]
       (--url and --api-key default to ROOMCAST_URL and ROOMCAST_API_KEY)`;
const FLAGS = ["url", "api-key", "room", "out", "since", "page-size", "max-pages"];
const ROOM_ID = /^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/;

class UsageError extends Error {}
class ExportError extends Error {}

function parseArgs(argv, env) {
  const o = {};
  for (const a of argv) {
    if (a === "--help" || a === "-h") { console.log(USAGE); process.exit(0); }
    const m = /^--([a-z-]+)=(.*)$/s.exec(a);
    if (!m || !FLAGS.includes(m[1])) throw new UsageError(`unknown argument: ${a}`);
    o[m[1]] = m[2];
  }
  const url = o.url ?? env.ROOMCAST_URL;
  const key = o["api-key"] ?? env.ROOMCAST_API_KEY;
  if (!url) throw new UsageError("no server: pass --url or set ROOMCAST_URL");
  if (!key) throw new UsageError("no API key: pass --api-key or set ROOMCAST_API_KEY");
  if (!o.room) throw new UsageError("--room is required");
  if (!ROOM_ID.test(o.room)) throw new UsageError(`invalid room id: ${JSON.stringify(o.room)}`);
  if (!o.out) throw new UsageError("--out is required (the file to create or continue)");
  let base;
  try { base = new URL(url); } catch { throw new UsageError(`not a URL: ${url}`); }
  if (!/^https?:$/.test(base.protocol)) throw new UsageError(`the URL must be http(s): ${url}`);
  const int = (name, lo, hi) => {
    if (o[name] === undefined) return undefined;
    const n = Number(o[name]);
    if (!Number.isSafeInteger(n) || n < lo || n > hi) throw new UsageError(`--${name} must be an integer in ${lo}..${hi}`);
    return n;
  };
  return {
    base: base.href.replace(/\/$/, ""),
    key,
    room: o.room,
    out: o.out,
    since: int("since", 0, Number.MAX_SAFE_INTEGER),
    pageSize: int("page-size", 1, 1000) ?? 1000,
    maxPages: int("max-pages", 1, Number.MAX_SAFE_INTEGER),
  };
}

/**
 * The file's last complete line (parsed) and where it ends; a trailing partial line (an export
 * cut off mid-write) is reported so it can be cut away.
 */
async function tail(fh) {
  const { size } = await fh.stat();
  if (size === 0) return { size, end: 0, last: null };
  let pos = size;
  let buf = Buffer.alloc(0);
  const chunk = 64 * 1024;
  // Read backwards until the buffer holds the end of the last complete line and its start.
  for (;;) {
    const from = Math.max(0, pos - chunk);
    const part = Buffer.alloc(pos - from);
    await fh.read(part, 0, part.length, from);
    buf = Buffer.concat([part, buf]);
    pos = from;
    const lastNl = buf.lastIndexOf(10);
    if (lastNl === -1) {
      if (pos === 0) return { size, end: 0, last: null }; // one partial line only
      continue;
    }
    const prevNl = buf.lastIndexOf(10, lastNl - 1);
    if (prevNl === -1 && pos > 0) continue;
    const line = buf.subarray(prevNl + 1, lastNl).toString("utf8");
    const end = pos + lastNl + 1;
    let last;
    try { last = JSON.parse(line); } catch {
      throw new ExportError(`the last complete line of the output file is not JSON; is it an export? (${line.slice(0, 80)}…)`);
    }
    return { size, end, last };
  }
}

async function page(o, since) {
  const url = `${o.base}/rooms/${encodeURIComponent(o.room)}/history?since=${since}&limit=${o.pageSize}`;
  let res;
  try {
    res = await fetch(url, { headers: { authorization: `Bearer ${o.key}`, accept: "application/json" } });
  } catch (e) {
    throw new ExportError(`could not reach ${o.base}: ${e.cause?.message ?? e.message}`);
  }
  const text = await res.text();
  let body;
  try { body = JSON.parse(text); } catch {
    throw new ExportError(`${url} answered ${res.status} with something that is not JSON: ${text.slice(0, 200)}`);
  }
  if (res.status === 401) throw new ExportError(`the API key was refused (401): ${body.error?.message ?? text}`);
  if (!res.ok || body.success !== true) {
    throw new ExportError(`${url} answered ${res.status}: ${body.error?.code ?? ""} ${body.error?.message ?? text.slice(0, 200)}`.trim());
  }
  if (!Array.isArray(body.notifications)) throw new ExportError(`${url}: no notifications array in the answer`);
  return body;
}

async function main() {
  const o = parseArgs(process.argv.slice(2), process.env);
  const existed = await stat(o.out).then(() => true, () => false);
  // A new file is created only once the server has answered: a refused export leaves nothing.
  let fh = existed ? await open(o.out, "r+") : null;
  const file = async () => (fh ??= await open(o.out, "wx"));
  try {
    const t = fh ? await tail(fh) : { size: 0, end: 0, last: null };
    if (t.last && t.last.roomId !== o.room) {
      throw new ExportError(`${o.out} holds room ${JSON.stringify(t.last.roomId)}, not ${JSON.stringify(o.room)}`);
    }
    if (t.last && o.since !== undefined && o.since < t.last.seq) {
      throw new ExportError(`--since=${o.since} is before the file's last seq ${t.last.seq}: that would write notifications twice`);
    }
    if (t.end < t.size) {
      // The previous run was cut off mid-line: drop the partial line and fetch it again.
      await fh.truncate(t.end);
      console.error(`export: dropped a partial last line (${t.size - t.end} bytes) left by an interrupted run`);
    }
    let since = o.since ?? t.last?.seq ?? 0;
    let pos = t.end;
    let pages = 0;
    let written = 0;
    let first = null;
    let lastSeq = since;
    for (;;) {
      if (o.maxPages !== undefined && pages >= o.maxPages) {
        console.error(`export: stopped after ${pages} page(s) (--max-pages); run again to continue after seq ${lastSeq}`);
        break;
      }
      const body = await page(o, since);
      pages++;
      const ns = body.notifications;
      if (ns.length && ns[0].seq > since + 1) {
        console.error(`export: seqs ${since + 1}..${ns[0].seq - 1} are no longer in the room's history (pruned before this export)`);
      }
      if (ns.length) {
        let lines = "";
        let prev = since;
        for (const n of ns) {
          if (!(Number.isSafeInteger(n.seq) && n.seq > prev)) {
            throw new ExportError(`the server returned seq ${n.seq} after ${prev}: not in order; nothing of this page was written`);
          }
          prev = n.seq;
          lines += `${JSON.stringify({ roomId: o.room, ...n })}\n`;
        }
        const bytes = Buffer.from(lines);
        const out = await file();
        await out.write(bytes, 0, bytes.length, pos);
        await out.datasync();
        pos += bytes.length;
        written += ns.length;
        first ??= ns[0].seq;
        since = lastSeq = prev;
      }
      if (!body.hasMore || ns.length === 0) {
        await file(); // an empty room still gets its (empty) file
        const span = written ? ` (seq ${first}..${lastSeq})` : "";
        console.error(`export: ${written} notification(s) written to ${o.out}${span}; up to date with ${o.room} at seq ${body.lastSeq}`);
        break;
      }
    }
  } finally {
    await fh?.close();
  }
}

main().catch((e) => {
  if (e instanceof UsageError) {
    console.error(`export: ${e.message}\n${USAGE}`);
    process.exit(2);
  }
  console.error(`export: ${e instanceof ExportError ? e.message : e.stack ?? e}`);
  process.exit(1);
});
