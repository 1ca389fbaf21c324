// Compiled by types.test.mjs with `tsc --noEmit`: how an app uses the client's types. The lines
// marked to expect an error must be errors, so the types also refuse what they should.
import {
  RealtimeClient, RealtimeError, backoffDelay, CloseCode, matchesType, isClientEvent, decide, type Notification, type ConnectionState,
  type RoomStatus, type ClientEvent, type PresenceUser, type SyncResult, type Decision,
} from "../../../client/roomcast.js";
import {
  useRealtime, RealtimeProvider, useRealtimeClient, usePresence, useEvent, type ConnectionInfo,
  type ConnectionStatus,
} from "../../../client/react.js";
import { createBroadcaster, BroadcastError, ENV } from "../../../client/broadcaster.js";

interface NoteData { entityId: string; title: string }

const client = new RealtimeClient({
  url: "https://rt.example.com",
  rooms: ["user_42", "request_abc"],
  getToken: async ({ roomId, reason }) => `${roomId}:${reason}`,
  types: ["note.*"],
  maxReconnectAttempts: 10,
  messageFilter: (n) => n.type !== "noise",
});
const off: () => void = client.on("notification", async (n, { roomId }) => {
  const data = n.data as unknown as NoteData;
  // An ephemeral notification (a progress update) has no seq: narrow first.
  if (n.ephemeral) {
    const none: undefined = n.seq;
    void none;
    return;
  }
  const seq: number = n.seq;
  void [data.title, seq, roomId, n.requiresAck, n.attempt];
});
off();
// By notification type or event name, exact or a pattern.
client.on("memory.created", (m, { kind, roomId }) => {
  if (isClientEvent(m)) {
    const from: string = m.userId;
    void from;
  } else {
    const id: string = m.id;
    void id;
  }
  void [kind === "notification", roomId];
});
client.on("typing.*", (m) => void m);
client.once("*", async () => {});
client.on("event", (e: ClientEvent, { roomId }) => void [e.event, e.userId, e.data, roomId]);
// Presence.
const watching = new RealtimeClient({ rooms: ["team_1"], token: "t", presence: ["team_1"], clientEventRate: 10, syncOnVisible: false });
watching.on("presence", ({ users, count, change }) => {
  const online: PresenceUser[] = [...users.values()];
  void [online, count, change === "snapshot"];
});
watching.on("joined", ({ userId, state }) => void [userId, state]);
watching.on("left", ({ userId, timestamp }) => void [userId, timestamp]);
const users: ReadonlyMap<string, PresenceUser> | undefined = watching.presence("team_1");
const since: string | null | undefined = users?.get("42")?.since;
const online: number | null = watching.presenceCount("team_1");
watching.setPresence("team_1", { status: "away" });
const sent: boolean = watching.emit("team_1", "typing.start", { field: "title" });
void [since, online, sent, matchesType("note.*", "note.created")];
void watching.sync().then((results: SyncResult[]) => results.map((r) => r.recovered));
watching.join("team_2", { presence: true });
watching.on("synced", ({ lastSeq }) => void lastSeq);
client.on("state", (state: ConnectionState, previous) => void [state, previous]);
client.on("recovery", ({ recovered, since }) => { if (!recovered) void since; });
client.on("error", (e) => {
  if (e.fatal && (e.code === "unauthorized" || e.code === "forbidden")) {
    const why: string | undefined = e.serverCode;
    const status: number | undefined = e.status;
    void [e.roomId, why, status];
  }
});
client.on("reconnecting", ({ status, retryAfterMs, delayMs }) => void [status, retryAfterMs, delayMs]);
client.on("status", (s: RoomStatus) => {
  const at: number | null = s.lastConnectedAt;
  const err: RealtimeError | null = s.error;
  void [at, err, s.attempt, s.state];
});
// Rooms on a live client; getToken is told why it is asked.
const dynamic = new RealtimeClient({
  url: "https://rt.example.com",
  rooms: [],
  getToken: ({ reason }) => (reason === "unauthorized" || reason === "expired" ? "fresh" : "cached"),
});
dynamic.join("request_abc", { since: 0 }).join("team_1");
// The platform's fetch fits the probe's `fetch` option.
void new RealtimeClient({ rooms: ["user_42"], token: "t", fetch, autoConnect: false });
void dynamic.leave("team_1").then(() => dynamic.roomStatus("request_abc")?.attempt);
client.ack(["a", "b"]);
client.subscribe(["task.*"]);
const n: number = client.send({ type: "ping" }, { roomId: "user_42" });
const last: number | null = client.lastSeq("user_42");
void [n, last, backoffDelay(3), CloseCode.RATE_LIMITED];
void client.close().then(() => undefined);
// Debug lines, per-event rates (the server's text, or pattern -> [limit, windowMs]).
void new RealtimeClient({ rooms: ["team_1"], token: "t", debug: true, eventRates: "typing.*=5/5s,cursor.move=30/1s" });
void new RealtimeClient({
  rooms: ["team_1"], token: "t", eventRates: { "typing.*": [5, 5000] },
  debug: (message, { roomId, ...details }) => void [message.length, roomId, details.code],
});
// What the client does after a close or a refusal: a pure function.
const next: Decision = decide({
  kind: "close", code: CloseCode.IDLE, wasConnected: true,
  hasGetToken: true, authRetried: false, everConnected: true, attempt: 0, maxAttempts: 10,
});
if (next.action === "reconnect") void [next.delay === "none", next.tokenReason];
if (next.action === "fail") void next.error;

