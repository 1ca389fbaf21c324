// useRealtime and RealtimeProvider: the roomcast client for React. React is a peer dependency;
// nothing else. Types: react.d.ts. Guide: docs/client.md.
//
//   const { lastMessage, notifications, connection, error } = useRealtime({
//     userId: user.id, requestId, getToken: fetchRealtimeToken, url: "https://rt.example.com",
//     keep: 50, onMessage: (n) => toast(n.type),
//   });
//   // or, under <RealtimeProvider userId={user.id} rooms={["team_7"]} …>:
//   const { subscribe, emit, connectionState } = useRealtime();
import {
  createContext, createElement, useCallback, useContext, useEffect, useLayoutEffect, useMemo, useRef, useState,
  useSyncExternalStore,
} from "react";
import { RealtimeClient, matchesType } from "./roomcast.js";

// useLayoutEffect warns when rendered on a server; the refs it updates only matter in a browser.
const useIsomorphicLayoutEffect = typeof document !== "undefined" ? useLayoutEffect : useEffect;

/**
 * null outside a provider; inside, `{hub}` (null until the provider's client exists), the
 * provider's own `rooms` and its `subscribe`.
 */
const RealtimeContext = createContext(
  /** @type {{hub: RoomHub | null, rooms: readonly string[], subscribe: (pattern: string, handler: Function) => () => void} | null} */ (null),
);

const EMPTY = Object.freeze([]);
const EMPTY_MAP = Object.freeze(new Map());
/** How many notification ids a hook remembers to drop one that reaches it through a second room. */
const HANDED_SIZE = 1000;

/**
 * The rooms of one RealtimeClient, shared by every hook that uses it: a room is joined when the
 * first hook needs it and left when the last one lets go.
 */
class RoomHub {
  /** @param {RealtimeClient} client */
  constructor(client) {
    this.client = client;
    /** @type {Map<string, {count: number, timer: ReturnType<typeof setTimeout> | null}>} */
    this.refs = new Map();
  }

  /**
   * @param {string} roomId
   * @param {number} [since] where a room this client has not held starts
   * @param {{presence?: boolean}} [options] presence: the room must watch presence (a held room
   *   that does not yet reopens with it)
   * @returns {() => void} release
   */
  acquire(roomId, since, options = {}) {
    let ref = this.refs.get(roomId);
    if (ref) {
      ref.count++;
      clearTimeout(ref.timer);
      ref.timer = null;
      if (options.presence) this.client.join(roomId, { presence: true });
    } else {
      this.refs.set(roomId, (ref = { count: 1, timer: null }));
      this.client.join(roomId, { ...(since === undefined ? {} : { since }), ...(options.presence ? { presence: true } : {}) });
    }
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.#release(roomId, ref);
    };
  }

  #release(roomId, ref) {
    if (--ref.count > 0) return;
    // Left a tick later: StrictMode's unmount-and-mount again, or a room passing from one
    // component to another in the same commit, keeps its socket.
    ref.timer = setTimeout(() => {
      if (ref.count > 0 || this.refs.get(roomId) !== ref) return;
      this.refs.delete(roomId);
      void this.client.leave(roomId);
    }, 0);
  }
}

/**
 * Creates (in an effect, so StrictMode's double mount never opens a socket twice) and closes a
 * RealtimeClient with no rooms, for a provider or for a hook used without one.
 * @param {import("./react.d.ts").RealtimeProviderProps | import("./react.d.ts").UseRealtimeOptions} options
 * @param {{current: any}} latest the latest options (callbacks, token)
 * @param {boolean} active
 * @param {boolean} filterInClient whether `messageFilter` decides for the client (what is acked)
 */
