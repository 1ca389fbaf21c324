// usePresence and useEvent rendered in a real React tree (react-dom/client over a happy-dom
// document), connected to the real worker: who is online and who is typing, as a component shows
// them, with the provider's one client and without a provider. Then useRealtime() with no options
// under a RealtimeProvider that holds rooms for the whole tree (an app built around a provider, as
// Socket.IO-style apps are): subscribe, emit and the connectionState object.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { React, h, mount, closeDom } from "./react-dom.mjs";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
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

/**
 * What a component of a provider-level app does: `useRealtime()` with no options, a subscription
 * made once in an effect (each message recorded as "kind:type:room[:user]"), and the
 * connection shown from `connectionState`.
 */
function Board({ pattern, got, api }) {
  const r = useRealtime();
  const { subscribe } = r;
  api.current = r;
  React.useEffect(() => subscribe(pattern, (m, ctx) => {
    got.push(ctx.kind === "event" ? `event:${m.event}:${ctx.roomId}:${m.userId}` : `notification:${m.type}:${ctx.roomId}`);
  }), [subscribe, pattern, got]);
  const s = r.connectionState;
  const el = (name, value) => h("span", { id: name }, value);
  return h("div", null,
    el("status", s.status),
    el("attempt", String(s.reconnectAttempt)),
    el("since", s.lastConnectedAt === null ? "never" : "some"),
    el("error", s.error ? `${s.error.code}:${s.error.roomId}` : "none"),
    el("connected", String(r.isConnected)),
    el("last", r.lastMessage ? r.lastMessage.type : "none"));
}

test("useRealtime() under a provider: its rooms' notifications and events through subscribe, emit, connectionState", async (t) => {
  const u = uid();
  const team = `team_${u}`;
  const req = `r${u}`;
  const other = others(t, team);
  const { container, render } = mount(t);
  const got = [];
  const all = [];
  const api = { current: null };
  const token = tokenFor(u, { rooms: [team, `request_${req}`] });
  /** A component with its own room (a request room) on the provider's client. */
  function Upload() {
    useRealtime({ userId: u, requestId: req });
    return null;
  }
  function Everything() {
    const { subscribe } = useRealtime();
    React.useEffect(() => subscribe("*", (m) => { all.push(m.type ?? m.event); }), [subscribe]);
    return null;
  }
  const typing = [];
  function Typing() {
    const { subscribe } = useRealtime();
    React.useEffect(() => subscribe("typing.*", (e, ctx) => { typing.push(`${e.event}:${ctx.roomId}:${e.userId}`); }), [subscribe]);
    return null;
  }
  render(h(React.StrictMode, null,
    h(RealtimeProvider, { url: w.base, token, WebSocket: sockets.WebSocket, userId: u, rooms: [team] },
      h(Board, { pattern: "approval.*", got, api }), h(Everything), h(Typing), h(Upload))));
  await showing(container, "status", "connected");
  assert.equal(text(container, "connected"), "true");
  assert.equal(text(container, "attempt"), "0");
  assert.equal(text(container, "since"), "some");
  assert.equal(text(container, "error"), "none");
  for (const room of [team, `user_${u}`]) {
    assert.equal(sockets.opened(room), 1, `StrictMode's double mount opened one socket for ${room}`);
  }
  await pollUntil(() => api.current.client?.roomState(`request_${req}`) === "connected");

  // Notifications of both provider rooms reach the subscription; other types do not.
  await w.publish(`user_${u}`, { type: "approval.created", data: { id: 1 } });
  await w.publish(team, { type: "approval.updated" });
  await w.publish(team, { type: "chat.message" });
  await pollUntil(() => all.includes("chat.message"));
  assert.deepEqual(got, [`notification:approval.created:user_${u}`, `notification:approval.updated:${team}`]);
  await showing(container, "last", "chat.message");

  // A room the provider does not hold (another component's) is not the provider's: its
  // notification reaches no subscription. One published to it and to the user room does, once,
  // whichever socket brought it first.
  await w.publish(`request_${req}`, { type: "approval.elsewhere" });
  await w.request("POST", "/broadcast", {
    headers: { authorization: `Bearer ${API_KEY}` },
    body: { userId: u, requestId: req, message: { type: "approval.both" } },
  });
  await w.publish(team, { type: "marker.one" });
  await pollUntil(() => all.includes("marker.one"));
  assert.deepEqual(got.slice(2), [`notification:approval.both:user_${u}`]);
  assert.equal(all.filter((x) => x === "approval.both").length, 1);
  assert.ok(!all.includes("approval.elsewhere"));

  // Client events of the provider's rooms come through subscribe too, with who sent them.
  const bob = await other("bob");
  assert.equal(bob.emit(team, "typing.start"), true);
  await pollUntil(() => typing.length > 0);
  assert.deepEqual(typing, [`typing.start:${team}:bob`]);

  // emit: into the provider's first room (team) unless told; bob gets it with this user's id.
  const heard = [];
  bob.on("typing.*", (e) => { heard.push(`${e.event}:${e.userId}`); });
  assert.equal(api.current.emit("typing.start", { field: "title" }), true);
  await pollUntil(() => heard.length === 1);
  assert.deepEqual(heard, [`typing.start:${u}`]);
  // …or into another of its rooms: the user's other tab there hears it.
  const tab = await others(t, `user_${u}`)(u);
  const tabHeard = [];
  tab.on("typing.*", (e, ctx) => { tabHeard.push(`${e.event}:${ctx.roomId}`); });
  assert.equal(api.current.emit("typing.stop", undefined, { roomId: `user_${u}` }), true);
  await pollUntil(() => tabHeard.length === 1);
  assert.deepEqual(tabHeard, [`typing.stop:user_${u}`]);
  assert.deepEqual(heard, [`typing.start:${u}`], "bob is not in the user room");
  assert.equal(api.current.emit("typing.start", {}, { roomId: "team_not_held" }), false);
});

