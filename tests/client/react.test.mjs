// useRealtime and RealtimeProvider rendered in a real React tree (react-dom/client over a
// happy-dom document), connected to the real worker: what the components show, the sockets
// they hold, cleanup. Every mounted tree is unmounted after its test even when the test fails,
// so a failure never leaves clients reconnecting (and the runner waiting) forever.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { React, h, mount, closeDom } from "./react-dom.mjs";
import { startWorker, tokenFor, signHs256, API_KEY } from "../support/harness.mjs";
import { pollUntil, countingWebSocket } from "./helpers.mjs";

const { useRealtime, RealtimeProvider, useRealtimeClient } = await import("../../client/react.js");

const sockets = countingWebSocket();
const liveCount = sockets.live;
const openedCount = sockets.opened;

let w;
before(async () => { w = await startWorker({ bindings: { ACK_RETRY_INTERVAL_MS: "300" } }); });
after(async () => {
  await w?.stop();
  await closeDom();
});

let n = 0;
const uid = () => `h${process.pid}x${Date.now().toString(36)}x${n++}`;

/** The component under test shows what the hook returns. */
function Probe({ id = "", ...props }) {
  const r = useRealtime({ WebSocket: sockets.WebSocket, url: w.base, ...props });
  const el = (name, value) => h("span", { id: `${name}${id}` }, value);
  return h("div", null,
    el("state", r.connectionState),
    el("connected", String(r.isConnected)),
    el("attempt", String(r.connection.attempt)),
    el("since", r.connection.lastConnectedAt === null ? "never" : "some"),
    el("error", r.error ? `${r.error.code}:${r.error.roomId}` : "none"),
    el("last", r.lastMessage ? `${r.lastMessage.seq}:${r.lastMessage.type}` : "none"),
    el("list", r.notifications.map((m) => m.type).join(",")));
}

const text = (container, id) => container.querySelector(`#${id}`)?.textContent;
const showing = (container, id, want, ms = 5000) =>
  pollUntil(() => text(container, id) === want, ms, 10).catch(() => {
    throw new Error(`#${id} shows ${JSON.stringify(text(container, id))}, expected ${JSON.stringify(want)}`);
  });

async function health(room) {
  const r = await w.request("GET", `/rooms/${room}/health`, { headers: { authorization: `Bearer ${API_KEY}` } });
  return r.body;
}