// @ts-expect-error: not an event, and not a type name with a dot
client.on("message", () => {});
// @ts-expect-error: a presence state is an object
watching.setPresence("team_1", "away");
// @ts-expect-error: event data is an object
watching.emit("team_1", "typing.start", 42);
// @ts-expect-error: a map of who is online is read-only
users?.set("x", { userId: "x", connections: 1, state: {}, since: null });
// @ts-expect-error: rooms is required
new RealtimeClient({ token: "t" });
// @ts-expect-error: not a state
const bad: ConnectionState = "open";
void bad;
// @ts-expect-error: since is a number
dynamic.join("r", { since: "3" });
// @ts-expect-error: not a token reason
new RealtimeClient({ rooms: [], getToken: ({ reason }) => (reason === "refreshed" ? "a" : "b") });
// @ts-expect-error: a rate is [limit, windowMs]
new RealtimeClient({ rooms: [], token: "t", eventRates: { "typing.*": 5 } });
// @ts-expect-error: debug is a boolean or a function
new RealtimeClient({ rooms: [], token: "t", debug: "verbose" });
// @ts-expect-error: a close needs its code
decide({ kind: "close", wasConnected: true, hasGetToken: true, authRetried: false, everConnected: true, attempt: 0, maxAttempts: 1 });

function Component() {
  const { lastMessage, isConnected, connectionState, sendMessage, notifications, connection, error, reconnect, client: c } = useRealtime({
    userId: "42",
    requestId: "abc",
    token: "jwt",
    keep: 50,
    onMessage: (m: Notification) => void m.id,
    onError: (e) => void e.message,
  });
  const t: string | undefined = lastMessage?.type;
  const first: Notification | undefined = notifications[0];
  const info: ConnectionInfo = connection;
  const attempts: number = connection.attempt;
  const since: number | null = connection.lastConnectedAt;
  if (error?.code === "unauthorized") reconnect();
  void [t, first, info, attempts, since, isConnected, connectionState, sendMessage("ping"), c?.rooms];
  // @ts-expect-error: the list is read-only
  notifications.push(first!);
}
void Component;

function Online({ room }: { room: string }) {
  const { users, count, setPresence } = usePresence(room);
  const names: string[] = users.map((u) => u.userId);
  setPresence({ status: "here" });
  const { last, emit } = useEvent(room, "typing.*", (e) => void e.userId);
  const who: string | undefined = last?.userId;
  const sent: boolean = emit("typing.start", { field: "title" });
  // Without a provider: the client's settings.
  const own = usePresence(room, { url: "https://rt.example.com", getToken: async () => "jwt", types: ["note.*", "typing.*"] });
  void [names, count, who, sent, own.users, useEvent(null, "cursor.move").last];
  // @ts-expect-error: the list is read-only
  users.push(users[0]);
  // @ts-expect-error: a state is an object
  setPresence("away");
}
void Online;

function App() {
  const shared: RealtimeClient | null = useRealtimeClient();
  void shared;
  return RealtimeProvider({ url: "https://rt.example.com", getToken: async () => "jwt", children: null });
}
void App;

