// useRealtime: the roomcast client as a React hook. React is a peer dependency; nothing else.
// Types: react.d.ts. Guide: docs/client.md.
//
//   const { lastMessage, isConnected, connectionState } = useRealtime({
//     userId: user.id, requestId, getToken: fetchRealtimeToken, url: "https://rt.example.com",
//     onMessage: (n) => toast(n.type),
//   });
import { useCallback, useEffect, useLayoutEffect, useRef, useState } from "react";
import { RealtimeClient } from "./roomcast.js";

// useLayoutEffect warns when rendered on a server; the refs it updates only matter in a browser.
const useIsomorphicLayoutEffect = typeof document !== "undefined" ? useLayoutEffect : useEffect;

/**
 * Subscribes to `user_{userId}` and, when given, `request_{requestId}`.
 *
 * One client (one socket per room) lives while `url`, `userId`, `requestId`, `types`,
 * `maxReconnectAttempts`, `autoAck` and `WebSocket` stay the same; changing one of them closes it
 * and opens a new one. Callbacks, `messageFilter`, `token` and `getToken` may change on every
 * render without reconnecting: the latest ones are used (a new `token` is used from the next
 * connection on, and restarts a client that stopped because its token was refused).
 *
 * @param {import("./react.d.ts").UseRealtimeOptions} options
 * @returns {import("./react.d.ts").UseRealtimeResult}
 */
export function useRealtime(options) {
  const latest = useRef(options);
  useIsomorphicLayoutEffect(() => {
    latest.current = options;
  });
  const {
    userId, requestId, url, token, types, maxReconnectAttempts, autoAck, WebSocket, enabled = true,
  } = options;
  const [connectionState, setConnectionState] = useState(/** @type {import("./roomcast.d.ts").ConnectionState} */ ("disconnected"));
  const [lastMessage, setLastMessage] = useState(/** @type {import("./roomcast.d.ts").Notification | null} */ (null));
  const clientRef = useRef(/** @type {RealtimeClient | null} */ (null));
  const typesKey = types && types.length ? types.join(",") : "";

  useEffect(() => {
    if (!enabled || userId == null || userId === "") return undefined;
    const rooms = [`user_${userId}`];
    if (requestId != null && requestId !== "") rooms.push(`request_${requestId}`);
    const client = new RealtimeClient({
      url,
      rooms,
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
        const f = latest.current.messageFilter;
        return typeof f === "function" ? f(n, ctx) : true;
      },
      autoConnect: false,
    });
    clientRef.current = client;
    const offs = [
      client.on("state", (s) => setConnectionState(s)),
      client.on("notification", (n, ctx) => {
        setLastMessage(n);
        // Returned so that auto-ack waits for an async onMessage.
        return latest.current.onMessage?.(n, ctx);
      }),
      client.on("connected", (info) => latest.current.onConnect?.(info)),
      client.on("disconnected", (info) => latest.current.onDisconnect?.(info)),
      client.on("recovery", (info) => latest.current.onRecovery?.(info)),
      client.on("error", (err) => latest.current.onError?.(err)),
    ];
    client.connect();
    setConnectionState(client.state);
    return () => {
      for (const off of offs) off();
      client.close();
      if (clientRef.current === client) clientRef.current = null;
      setConnectionState("disconnected");
    };
  }, [enabled, url, userId, requestId, typesKey, maxReconnectAttempts, autoAck, WebSocket]);

  // A new token restarts a client that gave up because its token was refused.
  useEffect(() => {
    const client = clientRef.current;
    if (client && client.state === "error" && token) client.connect();
  }, [token]);

  const sendMessage = useCallback(
    /** @type {(frame: string | object, options?: {roomId?: string}) => number} */
    (frame, opts) => clientRef.current?.send(frame, opts) ?? 0,
    [],
  );
  const ack = useCallback((/** @type {string | string[]} */ ids) => clientRef.current?.ack(ids), []);

  return {
    lastMessage,
    isConnected: connectionState === "connected",
    connectionState,
    sendMessage,
    ack,
  };
}
