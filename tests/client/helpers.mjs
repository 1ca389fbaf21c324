// Helpers for the client tests: awaiting client events with a deadline, collecting what the app
// sees, free ports. Not a test file itself.
import net from "node:net";
import WebSocket from "ws";
import { RealtimeClient } from "../../client/roomcast.js";

/**
 * Resolves with the arguments of the first `event` for which `pred(...args)` holds; rejects
 * after `ms`. Listens from the moment it is called.
 */
export function waitForEvent(emitter, event, pred = () => true, ms = 5000) {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      off();
      reject(new Error(`no '${event}' event within ${ms} ms`));
    }, ms);
    const off = emitter.on(event, (...args) => {
      if (!pred(...args)) return;
      clearTimeout(t);
      off();
      resolve(args);
    });
  });
}

/** Resolves once the client's state is `state` (at once when it already is). */
export function waitForState(client, state, ms = 5000) {
  if (client.state === state) return Promise.resolve();
  return waitForEvent(client, "state", (s) => s === state, ms);
}

/**
 * Polls `fn` until it returns a truthy value (returned), for things only observable by asking
 * (the server's history); rejects with the last value after `ms`.
 */
export async function pollUntil(fn, ms = 5000, every = 25) {
  const deadline = Date.now() + ms;
  let last;
  for (;;) {
    last = await fn();
    if (last) return last;
    if (Date.now() > deadline) throw new Error(`condition not met within ${ms} ms: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, every));
  }
}

/** A promise with its resolve function outside. */
export function deferred() {
  let resolve, reject;
  const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
  return { promise, resolve, reject };
}

/** A free loopback port (closed again, so a server can take it). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * A RealtimeClient over the `ws` package with what the app saw recorded in `seen` (every
 * notification handed to the app, with its room) and every error in `errors`.
 */
export function makeClient(options) {
  const client = new RealtimeClient({ WebSocket, ...options });
  const seen = [];
  const errors = [];
  client.on("notification", (n, { roomId }) => { seen.push({ ...n, roomId }); });
  client.on("error", (e) => { errors.push(e); });
  return { client, seen, errors };
}

/** Resolves when `seen` holds at least `n` entries (checked on each notification). */
export function waitForCount(client, seen, n, ms = 5000) {
  if (seen.length >= n) return Promise.resolve();
  // The recording listener runs first (registered first), so `seen` is up to date here.
  return waitForEvent(client, "notification", () => seen.length >= n, ms);
}

/** Resolves true if no `event` arrives within `ms`. */
export function quiet(emitter, event, ms) {
  return new Promise((resolve) => {
    const off = emitter.on(event, () => { clearTimeout(t); off(); resolve(false); });
    const t = setTimeout(() => { off(); resolve(true); }, ms);
  });
}

/**
 * A `ws` WebSocket class that counts the sockets it was asked to open per room (refused ones
 * included), and how many of them are still open or opening.
 */
export function countingWebSocket() {
  const opened = new Map();
  const live = new Map();
  const bump = (map, room, by) => map.set(room, (map.get(room) ?? 0) + by);
  class CountingWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      const room = decodeURIComponent(new URL(url).pathname.split("/")[2]);
      bump(opened, room, 1);
      bump(live, room, 1);
      this.addEventListener("close", () => bump(live, room, -1));
    }
  }
  return {
    WebSocket: CountingWebSocket,
    opened: (room) => opened.get(room) ?? 0,
    live: (room) => live.get(room) ?? 0,
  };
}

/**
 * A `ws` WebSocket class the test can interfere with, standing in for a network that loses
 * frames or connections: `drop(frame)` (parsed JSON, or the raw text) decides which incoming
 * frames never reach the client (recorded in `dropped`); `kill(room)` ends a room's open sockets
 * without a close frame (as a lost connection would).
 */
export function controlledWebSocket() {
  const dropped = [];
  const open = new Set();
  /** `urls`: every socket's URL, oldest first. */
  const ctl = { drop: () => false, dropped, urls: [], WebSocket: null, kill: null };
  class ControlledWebSocket extends WebSocket {
    constructor(url, ...rest) {
      super(url, ...rest);
      this.room = decodeURIComponent(new URL(url).pathname.split("/")[2]);
      ctl.urls.push(url);
      open.add(this);
      this.addEventListener("close", () => open.delete(this));
    }

    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        let frame = ev.data;
        try { frame = JSON.parse(String(ev.data)); } catch { /* text frame */ }
        if (ctl.drop(frame, this.room)) {
          dropped.push(frame);
          return;
        }
        fn(ev);
      });
    }

    get onmessage() {
      return super.onmessage;
    }
  }
  ctl.WebSocket = ControlledWebSocket;
  ctl.kill = (room) => {
    let n = 0;
    for (const ws of open) if (ws.room === room) { ws.terminate(); n++; }
    return n;
  };
  return ctl;
}