function useHub(options, latest, active, filterInClient) {
  const { url, types, maxReconnectAttempts, autoAck, WebSocket } = options;
  const typesKey = types && types.length ? types.join(",") : "";
  const [hub, setHub] = useState(/** @type {RoomHub | null} */ (null));
  useEffect(() => {
    if (!active) return undefined;
    const client = new RealtimeClient({
      url,
      rooms: [],
      types: typesKey ? typesKey.split(",") : undefined,
      autoAck,
      WebSocket,
      ...(maxReconnectAttempts !== undefined ? { maxReconnectAttempts } : {}),
      ...latest.current.clientOptions,
      getToken: (ctx) => {
        const o = latest.current;
        return typeof o.getToken === "function" ? o.getToken(ctx) : o.token;
      },
      messageFilter: (n, ctx) => {
        const f = filterInClient ? latest.current.messageFilter : undefined;
        return typeof f === "function" ? f(n, ctx) : true;
      },
    });
    const created = new RoomHub(client);
    setHub(created);
    return () => {
      void client.close();
      setHub((h) => (h === created ? null : h));
    };
  }, [active, url, typesKey, maxReconnectAttempts, autoAck, WebSocket, latest, filterInClient]);
  return hub;
}

/**
 * Hands each notification of `rooms` that `accept` takes to `deliver`, once: also one the client
 * dropped as a duplicate because it came first through a room outside `rooms` (another hook's, or
 * one `rooms` did not have yet). `handed` remembers what was handed over.
 * @param {RealtimeClient} client
 * @param {readonly string[]} rooms
 * @param {Set<string>} handed
 * @param {(n: import("./roomcast.d.ts").Notification, ctx: {roomId: string}) => boolean} accept
 * @param {(n: import("./roomcast.d.ts").Notification, ctx: {roomId: string}) => unknown} deliver
 * @returns {() => void} stop
 */
function onceFromRooms(client, rooms, handed, accept, deliver) {
  const mine = new Set(rooms);
  const hand = (n, ctx) => {
    if (!accept(n, ctx)) return undefined;
    handed.delete(n.id);
    handed.add(n.id);
    if (handed.size > HANDED_SIZE) handed.delete(handed.values().next().value);
    // Returned so that the auto-ack waits for an async handler.
    return deliver(n, ctx);
  };
  const offs = [
    client.on("notification", (n, ctx) => (mine.has(ctx.roomId) ? hand(n, ctx) : undefined)),
    client.on("duplicate", (n, ctx) => {
      if (mine.has(ctx.roomId) && !handed.has(n.id)) void hand(n, ctx);
    }),
  ];
  return () => { for (const off of offs) off(); };
}

const acceptAll = () => true;

/**
 * The room ids a provider holds for its whole tree: `rooms`, then `user_{userId}`.
 * @param {import("./react.d.ts").RealtimeProviderProps} props
 */
function providerRooms({ rooms = EMPTY, userId }) {
  if (!Array.isArray(rooms) || rooms.some((r) => typeof r !== "string" || r === "")) {
    throw new TypeError(`RealtimeProvider: rooms must be an array of room ids, got ${JSON.stringify(rooms)}`);
  }
  const out = [...rooms];
  if (userId != null && userId !== "") out.push(`user_${userId}`);
  return [...new Set(out)];
}

/**
 * The provider's `subscribe(typeOrPattern, handler)`: the notifications and client events of
 * `rooms` whose type or name matches, each once. It keeps its listeners while the client is
 * replaced (or not created yet), so it is one function for the provider's whole life.
 * @param {RoomHub | null} hub
 * @param {readonly string[]} rooms
 */