test("unsubscribe stops a handler; provider rooms follow its props, keeping the sockets of rooms that stay", async (t) => {
  const u = uid();
  const [ta, tb] = [`team_a${u}`, `team_b${u}`];
  const { container, render } = mount(t);
  const token = tokenFor(u, { rooms: [ta, tb] });
  const got = [];
  const api = { current: null };
  const tree = (rooms, board = true) => h(RealtimeProvider, { url: w.base, token, WebSocket: sockets.WebSocket, userId: u, rooms },
    board ? h(Board, { pattern: "*", got, api }) : null);
  render(tree([ta]));
  await showing(container, "status", "connected");
  const unsubscribe = api.current.subscribe("note.*", (m) => { got.push(`extra:${m.type}`); });
  await w.publish(ta, { type: "note.one" });
  await pollUntil(() => got.length === 2);
  assert.deepEqual(got.sort(), ["extra:note.one", `notification:note.one:${ta}`]);
  unsubscribe();
  unsubscribe(); // a second call does nothing
  await w.publish(ta, { type: "note.two" });
  await pollUntil(() => got.length === 3);
  assert.equal(got[2], `notification:note.two:${ta}`);

  // The provider moves to team b: team a is left, the user room's socket stays, and the same
  // subscription now gets team b's notifications.
  const subscribe = api.current.subscribe;
  render(tree([tb]));
  await pollUntil(() => sockets.live(ta) === 0 && sockets.live(tb) === 1, 3000, 10);
  await showing(container, "status", "connected");
  assert.equal(api.current.subscribe, subscribe, "one subscribe for the provider's life");
  assert.equal(sockets.opened(`user_${u}`), 1);
  await w.publish(tb, { type: "note.three" });
  await pollUntil(() => got.length === 4);
  assert.equal(got[3], `notification:note.three:${tb}`);
  assert.equal(api.current.emit("typing.start"), true, "emit goes to the new first room");
});

test("connectionState names a refused provider room; useRealtime() outside a provider throws a clear error", async (t) => {
  const u = uid();
  const { container, render } = mount(t);
  // The token allows the user room only.
  render(h(RealtimeProvider, { url: w.base, token: tokenFor(u), WebSocket: sockets.WebSocket, userId: u, rooms: [`team_x${u}`] },
    h(Board, { pattern: "*", got: [], api: { current: null } })));
  await showing(container, "status", "error");
  assert.equal(text(container, "error"), `forbidden:team_x${u}`);
  assert.equal(text(container, "connected"), "false");

  class Catch extends React.Component {
    constructor(props) { super(props); this.state = { error: null }; }
    static getDerivedStateFromError(error) { return { error }; }
    render() { return this.state.error ? h("span", { id: "caught" }, this.state.error.message) : this.props.children; }
  }
  function Orphan() {
    useRealtime();
    return null;
  }
  // React reports a caught render error on the console too; that is expected here.
  const quiet = t.mock.method(console, "error", () => {});
  t.after(() => quiet.mock.restore());
  const orphan = mount(t);
  orphan.render(h(Catch, null, h(Orphan)));
  await pollUntil(() => text(orphan.container, "caught") !== undefined, 3000, 10);
  assert.match(text(orphan.container, "caught"), /useRealtime\(\) with no options uses the rooms of a RealtimeProvider, and there is none/);
  // A provider's rooms are room ids.
  const wrong = mount(t);
  wrong.render(h(Catch, null, h(RealtimeProvider, { rooms: "team_1", enabled: false })));
  await pollUntil(() => text(wrong.container, "caught") !== undefined, 3000, 10);
  assert.match(text(wrong.container, "caught"), /rooms must be an array of room ids/);
});
