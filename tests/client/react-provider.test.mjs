// useRealtime() with no options under a RealtimeProvider that holds rooms for the whole tree (an
// app built around a provider, as Socket.IO-style apps are): subscribe, emit and the
// connectionState object, rendered in a real React tree (react-dom/client over a happy-dom
// document) against the real worker, with other users as plain clients.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { React, h, mount, closeDom } from "./react-dom.mjs";
import { startWorker, tokenFor, API_KEY } from "../support/harness.mjs";
import { RealtimeClient } from "../../client/roomcast.js";
import { pollUntil, countingWebSocket, waitForState } from "./helpers.mjs";

const { RealtimeProvider, useRealtime } = await import("../../client/react.js");

const sockets = countingWebSocket();
let w;
before(async () => { w = await startWorker({ bindings: { CLIENT_EVENT_TYPES: "typing.*" } }); });
after(async () => {
  await w?.stop();
  await closeDom();
});

let n = 0;
const uid = () => `pv${process.pid}x${Date.now().toString(36)}x${n++}`;

const text = (container, id) => container.querySelector(`#${id}`)?.textContent;
const showing = (container, id, want, ms = 5000) =>
  pollUntil(() => text(container, id) === want, ms, 10).catch(() => {
    throw new Error(`#${id} shows ${JSON.stringify(text(container, id))}, expected ${JSON.stringify(want)}`);
  });

/** Plain clients of other users (or the same user's other tabs), closed after the test. */
function others(t) {
  const made = [];
  t.after(() => Promise.all(made.map((c) => c.close())));
  return async (sub, rooms) => {
    const c = new RealtimeClient({ url: w.base, rooms, token: tokenFor(sub, { rooms }), WebSocket });
    made.push(c);
    await waitForState(c, "connected");
    return c;
  };
}

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
  const other = others(t);
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
  const bob = await other("bob", [team]);
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
  const tab = await other(u, [`user_${u}`]);
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