function useSubscriptions(hub, rooms) {
  const [subs] = useState(() => ({ list: new Set(), handed: new Set() }));
  useEffect(() => {
    if (!hub) return undefined;
    const matching = (name) => [...subs.list].filter((s) => matchesType(s.pattern, name));
    const stopNotes = onceFromRooms(hub.client, rooms, subs.handed, acceptAll, (n, ctx) => {
      const handlers = matching(n.type);
      if (handlers.length === 0) return undefined;
      const typed = { ...ctx, kind: "notification" };
      return Promise.all(handlers.map(async (s) => s.handler(n, typed)));
    });
    const mine = new Set(rooms);
    const stopEvents = hub.client.on("event", (e, ctx) => {
      if (!mine.has(ctx.roomId)) return;
      const typed = { ...ctx, kind: "event" };
      // One failing handler does not keep the event from the others; the first failure is
      // thrown afterwards, so that the client reports it (an `error` event).
      let failed = null;
      for (const s of matching(e.event)) {
        try {
          s.handler(e, typed);
        } catch (err) {
          failed ??= { err };
        }
      }
      if (failed) throw failed.err;
    });
    return () => {
      stopNotes();
      stopEvents();
    };
  }, [hub, rooms, subs]);
  return useCallback(
    /** @type {(pattern: string, handler: Function) => () => void} */
    (pattern, handler) => {
      if (typeof pattern !== "string" || pattern === "") {
        throw new TypeError(`subscribe: the first argument is a notification type, event name or pattern ("note.*", "*"), got ${JSON.stringify(pattern)}`);
      }
      if (typeof handler !== "function") throw new TypeError("subscribe: the handler must be a function");
      // Its own entry, so the same handler subscribed twice is removed once per unsubscribe.
      const entry = { pattern, handler };
      subs.list.add(entry);
      return () => { subs.list.delete(entry); };
    },
    [subs],
  );
}

/**
 * Shares one RealtimeClient (one socket per room) with every `useRealtime` below it. Its
 * `url`, `token` / `getToken`, `WebSocket`, `types`, `autoAck`, `maxReconnectAttempts`,
 * `messageFilter` and `clientOptions` are the client's; the hooks' own ones are then ignored.
 * It holds `rooms` and `user_{userId}` for the whole tree: what `useRealtime()` (no options)
 * reports, subscribes to and emits into.
 *
 * @param {import("./react.d.ts").RealtimeProviderProps} props
 */
export function RealtimeProvider(props) {
  const latest = useRef(props);
  useIsomorphicLayoutEffect(() => {
    latest.current = props;
  });
  const hub = useHub(props, latest, props.enabled !== false, true);
  // A new token restarts rooms that stopped because a token was refused.
  useEffect(() => {
    if (hub && props.token && hub.client.state === "error") hub.client.connect();
  }, [hub, props.token]);
  // Keyed by value: a new array with the same rooms on every render keeps them.
  const roomsKey = JSON.stringify(providerRooms(props));
  const rooms = useMemo(() => Object.freeze(JSON.parse(roomsKey)), [roomsKey]);
  useEffect(() => {
    if (!hub) return undefined;
    const releases = rooms.map((r) => hub.acquire(r));
    return () => { for (const release of releases) release(); };
  }, [hub, rooms]);
  const subscribe = useSubscriptions(hub, rooms);
  const value = useMemo(() => ({ hub, rooms, subscribe }), [hub, rooms, subscribe]);
  return createElement(RealtimeContext.Provider, { value }, props.children);
}

/**
 * The RealtimeClient of the nearest RealtimeProvider (null outside one, and until it exists),
 * e.g. to join other rooms or change the type filter.
 * @returns {RealtimeClient | null}
 */
export function useRealtimeClient() {
  return useContext(RealtimeContext)?.hub?.client ?? null;
}

/** The connection over a hook's rooms: the same rules as RealtimeClient's `state`. */
function summarize(rooms, statuses) {
  if (rooms.length === 0) return { state: "disconnected", attempt: 0, lastConnectedAt: null, error: null };
  // A room not reported yet is being joined.
  const list = rooms.map((r) => statuses[r] ?? { state: "connecting", attempt: 0, lastConnectedAt: null, error: null });
  const states = list.map((s) => s.state);
  let state;
  if (states.includes("error")) state = "error";
  else if (states.every((s) => s === "connected")) state = "connected";
  else if (states.includes("reconnecting")) state = "reconnecting";
  else if (states.includes("connecting")) state = "connecting";
  else state = "disconnected";
  let lastConnectedAt = null;
  for (const s of list) if (s.lastConnectedAt !== null && (lastConnectedAt === null || s.lastConnectedAt > lastConnectedAt)) lastConnectedAt = s.lastConnectedAt;
  return {
    state,
    attempt: Math.max(...list.map((s) => s.attempt)),
    lastConnectedAt,
    error: list.find((s) => s.error)?.error ?? null,
  };
}

