// Compiled by types.test.mjs with `tsc --noEmit`: how an app uses the client's types. The lines
// marked to expect an error must be errors, so the types also refuse what they should.
import { RealtimeClient, backoffDelay, CloseCode, type Notification, type ConnectionState } from "../../../client/roomcast.js";
import { useRealtime } from "../../../client/react.js";
import { createBroadcaster, BroadcastError } from "../../../client/broadcaster.js";

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
  const seq: number = n.seq;
  void [data.title, seq, roomId, n.requiresAck, n.attempt];
});
off();
client.on("state", (state: ConnectionState, previous) => void [state, previous]);
client.on("recovery", ({ recovered, since }) => { if (!recovered) void since; });
client.on("error", (e) => { if (e.fatal) void e.code; });
client.ack(["a", "b"]);
client.subscribe(["task.*"]);
const n: number = client.send({ type: "ping" }, { roomId: "user_42" });
const last: number | null = client.lastSeq("user_42");
void [n, last, backoffDelay(3), CloseCode.RATE_LIMITED];
void client.close().then(() => undefined);

// @ts-expect-error: not an event
client.on("message", () => {});
// @ts-expect-error: rooms is required
new RealtimeClient({ token: "t" });
// @ts-expect-error: not a state
const bad: ConnectionState = "open";
void bad;

function Component() {
  const { lastMessage, isConnected, connectionState, sendMessage } = useRealtime({
    userId: "42",
    requestId: "abc",
    token: "jwt",
    onMessage: (m: Notification) => void m.id,
    onError: (e) => void e.message,
  });
  const t: string | undefined = lastMessage?.type;
  void [t, isConnected, connectionState, sendMessage("ping")];
}
void Component;

async function handler() {
  const rc = createBroadcaster({ url: "https://rt.example.com", apiKey: "k", retries: 3 });
  const r = await rc.broadcastSuccess("42", "note.created", { id: 1 }, { requestId: "abc", idempotencyKey: "run:1" });
  const dup: boolean = r.rooms["user_42"].duplicate;
  await rc.broadcastError("42", "note.failed", new Error("x"), { requestId: "abc" });
  await rc.broadcastNotification({ userId: "42", message: { type: "x", requiresAck: true } });
  try {
    await rc.publish("team_1", { type: "x" });
  } catch (e) {
    if (e instanceof BroadcastError) void [e.status, e.code, e.retryable, dup];
  }
  // @ts-expect-error: status is a fixed set
  await rc.publish("team_1", { type: "x", status: "ok" });
}
void handler;