// A provider that holds rooms for the whole tree, and components that ask it with no options.
function ProviderApp() {
  // @ts-expect-error: rooms is an array of room ids
  RealtimeProvider({ rooms: "team_7" });
  return RealtimeProvider({ url: "https://rt.example.com", userId: "42", rooms: ["team_7"], token: "jwt", children: null });
}
void ProviderApp;

function Board() {
  const { subscribe, emit, isConnected, connectionState, lastMessage, error } = useRealtime();
  const off: () => void = subscribe("approval.*", (m, ctx) => {
    const kind: "notification" | "event" = ctx.kind;
    const from: string = isClientEvent(m) ? m.userId : m.type;
    void [kind, from, ctx.roomId];
  });
  off();
  const sent: boolean = emit("typing.start", { field: "title" });
  emit("cursor.move", { x: 1 }, { roomId: "user_42" });
  const status: ConnectionStatus = connectionState;
  const state: ConnectionState = connectionState.status;
  const attempts: number = connectionState.reconnectAttempt;
  const since: number | null = connectionState.lastConnectedAt;
  const fatal: RealtimeError | null = connectionState.error;
  void [sent, status, state, attempts, since, fatal, isConnected, lastMessage, error];
  // @ts-expect-error: the object's state is `status`
  void connectionState.state;
  // @ts-expect-error: a handler is a function
  subscribe("chat.message", "handler");
  // With options, connectionState stays the string it always was.
  const plain: ConnectionState = useRealtime({ userId: "42" }).connectionState;
  void plain;
  // @ts-expect-error: only the provider-level form has subscribe
  void useRealtime({ userId: "42" }).subscribe;
}
void Board;

/** A Worker's env with a service binding to roomcast (the shape of Cloudflare's Fetcher). */
interface WorkerEnv {
  ROOMCAST: { fetch(input: string | Request | URL, init?: RequestInit): Promise<Response> };
  ROOMCAST_API_KEY: string;
}

async function fromAWorker(env: WorkerEnv) {
  const rc = createBroadcaster({ binding: env.ROOMCAST, apiKey: env.ROOMCAST_API_KEY });
  await rc.broadcastSuccess("42", "group.invitation.received", { groupId: "g1" }, { requiresAck: true });
  // @ts-expect-error: a binding has a fetch method
  createBroadcaster({ binding: {}, apiKey: "k" });
}
void fromAWorker;

async function handler() {
  const rc = createBroadcaster({ url: "https://rt.example.com", apiKey: "k", retries: 3 });
  // url and apiKey from the environment (ENV lists the names).
  const fromEnv = createBroadcaster();
  const first: "ROOMCAST_URL" = ENV.url[0];
  void [fromEnv, first];
  const r = await rc.broadcastSuccess("42", "note.created", { id: 1 }, { requestId: "abc", idempotencyKey: "run:1" });
  const dup: boolean = r.rooms["user_42"].duplicate;
  await rc.broadcastError("42", "note.failed", new Error("x"), { requestId: "abc" });
  await rc.broadcastNotification({ userId: "42", message: { type: "x", requiresAck: true } });
  try {
    await rc.publish("team_1", { type: "x" });
  } catch (e) {
    if (e instanceof BroadcastError) void [e.status, e.code, e.retryable, dup];
  }
  const many = await rc.broadcastMany(["1", "2"], "team.invite", { teamId: 7 }, { idempotencyKey: "run:invite", requiresAck: true });
  void many.rooms["user_1"].seq;
  await rc.broadcastNotification({ userIds: ["1", "2"], message: { type: "x" } });
  const p = await rc.progress("42", "upload.progress", { pct: 40 }, { requestId: "abc" });
  if (p !== null) {
    const eph: true = p.rooms["user_42"].ephemeral;
    void eph;
  }
  await rc.progress(["1", "2"], "upload.progress", { pct: 50 });
  try {
    await rc.broadcastMany(["1"], "x.y");
  } catch (e) {
    if (e instanceof BroadcastError && e.status === 207) void e.failedRooms;
  }
  // @ts-expect-error: status is a fixed set
  await rc.publish("team_1", { type: "x", status: "ok" });
  // @ts-expect-error: userId or userIds, not both
  await rc.broadcastNotification({ userId: "1", userIds: ["2"], message: { type: "x" } });
  // @ts-expect-error: progress is never acked
  await rc.progress("42", "upload.progress", {}, { requiresAck: true });
}
void handler;