const NO_OPTIONS = Object.freeze({});

/**
 * Subscribes to `user_{userId}` and, when given, `request_{requestId}`.
 *
 * Inside a RealtimeProvider the provider's client is used (one socket per room for the whole
 * tree). Without one, the hook has its own client, which lives while `url`, `types`,
 * `maxReconnectAttempts`, `autoAck` and `WebSocket` stay the same. Either way, changing
 * `userId` or `requestId` leaves the old room and joins the new one, keeping the other's
 * socket; a request room not seen before is joined from seq 0 (so what was published before
 * the page subscribed is not missed), one seen before resumes from its last seq. Callbacks,
 * `messageFilter`, `token` and `getToken` may change on every render without reconnecting.
 *
 * Called with no options, under a provider, it reports on the provider's rooms and adds
 * `subscribe`, `emit` and a `connectionState` object (see react.d.ts).
 *
 * @param {import("./react.d.ts").UseRealtimeOptions} [options]
 * @returns {import("./react.d.ts").UseRealtimeResult | import("./react.d.ts").ProviderRealtimeResult}
 */
export function useRealtime(options) {
  const shared = useContext(RealtimeContext);
  const whole = options === undefined;
  if (whole && !shared) {
    throw new TypeError("useRealtime() with no options uses the rooms of a RealtimeProvider, and there is none above: wrap the tree in <RealtimeProvider userId={…} rooms={[…]}>, or call useRealtime({userId, …})");
  }
  const opts = whole ? NO_OPTIONS : options;
  const latest = useRef(opts);
  useIsomorphicLayoutEffect(() => {
    latest.current = opts;
  });
  const { userId, requestId, token, keep, enabled = true } = opts;
  const userRoom = enabled && userId != null && userId !== "" ? `user_${userId}` : null;
  const requestRoom = userRoom && requestId != null && requestId !== "" ? `request_${requestId}` : null;
  const own = useHub(opts, latest, !shared && userRoom !== null, true);
  const hub = shared ? shared.hub : own;
  const ownRooms = useMemo(() => /** @type {string[]} */ ([userRoom, requestRoom].filter(Boolean)), [userRoom, requestRoom]);
  const rooms = whole ? shared.rooms : ownRooms;
  const roomsRef = useRef(rooms);
  roomsRef.current = rooms;

  useEffect(() => (hub && userRoom ? hub.acquire(userRoom) : undefined), [hub, userRoom]);
  useEffect(
    () => (hub && requestRoom ? hub.acquire(requestRoom, hub.client.lastSeq(requestRoom) ?? 0) : undefined),
    [hub, requestRoom],
  );

  const [statuses, setStatuses] = useState(/** @type {Record<string, import("./roomcast.d.ts").RoomStatus>} */ ({}));
  useEffect(() => {
    if (!hub) {
      setStatuses({});
      return undefined;
    }
    const pick = () => {
      /** @type {Record<string, import("./roomcast.d.ts").RoomStatus>} */
      const out = {};
      for (const r of rooms) {
        const s = hub.client.roomStatus(r);
        if (s) out[r] = s;
      }
      return out;
    };
    setStatuses(pick());
    return hub.client.on("status", (s) => {
      if (rooms.includes(s.roomId)) setStatuses(pick());
    });
  }, [hub, rooms]);

  const [lastMessage, setLastMessage] = useState(/** @type {import("./roomcast.d.ts").Notification | null} */ (null));
  const [notifications, setNotifications] = useState(/** @type {readonly import("./roomcast.d.ts").Notification[]} */ (EMPTY));
  // Ids this hook was handed, for its whole life: a publish to both of its rooms, or a request
  // room replayed from 0, reaches it once.
  const handed = useRef(/** @type {Set<string>} */ (new Set()));
  useEffect(() => {
    if (!hub) return undefined;
    const mine = new Set(rooms);
    const filterHere = Boolean(shared);
    const accept = (n, ctx) => {
      const f = latest.current.messageFilter;
      return !(filterHere && typeof f === "function" && !f(n, ctx));
    };
    const deliver = (n, ctx) => {
      setLastMessage(n);
      const k = latest.current.keep;
      if (k > 0) setNotifications((prev) => [n, ...prev].slice(0, k));
      return latest.current.onMessage?.(n, ctx);
    };
    const forMe = (info) => info?.roomId === undefined || mine.has(info.roomId);
    const offs = [
      onceFromRooms(hub.client, rooms, handed.current, accept, deliver),
      hub.client.on("connected", (info) => { if (forMe(info)) latest.current.onConnect?.(info); }),
      hub.client.on("disconnected", (info) => { if (forMe(info)) latest.current.onDisconnect?.(info); }),
      hub.client.on("recovery", (info) => { if (forMe(info)) latest.current.onRecovery?.(info); }),
      hub.client.on("error", (err) => { if (forMe(err)) latest.current.onError?.(err); }),
    ];
    return () => { for (const off of offs) off(); };
  }, [hub, rooms, shared]);

  // A new token restarts this hook's rooms if a refused token stopped them.
  useEffect(() => {
    const client = hub?.client;
    if (client && token && roomsRef.current.some((r) => client.roomState(r) === "error")) client.connect();
  }, [token]); // eslint-disable-line react-hooks/exhaustive-deps

  const sendMessage = useCallback(
    /** @type {(frame: string | object, options?: {roomId?: string}) => number} */
    (frame, opts) => {
      const client = hub?.client;
      if (!client) return 0;
      if (opts?.roomId) return client.send(frame, opts);
      let sent = 0;
      for (const roomId of roomsRef.current) sent += client.send(frame, { roomId });
      return sent;
    },
    [hub],
  );
  const ack = useCallback((/** @type {string | string[]} */ ids) => hub?.client.ack(ids), [hub]);
  const reconnect = useCallback(() => { hub?.client.connect(); }, [hub]);
  const emit = useCallback(
    /** @type {(event: string, data?: Record<string, unknown>, options?: {roomId?: string}) => boolean} */
    (event, data, opts) => {
      const roomId = opts?.roomId ?? roomsRef.current[0];
      const client = hub?.client;
      return client && roomId ? client.emit(roomId, event, data) : false;
    },
    [hub],
  );

  const summary = useMemo(() => summarize(hub ? rooms : EMPTY, statuses), [hub, rooms, statuses]);
  const connection = useMemo(
    () => ({ state: summary.state, attempt: summary.attempt, lastConnectedAt: summary.lastConnectedAt }),
    [summary],
  );
  const list = useMemo(
    () => (keep > 0 ? (notifications.length > keep ? notifications.slice(0, keep) : notifications) : EMPTY),
    [notifications, keep],
  );

  // The shape apps written for a provider-level hook read (status, reconnectAttempt, …).
  const status = useMemo(
    () => ({ status: summary.state, reconnectAttempt: summary.attempt, error: summary.error, lastConnectedAt: summary.lastConnectedAt }),
    [summary],
  );

  const result = {
    lastMessage,
    notifications: list,
    isConnected: summary.state === "connected",
    connectionState: summary.state,
    connection,
    error: summary.error,
    sendMessage,
    ack,
    reconnect,
    client: hub?.client ?? null,
  };
  return whole ? { ...result, connectionState: status, subscribe: shared.subscribe, emit } : result;
}

