// useRealtime rendered in a real React tree (react-dom/client over a happy-dom document),
// connected to the real worker: what the component shows, the sockets it holds, cleanup.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { Window } from "happy-dom";
import WebSocket from "ws";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { pollUntil } from "./helpers.mjs";

// React DOM needs a document before it is loaded.
const win = new Window({ url: "http://localhost/" });
globalThis.window = win;
globalThis.document = win.document;
if (!("navigator" in globalThis)) globalThis.navigator = win.navigator; // Node 20 has none
const React = await import("react");
const { createRoot } = await import("react-dom/client");
const { useRealtime } = await import("../../client/react.js");
const h = React.createElement;

/** A WebSocket that keeps count of the sockets it has open (or opening), per room. */
const live = new Map();
class CountingWebSocket extends WebSocket {
  constructor(url, ...rest) {
    super(url, ...rest);
    const room = new URL(url).pathname.split("/")[2];
    live.set(room, (live.get(room) ?? 0) + 1);
    this.addEventListener("close", () => live.set(room, live.get(room) - 1));
  }
}
const liveCount = (room) => live.get(room) ?? 0;

let w;
before(async () => { w = await startWorker({ bindings: { ACK_RETRY_INTERVAL_MS: "300" } }); });
after(async () => {
  await w?.stop();
  await win.happyDOM.close();
});

let n = 0;
const uid = () => `h${process.pid}x${Date.now().toString(36)}x${n++}`;

/** The component under test shows what the hook returns. */
function Probe(props) {
  const { lastMessage, isConnected, connectionState } = useRealtime({ WebSocket: CountingWebSocket, url: w.base, ...props });
  return h("div", null,
    h("span", { id: "state" }, connectionState),
    h("span", { id: "connected" }, String(isConnected)),
    h("span", { id: "last" }, lastMessage ? `${lastMessage.seq}:${lastMessage.type}` : "none"));
}

const text = (container, id) => container.querySelector(`#${id}`)?.textContent;
const showing = (container, id, want) =>
  pollUntil(() => text(container, id) === want, 5000, 10).catch(() => {
    throw new Error(`#${id} shows ${JSON.stringify(text(container, id))}, expected ${JSON.stringify(want)}`);
  });

async function health(room) {
  const r = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
  return r.body;
}

test("mount in StrictMode: one socket per room, a real notification is shown, unmount closes", async () => {
  const u = uid();
  const req = `q${u}`;
  const rooms = [`user_${u}`, `request_${req}`];
  const messages = [];
  const connects = [];
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  root.render(h(React.StrictMode, null, h(Probe, {
    userId: u,
    requestId: req,
    token: tokenFor(u, { rooms: [`request_${req}`] }),
    onMessage: (m) => { messages.push(m); },
    onConnect: (info) => connects.push(info.roomId),
  })));
  await showing(container, "state", "connected");
  assert.equal(text(container, "connected"), "true");
  for (const room of rooms) {
    assert.equal(liveCount(room), 1, `one socket for ${room}`);
    assert.equal((await health(room)).connections, 1, `the server holds one connection in ${room}`);
  }
  assert.deepEqual(connects.sort(), [...rooms].sort());

  const r = await w.request("POST", "/broadcast", {
    headers: { authorization: `Bearer ${API_KEY}` },
    body: { userId: u, requestId: req, message: { type: "note.creation.completed", requiresAck: true } },
  });
  assert.equal(r.status, 200);
  await showing(container, "last", "1:note.creation.completed");
  assert.equal(messages.length, 1, "delivered once across both rooms");
  // Auto-acked after onMessage: both rooms settle.
  for (const room of rooms) {
    await pollUntil(async () => (await w.history(room)).body.notifications[0]?.deliveryStatus === "acked");
  }

  root.unmount();
  await pollUntil(() => rooms.every((room) => liveCount(room) === 0), 3000, 10);
  for (const room of rooms) {
    await pollUntil(async () => (await health(room)).connections === 0, 3000);
  }
  container.remove();
});

test("changing callbacks does not reconnect; changing requestId does", async () => {
  const u = uid();
  const token = tokenFor(u, { rooms: ["request_*"] });
  const container = document.createElement("div");
  document.body.appendChild(container);
  const root = createRoot(container);
  const got = [];
  let connects = 0;
  const props = (requestId, tag) => ({
    userId: u, requestId, token,
    onMessage: (m) => { got.push(`${tag}:${m.type}`); },
    onConnect: () => { connects++; },
  });
  root.render(h(Probe, props("a", "first")));
  await showing(container, "state", "connected");
  assert.equal(connects, 2);

  // New callback identities (a re-render): the same sockets, the newest callback is called.
  root.render(h(Probe, props("a", "second")));
  await w.publish(`user_${u}`, { type: "one.x" });
  await showing(container, "last", "1:one.x");
  assert.deepEqual(got, ["second:one.x"]);
  assert.equal(connects, 2, "no reconnect");
  assert.equal(liveCount(`request_a`) >= 1, true);

  // Another requestId: the request_a socket closes, request_b opens.
  root.render(h(Probe, props("b", "third")));
  await pollUntil(() => liveCount(`request_b`) === 1 && text(container, "state") === "connected", 5000, 10);
  await w.publish(`request_b`, { type: "two.x" });
  await showing(container, "last", "1:two.x");
  assert.deepEqual(got, ["second:one.x", "third:two.x"]);
  root.unmount();
  await pollUntil(() => liveCount(`user_${u}`) === 0 && liveCount("request_b") === 0 && liveCount("request_a") === 0, 3000, 10);
  container.remove();
});