test("mount in StrictMode: one socket per room, a real notification is shown, unmount closes", async (t) => {
  const u = uid();
  const req = `q${u}`;
  const rooms = [`user_${u}`, `request_${req}`];
  const messages = [];
  const connects = [];
  const { container, render, unmount } = mount(t);
  render(h(React.StrictMode, null, h(Probe, {
    userId: u,
    requestId: req,
    token: tokenFor(u, { rooms: [`request_${req}`] }),
    onMessage: (m) => { messages.push(m); },
    onConnect: (info) => connects.push(info.roomId),
  })));
  await showing(container, "state", "connected");
  assert.equal(text(container, "connected"), "true");
  assert.equal(text(container, "attempt"), "0");
  assert.equal(text(container, "since"), "some");
  assert.equal(text(container, "error"), "none");
  for (const room of rooms) {
    assert.equal(liveCount(room), 1, `one socket for ${room}`);
    assert.equal(openedCount(room), 1, `StrictMode's double mount opened no second socket for ${room}`);
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
  assert.equal(text(container, "list"), "", "no list without `keep`");
  // Auto-acked after onMessage: both rooms settle.
  for (const room of rooms) {
    await pollUntil(async () => (await w.history(room)).body.notifications[0]?.deliveryStatus === "acked");
  }

  unmount();
  await pollUntil(() => rooms.every((room) => liveCount(room) === 0), 3000, 10);
  for (const room of rooms) {
    await pollUntil(async () => (await health(room)).connections === 0, 3000);
  }
});

test("changing callbacks does not reconnect; changing requestId keeps the user socket and resumes request rooms", async (t) => {
  const u = uid();
  const [ra, rb] = [`a-${u}`, `b-${u}`];
  const token = tokenFor(u, { rooms: ["request_*"] });
  const { container, render, unmount } = mount(t);
  const got = [];
  let connects = 0;
  const props = (requestId, tag) => ({
    userId: u, requestId, token, keep: 10,
    onMessage: (m) => { got.push(`${tag}:${m.type}`); },
    onConnect: () => { connects++; },
  });
  render(h(Probe, props(ra, "first")));
  await showing(container, "state", "connected");
  assert.equal(connects, 2);

  // New callback identities (a re-render): the same sockets, the newest callback is called.
  render(h(Probe, props(ra, "second")));
  await w.publish(`user_${u}`, { type: "one.x" });
  await showing(container, "last", "1:one.x");
  assert.deepEqual(got, ["second:one.x"]);
  assert.equal(connects, 2, "no reconnect");

  // The upload flow: the job publishes to request_b before the page switches to it. Joined from
  // seq 0, the page still gets it.
  await w.publish(`request_${rb}`, { type: "two.early" });
  render(h(Probe, props(rb, "third")));
  await showing(container, "last", "1:two.early");
  // `connected` only once request_b's socket said so: the room has registered it.
  await showing(container, "state", "connected");
  await w.publish(`request_${rb}`, { type: "two.live" });
  await showing(container, "last", "2:two.live");
  assert.equal(openedCount(`user_${u}`), 1, "the user room's socket was kept");
  assert.equal(liveCount(`user_${u}`), 1);
  await pollUntil(() => liveCount(`request_${ra}`) === 0, 3000, 10);

  // Back to request_a: it resumes after its last seq (nothing missed, nothing twice).
  await w.publish(`request_${ra}`, { type: "three.while-away" });
  render(h(Probe, props(ra, "fourth")));
  await showing(container, "last", "1:three.while-away");
  await showing(container, "state", "connected");
  assert.deepEqual(got, ["second:one.x", "third:two.early", "third:two.live", "fourth:three.while-away"]);
  assert.equal(text(container, "list"), "three.while-away,two.live,two.early,one.x", "newest first");
  assert.equal(openedCount(`user_${u}`), 1);
  assert.equal(openedCount(`request_${ra}`), 2);
  assert.equal(openedCount(`request_${rb}`), 1);
  unmount();
  await pollUntil(() => [`user_${u}`, `request_${ra}`, `request_${rb}`].every((r) => liveCount(r) === 0), 3000, 10);
});

test("`keep` bounds the list: the newest first, at most `keep`", async (t) => {
  const u = uid();
  const { container, render } = mount(t);
  render(h(Probe, { userId: u, token: tokenFor(u), keep: 3 }));
  await showing(container, "state", "connected");
  for (let i = 1; i <= 5; i++) await w.publish(`user_${u}`, { type: `n${i}` });
  await showing(container, "last", "5:n5");
  assert.equal(text(container, "list"), "n5,n4,n3");
});

test("a refused room: `error` names it, the state says error, and nothing reconnects", async (t) => {
  const u = uid();
  const { container, render } = mount(t);
  const errors = [];
  // Allowed in its user room, not in this request room.
  render(h(Probe, {
    userId: u, requestId: `x-${u}`, token: tokenFor(u), onError: (e) => errors.push(e),
    clientOptions: { initialDelayMs: 20, maxDelayMs: 40 },
  }));
  await showing(container, "error", `forbidden:request_x-${u}`);
  assert.equal(text(container, "state"), "error");
  assert.equal(errors.filter((e) => e.fatal).length, 1);
  assert.match(errors[0].message, /not allowed in this room/);
  await pollUntil(() => liveCount(`user_${u}`) === 1, 3000, 10);

  // A wrong token: `unauthorized` after asking getToken once more (it had only the same one, so
  // no second socket), then nothing.
  const v = uid();
  const wrong = signHs256({ sub: v, exp: Math.floor(Date.now() / 1000) + 3600 }, "another-secret-0123456789abcdef0123");
  const other = mount(t);
  let asked = 0;
  other.render(h(Probe, { userId: v, getToken: () => { asked++; return wrong; }, clientOptions: { initialDelayMs: 20 } }));
  await showing(other.container, "error", `unauthorized:user_${v}`);
  assert.equal(asked, 2);
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(openedCount(`user_${v}`), 1, "no attempt after the fatal error");
  assert.equal(openedCount(`request_x-${u}`), 1);
});

test("RealtimeProvider: hooks share one client and one socket per room; rooms close with their last hook", async (t) => {
  const u = uid();
  const [ra, rb] = [`pa-${u}`, `pb-${u}`];
  const { container, render, unmount } = mount(t);
  const clients = new Set();
  function ShowClient() {
    const c = useRealtimeClient();
    if (c) clients.add(c);
    return null;
  }
  const tree = (showB) => h(React.StrictMode, null,
    h(RealtimeProvider, { url: w.base, token: tokenFor(u, { rooms: ["request_*"] }), WebSocket: sockets.WebSocket },
      h(ShowClient),
      h(Probe, { id: "A", userId: u, requestId: ra, keep: 5 }),
      showB ? h(Probe, { id: "B", userId: u, requestId: rb, keep: 5 }) : null));
  render(tree(true));
  await showing(container, "stateA", "connected");
  await showing(container, "stateB", "connected");
  assert.equal(clients.size, 1, "one client for the tree");
  assert.equal(openedCount(`user_${u}`), 1, "one socket for the user room, shared by both hooks");
  assert.equal((await health(`user_${u}`)).connections, 1);

  // A publish to the user and request_b rooms: both hooks show it once; only B has request_b.
  await w.request("POST", "/broadcast", {
    headers: { authorization: `Bearer ${API_KEY}` },
    body: { userId: u, requestId: rb, message: { type: "shared.x" } },
  });
  await showing(container, "listA", "shared.x");
  await showing(container, "listB", "shared.x");
  await w.publish(`request_${ra}`, { type: "only.a" });
  await showing(container, "listA", "only.a,shared.x");
  assert.equal(text(container, "listB"), "shared.x");

  // B unmounts: request_b closes, the shared user room stays.
  render(tree(false));
  await pollUntil(() => liveCount(`request_${rb}`) === 0, 3000, 10);
  assert.equal(liveCount(`user_${u}`), 1);
  assert.equal(liveCount(`request_${ra}`), 1);
  assert.equal(text(container, "stateA"), "connected");

  unmount();
  await pollUntil(() => [`user_${u}`, `request_${ra}`].every((r) => liveCount(r) === 0), 3000, 10);
  assert.equal(openedCount(`user_${u}`), 1);
});