/**
 * The nearest provider's hub, or else one of the hook's own made from `options` (the client's
 * settings), for hooks that name their room.
 * @param {import("./react.d.ts").RoomHookOptions} options
 * @param {boolean} active
 */
function useRoomHub(options, active) {
  const latest = useRef(options);
  useIsomorphicLayoutEffect(() => {
    latest.current = options;
  });
  const shared = useContext(RealtimeContext);
  const own = useHub(options, latest, !shared && active, false);
  return shared ? shared.hub : own;
}

const byUserId = (a, b) => (a.userId < b.userId ? -1 : a.userId > b.userId ? 1 : 0);

/**
 * Who is online in a room, kept current: `users` (ordered by user id) re-renders the component
 * when someone comes, goes or changes their state. Inside a RealtimeProvider it uses the
 * provider's client (a room other hooks hold reopens once with presence on); without one, give
 * the client's settings in `options`. `setPresence(state)` sets this user's state in the room
 * (coalesced to the server's 3 per 10 s).
 *
 * @param {string | null | undefined} roomId
 * @param {import("./react.d.ts").RoomHookOptions} [options]
 * @returns {import("./react.d.ts").UsePresenceResult}
 */
export function usePresence(roomId, options = {}) {
  const active = options.enabled !== false && roomId != null && roomId !== "";
  const hub = useRoomHub(options, active);
  const client = hub && active ? hub.client : null;
  /** The state asked for before the room was held: set once it is. */
  const wanted = useRef(/** @type {Record<string, unknown> | null} */ (null));
  useEffect(() => {
    if (!client) return undefined;
    const release = hub.acquire(roomId, undefined, { presence: true });
    if (wanted.current) client.setPresence(roomId, wanted.current);
    return release;
  }, [hub, client, roomId]);
  const subscribe = useCallback(
    (/** @type {() => void} */ changed) => (client ? client.on("presence", (p) => { if (p.roomId === roomId) changed(); }) : () => {}),
    [client, roomId],
  );
  const snapshot = useCallback(() => (client ? client.presence(roomId) : undefined) ?? EMPTY_MAP, [client, roomId]);
  const map = useSyncExternalStore(subscribe, snapshot, snapshot);
  const users = useMemo(() => Object.freeze([...map.values()].sort(byUserId)), [map]);
  // The count changes only with the map, so it is read when the map is.
  const count = useMemo(() => (client?.presenceCount(roomId) ?? map.size), [client, roomId, map]);
  const setPresence = useCallback(
    (/** @type {Record<string, unknown>} */ state) => {
      wanted.current = state;
      if (client && client.rooms.includes(roomId)) client.setPresence(roomId, state);
    },
    [client, roomId],
  );
  return { users, count, setPresence };
}

