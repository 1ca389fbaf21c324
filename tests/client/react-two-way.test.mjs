// usePresence and useEvent rendered in a real React tree (react-dom/client over a happy-dom
// document), connected to the real worker: who is online and who is typing, as a component shows
// them, with the provider's one client and without a provider.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { React, h, mount, closeDom } from "./react-dom.mjs";
import { startWorker, tokenFor } from "../support/harness.mjs";
import { RealtimeClient } from "../../client/roomcast.js";
import { pollUntil, countingWebSocket, waitForState } from "./helpers.mjs";

const { RealtimeProvider, useRealtime, usePresence, useEvent, useRealtimeClient } = await import("../../client/react.js");

const sockets = countingWebSocket();
let w;
before(async () => { w = await startWorker({ bindings: { CLIENT_EVENT_TYPES: "typing.*" } }); });
after(async () => {
  await w?.stop();
  await closeDom();
});

let n = 0;
const uid = () => `p${process.pid}x${Date.now().toString(36)}x${n++}`;

/** Other users, as plain clients, closed after the test. */
function others(t, room) {
  const made = [];
  t.after(() => Promise.all(made.map((c) => c.close())));
  return async (sub, options = {}) => {
    const c = new RealtimeClient({ url: w.base, rooms: [room], token: tokenFor(sub, { rooms: [room] }), WebSocket, ...options });
    made.push(c);
    await waitForState(c, "connected");
    return c;
  };
}

const text = (container, id) => container.querySelector(`#${id}`)?.textContent;
const showing = (container, id, want, ms = 5000) =>
  pollUntil(() => text(container, id) === want, ms, 10).catch(() => {
    throw new Error(`#${id} shows ${JSON.stringify(text(container, id))}, expected ${JSON.stringify(want)}`);
  });

/** Who is online: "alice(here),bob" — a user's `status` in brackets. */
function Online({ room, id = "online", options }) {
  const { users, count } = usePresence(room, options);
  const list = users.map((u) => (u.state.status ? `${u.userId}(${u.state.status})` : u.userId)).join(",");
  return h("div", null, h("span", { id }, list), h("span", { id: `${id}-count` }, String(count)));
}

/** Who is typing, from typing.start / typing.stop events; the last event's name. */
function Typing({ room, onEmit }) {
  const [typing, setTyping] = React.useState(() => new Set());
  const { last, emit } = useEvent(room, "typing.*", (e) => {
    setTyping((prev) => {
      const next = new Set(prev);
      if (e.event === "typing.start") next.add(e.userId); else next.delete(e.userId);
      return next;
    });
  });
  onEmit.current = emit;
  return h("div", null,
    h("span", { id: "typing" }, [...typing].sort().join(",")),
    h("span", { id: "last" }, last ? `${last.event}:${last.userId}` : "none"));
}

function SetState({ room, state }) {
  const { setPresence } = usePresence(room);
  React.useEffect(() => { if (state) setPresence(state); }, [setPresence, state]);
  return null;
}

test("inside a provider: who is online and who is typing, live, on one shared client", async (t) => {
  const room = `team_${uid()}`;
  const other = others(t, room);
  const { container, render } = mount(t);
  const emitRef = { current: null };
  const clients = new Set();
  function ShowClient() {
    const c = useRealtimeClient();
    if (c) clients.add(c);
    return null;
  }
  const tree = (children) => h(React.StrictMode, null,
    h(RealtimeProvider, { url: w.base, token: tokenFor("alice", { rooms: [room] }), WebSocket: sockets.WebSocket },
      h(ShowClient), ...children));

  // First only events: the room is held without presence.
  render(tree([h(Typing, { key: "t", room, onEmit: emitRef })]));
  await pollUntil(() => sockets.live(room) === 1 && [...clients][0]?.roomState(room) === "connected");
  assert.equal(sockets.opened(room), 1, "StrictMode's double mount opened one socket");

  // A presence list joins the tree: the same client's room reopens once with presence on.
  render(tree([h(Typing, { key: "t", room, onEmit: emitRef }), h(Online, { key: "o", room }), h(SetState, { key: "s", room, state: { status: "here" } })]));
  await showing(container, "online", "alice(here)");
  assert.equal(sockets.opened(room), 2);
  assert.equal(sockets.live(room), 1);
  assert.equal(clients.size, 1, "one client for the tree");

  const bob = await other("bob", { presence: true });
  await showing(container, "online", "alice(here),bob");
  await showing(container, "online-count", "2");
  bob.setPresence(room, { status: "away" });
  await showing(container, "online", "alice(here),bob(away)");
  // Bob sees alice's state too.
  await pollUntil(() => bob.presence(room).get("alice")?.state.status === "here");

  assert.equal(bob.emit(room, "typing.start", {}), true);
  await showing(container, "typing", "bob");
  await showing(container, "last", "typing.start:bob");
  const carol = await other("carol");
  await showing(container, "online", "alice(here),bob(away),carol");
  carol.emit(room, "typing.start");
  await showing(container, "typing", "bob,carol");
  bob.emit(room, "typing.stop");
  await showing(container, "typing", "carol");
  await showing(container, "last", "typing.stop:bob");

  // The hook's emit reaches the others.
  const got = [];
  bob.on("typing.*", (e) => got.push(`${e.event}:${e.userId}`));
  assert.equal(emitRef.current("typing.start", { field: "title" }), true);
  await pollUntil(() => got.length === 1);
  assert.deepEqual(got, ["typing.start:alice"]);

  await bob.close();
  await showing(container, "online", "alice(here),carol");
  await showing(container, "online-count", "2");
});

test("without a provider, usePresence has its own client; unmounting leaves the room", async (t) => {
  const u = uid();
  const room = `team_${u}`;
  const other = others(t, room);
  const { container, render, unmount } = mount(t);
  const options = { url: w.base, token: tokenFor("dora", { rooms: [room] }), WebSocket: sockets.WebSocket };
  function Page() {
    useRealtime({ userId: "dora", url: w.base, token: tokenFor("dora"), WebSocket: sockets.WebSocket });
    return h(Online, { room, options });
  }
  render(h(Page));
  await showing(container, "online", "dora");
  const ed = await other("ed", { presence: true });
  await showing(container, "online", "dora,ed");
  await pollUntil(() => [...ed.presence(room).keys()].join() === "dora,ed");
  unmount();
  await pollUntil(() => [...ed.presence(room).keys()].join() === "ed", 5000);
  await pollUntil(() => sockets.live(room) === 0 && sockets.live("user_dora") === 0, 3000);
});