/**
 * Client events of a room whose name matches `name` (an exact name like `typing.start`, or a
 * pattern like `typing.*`): `handler` (the latest one; it may change on every render) is called
 * with each, and `last` holds the newest one (null until one came; a re-render per event).
 * `emit(event, data)` sends one to the room's other connections. Works inside a
 * RealtimeProvider (its client) or, without one, with the client's settings in `options`.
 *
 * @param {string | null | undefined} roomId
 * @param {string} name
 * @param {((e: import("./roomcast.d.ts").ClientEvent, ctx: {roomId: string}) => void) | null} [handler]
 * @param {import("./react.d.ts").RoomHookOptions} [options]
 * @returns {import("./react.d.ts").UseEventResult}
 */
export function useEvent(roomId, name, handler, options = {}) {
  const active = options.enabled !== false && roomId != null && roomId !== "";
  const hub = useRoomHub(options, active);
  const client = hub && active ? hub.client : null;
  const latest = useRef(handler);
  useIsomorphicLayoutEffect(() => {
    latest.current = handler;
  });
  useEffect(() => (client ? hub.acquire(roomId) : undefined), [hub, client, roomId]);
  const [last, setLast] = useState(/** @type {{key: string, event: import("./roomcast.d.ts").ClientEvent} | null} */ (null));
  const key = `${roomId}\n${name}`;
  useEffect(() => {
    if (!client) return undefined;
    return client.on("event", (e, ctx) => {
      if (ctx.roomId !== roomId || !matchesType(name, e.event)) return;
      setLast({ key, event: e });
      latest.current?.(e, ctx);
    });
  }, [client, roomId, name, key]);
  const emit = useCallback(
    (/** @type {string} */ event, /** @type {Record<string, unknown> | undefined} */ data) => (client ? client.emit(roomId, event, data) : false),
    [client, roomId],
  );
  // What came for another room or name is not this one's last event.
  return { last: last && last.key === key ? last.event : null, emit };
}
