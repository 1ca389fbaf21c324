"""``RoomConnection``: one room's WebSocket, kept alive and resumed, for ``RealtimeClient``.

The client (client.py) is the façade: it holds the rooms, the handlers and what spans rooms
(dedupe, acks to every room that delivered an id). A ``RoomConnection`` holds everything of one
room: its connection loop (which asks ``roomcast.decide.decide`` what to do after each close or
refusal), keepalive, frames, acks, presence, client events and sync.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Awaitable, Callable, Literal, Mapping, Union
from urllib.parse import quote, urlencode

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException
from websockets.frames import Frame, Opcode
from websockets.protocol import Event

from ._types import (
    Acked,
    ClientEvent,
    Connected,
    ConnectionState,
    Disconnected,
    Notification,
    PresenceChange,
    PresenceChangeKind,
    PresenceJoined,
    PresenceLeft,
    PresenceUser,
    RealtimeError,
    Reconnecting,
    Recovery,
    RoomStatus,
    Subscribed,
    Synced,
    TokenReason,
)
from ._protocol import (
    CONTROL_FRAMES,
    MAX_ACK_IDS,
    PRESENCE_SET_RATE,
    RATE_MARGIN,
    RATE_WINDOW,
    backoff_delay,
    error_body,
    http_base,
    matches_type,
    prune,
    retry_after,
    token_exp,
)
from .decide import Decision, decide

__all__ = ["RoomConnection"]

log = logging.getLogger("roomcast")

TokenProvider = Callable[[str, TokenReason], Union[str, Awaitable[str]]]

EMPTY_PRESENCE: Mapping[str, PresenceUser] = MappingProxyType({})

_RoomState = Literal["idle", "connecting", "connected", "reconnecting", "error", "closed"]


class _Connection(ClientConnection):
    """Ends the connection as soon as the server's close frame has been answered. The protocol
    has the server close TCP first, and ``websockets`` waits for it; workerd may not do so for a
    close it sends from an alarm (idle 4008), which would leave the client waiting until its
    next send."""

    def process_event(self, event: Event) -> None:
        super().process_event(event)
        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
            self.transport.close()  # after the answering close frame, already written


@dataclass(frozen=True)
class Options:
    """The client's settings every room uses."""

    ws_base: str
    token: str | None
    get_token: TokenProvider | None
    initial_delay: float
    max_delay: float
    multiplier: float
    stable_after: float
    rate_limited_delay: float
    max_attempts: int | None
    ping_interval: float
    pong_timeout: float
    connect_timeout: float
    ack_delay: float
    max_frame_bytes: int | None
    headers: Mapping[str, str]
    random: Callable[[], float]
    client_event_rate: int
    event_rates: list[tuple[str, int, float]]


@dataclass
class Seen:
    """A notification already handed to the app (or being handed)."""

    rooms: set[str]
    acked: bool = False


@dataclass(frozen=True)
class Hooks:
    """What a room asks of its client: the client-wide parts of handling a frame."""

    fire: Callable[[str, object], None]
    """Calls the handlers of one of the client's events."""
    admit: Callable[[RoomConnection, Notification], Seen | None]
    """Dedupe and ``message_filter`` of a stored notification: its record, or None to drop it."""
    admit_ephemeral: Callable[[RoomConnection, Notification], bool]
    hand_over: Callable[[RoomConnection, Notification, Seen | None], Awaitable[None]]
    """Hands a notification to the app (and acks it once handled)."""
    on_event: Callable[[RoomConnection, ClientEvent], None]
    forget: Callable[[str, Seen], None]
    changed: Callable[[], None]
    """A room's state changed: the client recomputes its own."""
    failed: Callable[[RealtimeError], None]
    """A room stopped for good with this error."""
    types: Callable[[], list[str]]


@dataclass
class _Refused:
    status: int
    retry_after: float | None = None
    code: str | None = None
    message: str | None = None


@dataclass
class _Closed:
    code: int
    reason: str
    was_connected: bool


@dataclass
class _NetworkError:
    error: BaseException


@dataclass
class _SyncMark:
    """Queued behind what a sync's replay brought: handed over, the sync is done."""

    result: Synced
    future: asyncio.Future[Synced | None] | None


@dataclass
class _PendingSync:
    since: int
    future: asyncio.Future[Synced | None]


_Item = Union[tuple[Notification, Union[Seen, None]], _SyncMark]


class RoomConnection:
    """One room: its socket, its connection loop, and what the client knows about the room
    (last seq, presence, pending acks). Created and driven by ``RealtimeClient``."""

    def __init__(
        self, room_id: str, *, since: int | None, watch_presence: bool, options: Options, hooks: Hooks
    ) -> None:
        self.id = room_id
        ok = isinstance(since, int) and not isinstance(since, bool) and since >= 0
        self.last_seq: int | None = since if ok else None
        self.watch_presence = watch_presence
        self._o = options
        self._h = hooks
        self.state: _RoomState = "idle"
        self.ever_connected = False
        self.attempt = 0
        self.fatal: RealtimeError | None = None
        self.last_connected_at: float | None = None
        self.connection_id: str | None = None
        self.ws: ClientConnection | None = None
        self.ack_queue: dict[str, None] = {}  # an ordered set
        # Who is online (watching rooms): None until the first `connected`.
        self._presence: dict[str, PresenceUser] | None = None
        self._presence_view: Mapping[str, PresenceUser] = EMPTY_PRESENCE
        self._presence_count = 0
        # The state set_presence asked for (JSON text), the one sent on this connection, and when.
        self._presence_wanted: str | None = None
        self._presence_sent: str | None = None
        self._presence_times: list[float] = []
        self._event_times: list[float] = []
        self._pattern_times: dict[str, list[float]] = {}
        self._sync: _PendingSync | None = None
        self._token: str | None = None
        self._auth_retried = False
        self._resume_from: int | None = None
        self._connected_at = 0.0
        self._dead_reason: str | None = None
        self._frames = 0
        self._heard = asyncio.Event()
        self._active = False
        self._task: asyncio.Task[None] | None = None
        self._ack_task: asyncio.Task[None] | None = None
        self._presence_task: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[Any]] = set()
        self._inbox: asyncio.Queue[_Item] = asyncio.Queue()
        self._dispatcher: asyncio.Task[None] | None = None
        self.status_key: tuple[object, ...] | None = None

    # ---- what the client reads ----

    @property
    def public_state(self) -> ConnectionState:
        s = self.state
        if s == "idle" or s == "closed":
            return "disconnected"
        return s

    def status(self) -> RoomStatus:
        return RoomStatus(
            self.id, self.public_state, self.attempt, self.last_connected_at, self.last_seq,
            self.fatal if self.state == "error" else None,
        )

    @property
    def presence(self) -> Mapping[str, PresenceUser] | None:
        return self._presence_view if self.watch_presence else None

    @property
    def presence_count(self) -> int | None:
        return self._presence_count if self.watch_presence and self._presence is not None else None

    @property
    def connected(self) -> bool:
        return self.state == "connected" and self.ws is not None

    # ---- lifecycle ----

    def start(self) -> None:
        """Opens the room (again): also restarts a room stopped by a fatal error."""
        self._active = True
        if self._dispatcher is None or self._dispatcher.done():
            self._dispatcher = asyncio.create_task(self._dispatch_loop())
        if self.state in ("idle", "error", "closed"):
            self.attempt = 0
            self.fatal = None
            self._auth_retried = False
            self.state = "reconnecting" if self.ever_connected else "connecting"
            self._task = asyncio.create_task(self._run())

    async def stop(self, state: Literal["idle", "closed"], timeout: float = 2.0) -> None:
        """Closes the socket (1000) and stops the loop; the room is then in ``state`` (or stays
        in ``error``). The dispatcher keeps running: see ``drop_inbox``."""
        self._active = False
        if self.state != "error":
            self.state = state
        ws = self.ws
        if ws is not None:
            await _close_socket(ws, timeout)
        current = asyncio.current_task()
        tasks = [t for t in (self._task, self._ack_task, self._presence_task, *self._background) if t is not None]
        tasks = [t for t in tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._task = self._ack_task = self._presence_task = None
        self._background.clear()
        self.ws = None
        self._end_sync()

    async def drop_inbox(self) -> None:
        """Stops handing over, and forgets what was received but not handed over, so that a
        later connection's replay or redelivery hands it to the app instead of dropping it as
        a duplicate."""
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None
        while not self._inbox.empty():
            item = self._inbox.get_nowait()
            if isinstance(item, _SyncMark):
                if item.future is not None and not item.future.done():
                    item.future.set_result(None)
                continue
            n, entry = item
            if entry is not None:
                self._h.forget(n.id, entry)

    async def restart(self) -> None:
        """A new connection now (e.g. to watch presence): resumes after the last seq."""
        await self.flush_acks()
        await self.stop("idle")
        self.start()

    # ---- the connection loop ----

    def _given(self) -> dict[str, Any]:
        return {
            "hasGetToken": self._o.get_token is not None,
            "authRetried": self._auth_retried,
            "everConnected": self.ever_connected,
            "attempt": self.attempt,
            "maxAttempts": self._o.max_attempts,
        }

    async def _run(self) -> None:
        reason: TokenReason = "reconnect" if self.ever_connected else "connect"
        while self._active:
            try:
                token = await self._fetch_token(reason)
            except Exception as err:  # the app's get_token failed
                if not self._active:
                    return
                self._h.fire(
                    "error",
                    RealtimeError("token_error", f"room {self.id}: get_token failed: {err!r}", room_id=self.id),
                )
                if reason == "expired":
                    return self._fail(
                        "token_expired",
                        "the server closed the connection for the token (4001) and get_token "
                        f"could not supply a new one: {err!r}",
                        close_code=4001,
                    )
                if reason == "unauthorized":
                    return self._fail("unauthorized", f"the token was refused (401) and get_token failed: {err!r}", status=401)
                plan: Decision = decide({"kind": "refused", "status": 0, **self._given()})
                if plan["action"] == "fail":
                    return self._fail_for(plan["error"], _Refused(0))
                if not await self._wait_retry(plan, None, _Refused(0)):
                    return
                reason = plan["tokenReason"]
                continue
            if not self._active:
                return
            if not isinstance(token, str) or not token:
                return self._fail("no_token", "get_token returned no token")
            said = decide({"kind": "token", "reason": reason, "sameToken": token == self._token, **self._given()})
            if said["action"] == "fail":
                why = "the server closed the connection for the token (4001)" if reason == "expired" else "the token was refused (401)"
                return self._fail(
                    said["error"], f"{why} and get_token returned the same token",
                    close_code=4001 if reason == "expired" else None, status=401 if reason == "unauthorized" else None,
                )
            if self._o.get_token is None and reason != "connect":
                exp = token_exp(token)
                if exp is not None and exp <= time.time():
                    return self._fail(
                        "token_expired", "the token has expired; pass get_token to refresh it", close_code=4001
                    )
            self._token = token

            outcome = await self._connect_once(token)
            if not self._active:
                return
            code: int | None = None
            refusal: _Refused | None = None
            if isinstance(outcome, _Closed):
                code = outcome.code
                if outcome.was_connected and time.monotonic() - self._connected_at >= self._o.stable_after:
                    self.attempt = 0
                plan = decide({"kind": "close", "code": code, "wasConnected": outcome.was_connected, **self._given()})
                if plan["action"] == "probe":
                    refusal = await self._probe(token)
                    if not self._active:
                        return
                    plan = decide({"kind": "refused", "status": refusal.status, **self._given()})
            else:
                if isinstance(outcome, _NetworkError):
                    self._h.fire(
                        "error",
                        RealtimeError("connect_failed", f"room {self.id}: could not connect: {outcome.error!r}", room_id=self.id),
                    )
                    refusal = _Refused(0)
                else:
                    refusal = outcome
                plan = decide({"kind": "refused", "status": refusal.status, **self._given()})
            if plan["action"] == "fail":
                return self._fail_for(plan["error"], refusal, outcome if isinstance(outcome, _Closed) else None)
            if not await self._wait_retry(plan, code, refusal):
                return
            reason = plan["tokenReason"]

    async def _fetch_token(self, reason: TokenReason) -> str:
        if self._o.get_token is None:
            return self._o.token or ""
        got = self._o.get_token(self.id, reason)
        if inspect.isawaitable(got):
            got = await got
        return got

    async def _wait_retry(self, plan: Decision, code: int | None, refusal: _Refused | None) -> bool:
        """Sleeps until the next attempt as ``plan`` says; False when the room stopped meanwhile."""
        kind = plan["delay"]
        if plan["tokenReason"] == "unauthorized":
            self._auth_retried = True  # one fresh token per streak of refusals
        idle = kind == "none" and plan["tokenReason"] != "unauthorized"
        if not idle:
            # Waking from idle is not an attempt; everything else counts toward the limit.
            self.attempt += 1
        o = self._o
        status = refusal.status if refusal is not None and refusal.status else None
        retry_after = refusal.retry_after if refusal is not None else None
        if kind == "none":
            delay = 0.0
        elif kind == "retry_after" and retry_after is not None:
            # The server said when; the jitter on top spreads a crowd refused at once.
            delay = retry_after + backoff_delay(
                1, initial_delay=o.initial_delay, max_delay=o.max_delay, multiplier=o.multiplier, random=o.random
            )
        else:
            delay = backoff_delay(
                self.attempt, initial_delay=o.initial_delay, max_delay=o.max_delay, multiplier=o.multiplier,
                random=o.random,
            )
            if kind != "backoff":  # backoff+rate_limited, or a 429 without Retry-After
                delay += o.rate_limited_delay
        self.state = "reconnecting" if self.ever_connected else "connecting"
        self._h.changed()
        log.debug(
            "room %s: reconnecting in %.3f s (%s, attempt %d, token for %s)",
            self.id, delay, kind, self.attempt, plan["tokenReason"],
        )
        self._h.fire("reconnecting", Reconnecting(self.id, self.attempt, delay, code, status))
        await asyncio.sleep(delay)
        return self._active

    def _url(self, base: str) -> str:
        params: dict[str, str] = {}
        if self.last_seq is not None:
            params["since"] = str(self.last_seq)
        types = self._h.types()
        if types:
            params["types"] = ",".join(types)
        if self.watch_presence:
            params["presence"] = "1"
        params["batch"] = "1"
        return f"{base}/rooms/{quote(self.id, safe='')}/subscribe?{urlencode(params)}"

    async def _connect_once(self, token: str) -> _Refused | _Closed | _NetworkError:
        self._resume_from = self.last_seq
        url = self._url(self._o.ws_base)
        headers = {**self._o.headers, "Authorization": f"Bearer {token}"}
        self._dead_reason = None
        if self._resume_from is not None:
            log.debug("room %s: resuming since %d", self.id, self._resume_from)
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self._o.connect_timeout,
                # Keepalive is the protocol's text `ping` (answered without waking the room).
                ping_interval=None,
                close_timeout=self._o.connect_timeout,
                max_size=self._o.max_frame_bytes,
                create_connection=_Connection,
            )
        except InvalidStatus as err:
            res = err.response
            code, why = error_body(res.body)
            log.debug("room %s: the upgrade was refused: %d %s", self.id, res.status_code, code or "")
            return _Refused(res.status_code, retry_after(res.headers.get("Retry-After")), code, why)
        except (OSError, TimeoutError, WebSocketException) as err:
            log.debug("room %s: could not connect: %r", self.id, err)
            return _NetworkError(err)
        log.debug("room %s: socket opened (%s)", self.id, url)
        self.ws = ws
        keepalive: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self._o.connect_timeout):
                while self.state != "connected":
                    self._on_text(await ws.recv())
            keepalive = asyncio.create_task(self._keepalive(ws))
            async for message in ws:
                self._on_text(message)
        except TimeoutError:
            self._dead_reason = "connect timeout"
            ws.transport.abort()
        except ConnectionClosed:
            pass
        finally:
            if keepalive is not None:
                keepalive.cancel()
            was_connected = self.state == "connected"
            self.ws = None
            self._end_sync()
            if not self._active and self.state != "error":
                self.state = "closed"
        await ws.wait_closed()
        close_code = ws.close_code if ws.close_code is not None else 1006
        reason = self._dead_reason or ws.close_reason or ""
        if self._dead_reason is not None:
            close_code = 1006
        log.debug("room %s: closed %d %r", self.id, close_code, reason)
        if self._active:
            self.state = "reconnecting" if self.ever_connected else "connecting"
            self._h.changed()
            self._h.fire("disconnected", Disconnected(self.id, close_code, reason, was_connected))
        return _Closed(close_code, reason, was_connected)

    async def _probe(self, token: str) -> _Refused:
        """The socket closed before `connected`: asks the subscribe URL without Upgrade what the
        upgrade got (refused, or a passing problem)."""
        url = self._url(http_base(self._o.ws_base))
        headers = {**self._o.headers, "Authorization": f"Bearer {token}"}
        try:
            async with httpx.AsyncClient(timeout=self._o.connect_timeout) as http:
                res = await http.get(url, headers=headers)
            code, why = error_body(res.content)
            answer = _Refused(res.status_code, retry_after(res.headers.get("Retry-After")), code, why)
        except (httpx.HTTPError, OSError) as err:
            log.debug("room %s: the probe got no answer: %r", self.id, err)
            return _Refused(0)
        log.debug("room %s: the probe answered %d %s", self.id, answer.status, answer.code or "")
        return answer

    async def _await_frame(self, ws: ClientConnection, timeout: float, why: str) -> None:
        """Gives up on ``ws`` (aborts it: the loop then reconnects) when no frame at all
        arrives within ``timeout`` seconds."""
        seen = self._frames
        try:
            async with asyncio.timeout(timeout):
                while self._frames == seen:
                    self._heard.clear()
                    await self._heard.wait()
        except TimeoutError:
            if self.ws is ws:
                # Gone without a close (a sleeping laptop, a NAT that forgot us): replace it.
                self._dead_reason = why
                ws.transport.abort()

    async def _keepalive(self, ws: ClientConnection) -> None:
        if not self._o.ping_interval > 0:
            return
        while self.ws is ws:
            await asyncio.sleep(self._o.ping_interval)
            try:
                await ws.send("ping")
            except ConnectionClosed:
                return
            await self._await_frame(ws, self._o.pong_timeout, "keepalive timeout")

    # ---- frames ----

    def _on_text(self, data: str | bytes) -> None:
        # Any frame proves the connection alive.
        self._frames += 1
        self._heard.set()
        if not isinstance(data, str) or data == "pong":
            return
        try:
            frame = json.loads(data)
        except ValueError:
            return
        self.on_frame(frame)

    def on_frame(self, frame: object) -> None:
        """Handles one parsed frame; a batch is unpacked, each frame in it handled in order
        exactly as if it had come alone."""
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if not isinstance(kind, str):
            return
        if kind == "batch" and isinstance(frame.get("frames"), list) and "id" not in frame:
            log.debug("room %s: a batch of %d frames", self.id, len(frame["frames"]))
            for inner in frame["frames"]:
                self.on_frame(inner)
            return
        if kind in CONTROL_FRAMES and not isinstance(frame.get("seq"), int):
            if kind == "connected":
                self._on_hello(frame)
            elif kind == "subscribed":
                data_field = frame.get("data")
                types = data_field.get("types", []) if isinstance(data_field, dict) else []
                self._h.fire("subscribed", Subscribed(self.id, list(types)))
            elif kind == "error":
                code = str(frame.get("code", "server_error"))
                self._h.fire(
                    "error",
                    RealtimeError(
                        code,
                        f"room {self.id}: {frame.get('message', 'error frame from the server')}",
                        room_id=self.id,
                        server_code=code,
                    ),
                )
            elif kind == "event":
                if isinstance(frame.get("event"), str):
                    self._h.on_event(self, ClientEvent.from_frame(frame, self.id))
            elif kind == "synced":
                self._on_synced(frame)
            return
        # Presence frames: reserved types, no id or seq.
        if kind.startswith("presence.") and isinstance(frame.get("userId"), str) and "id" not in frame:
            self._on_presence(frame)
            return
        if not isinstance(frame.get("id"), str):
            return
        if isinstance(frame.get("seq"), int):
            self._on_notification(Notification.from_frame(frame, self.id))
        elif frame.get("ephemeral") is True:
            n = Notification.from_frame(frame, self.id)
            if self._h.admit_ephemeral(self, n):
                self._inbox.put_nowait((n, None))

    def _on_hello(self, hello: Mapping[str, Any]) -> None:
        since = self._resume_from
        self.state = "connected"
        self.ever_connected = True
        self._connected_at = time.monotonic()
        self.last_connected_at = time.time()
        self._auth_retried = False
        cid = hello.get("connectionId")
        self.connection_id = cid if isinstance(cid, str) else None
        server_seq = hello.get("lastSeq")
        server_seq = server_seq if isinstance(server_seq, int) else None
        # Without a known seq, start from the room's; a room whose log is behind ours (storage
        # reset) restarts ours.
        if server_seq is not None and (self.last_seq is None or server_seq < self.last_seq):
            self.last_seq = server_seq
        # A new connection: the server's windows start again, and it has not seen our state.
        self._presence_times = []
        self._presence_sent = None
        self._event_times = []
        self._pattern_times = {}
        resumed = since is not None
        recovered = hello.get("recovered") is not False if resumed else None
        log.debug(
            "room %s: connected (connection %s, last_seq=%s, recovered=%s)",
            self.id, self.connection_id, server_seq, recovered,
        )
        # Before `connected`, so that its handlers read the new map.
        if self.watch_presence:
            self._presence_snapshot(hello)
        self._h.changed()
        self._h.fire("connected", Connected(self.id, self.connection_id, server_seq, resumed, recovered))
        if since is not None and recovered is not None:
            self._h.fire("recovery", Recovery(self.id, since, server_seq, recovered))
        if self.ack_queue:
            self._spawn_flush(0.0)
        if self._presence_wanted is not None:
            self._spawn(self._flush_presence())

    def _on_notification(self, n: Notification) -> None:
        assert n.seq is not None
        if self.last_seq is None or n.seq > self.last_seq:
            self.last_seq = n.seq
        entry = self._h.admit(self, n)
        if entry is not None:
            self._inbox.put_nowait((n, entry))

    # ---- handing over, in order ----

    async def _dispatch_loop(self) -> None:
        while True:
            item = await self._inbox.get()
            if isinstance(item, _SyncMark):
                self._h.fire("synced", item.result)
                self._h.fire(
                    "recovery", Recovery(self.id, item.result.since, item.result.last_seq, item.result.recovered)
                )
                if item.future is not None and not item.future.done():
                    item.future.set_result(item.result)
                continue
            n, entry = item
            try:
                await self._h.hand_over(self, n, entry)
            except asyncio.CancelledError:
                if entry is not None:
                    self._h.forget(n.id, entry)  # closed while the app was handling it
                raise

    # ---- acks ----

    def queue_ack(self, nid: str) -> None:
        self.ack_queue[nid] = None
        if self._ack_task is None or self._ack_task.done():
            self._spawn_flush(self._o.ack_delay)

    def _spawn_flush(self, delay: float) -> None:
        async def later() -> None:
            # Batched for a moment: one frame for a burst of acks.
            await asyncio.sleep(delay)
            self._ack_task = None
            await self.flush_acks()

        if self._ack_task is not None and not self._ack_task.done():
            self._ack_task.cancel()
        self._ack_task = asyncio.create_task(later())

    async def flush_acks(self) -> None:
        ws = self.ws
        if not self.ack_queue or self.state != "connected" or ws is None:
            return
        ids = list(self.ack_queue)
        self.ack_queue.clear()
        for i in range(0, len(ids), MAX_ACK_IDS):
            chunk = ids[i : i + MAX_ACK_IDS]
            frame = {"type": "ack", "notificationId": chunk[0]} if len(chunk) == 1 else {"type": "ack", "ids": chunk}
            try:
                await ws.send(json.dumps(frame))
            except ConnectionClosed:
                # Sent with the next connection of this room instead.
                for nid in ids[i:]:
                    self.ack_queue[nid] = None
                return
            log.debug("room %s: acks flushed (%d ids)", self.id, len(chunk))
            self._h.fire("ack", Acked(self.id, chunk))

    # ---- sending ----

    async def send_text(self, text: str) -> bool:
        ws = self.ws
        if self.state != "connected" or ws is None:
            return False
        try:
            await ws.send(text)
            return True
        except ConnectionClosed:
            return False  # the connection loop handles the close

    async def emit(self, event: str, data: Mapping[str, Any] | None) -> bool:
        if not self.connected:
            log.debug("room %s: emit %s not sent: the room is not connected", self.id, event)
            return False
        now = time.monotonic()
        recent = prune(self._event_times, now, RATE_WINDOW)
        if len(recent) >= self._o.client_event_rate:
            log.debug("room %s: emit %s not sent: %d events in 10 s already", self.id, event, len(recent))
            return False
        limited = [(p, n, w) for p, n, w in self._o.event_rates if matches_type(p, event)]
        for pattern, count, window in limited:
            times = prune(self._pattern_times.setdefault(pattern, []), now, window)
            if len(times) >= count:
                log.debug("room %s: emit %s not sent: %d %s events in %g s already", self.id, event, len(times), pattern, window)
                return False
        frame: dict[str, Any] = {"type": "emit", "event": event}
        if data is not None:
            frame["data"] = data
        if not await self.send_text(json.dumps(frame)):
            return False
        recent.append(now)
        for pattern, _, _ in limited:
            self._pattern_times[pattern].append(now)
        return True

    # ---- presence ----

    async def set_presence(self, state: Mapping[str, Any]) -> None:
        self._presence_wanted = json.dumps(state, separators=(",", ":"))
        await self._flush_presence()

    async def _flush_presence(self) -> None:
        """Sends the wanted state when the server's window allows; else later."""
        task = self._presence_task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._presence_task = None
        wanted = self._presence_wanted
        if wanted is None or wanted == self._presence_sent or not self.connected:
            return  # not connected: sent by _on_hello
        now = time.monotonic()
        recent = prune(self._presence_times, now, RATE_WINDOW)
        if len(recent) >= PRESENCE_SET_RATE:
            wait = recent[0] + RATE_WINDOW + RATE_MARGIN - now

            async def later() -> None:
                await asyncio.sleep(max(0.0, wait))
                await self._flush_presence()

            self._presence_task = asyncio.create_task(later())
            return
        recent.append(now)
        self._presence_sent = wanted
        await self.send_text('{"type":"presence.set","data":' + wanted + "}")

    def _presence_snapshot(self, hello: Mapping[str, Any]) -> None:
        """The `connected` frame's presence replaces the map: nothing from before the connection
        is kept. After a reconnect, users who came or went meanwhile are announced."""
        p = hello.get("presence")
        p = p if isinstance(p, dict) else {}
        nxt: dict[str, PresenceUser] = {}
        users = p.get("users")
        for u in users if isinstance(users, list) else []:
            if isinstance(u, dict) and isinstance(u.get("userId"), str):
                nxt[u["userId"]] = _presence_user(u["userId"], u.get("connections"), u.get("state"), u.get("since"))
        before = self._presence
        count = p.get("count")
        self._set_presence_map(nxt, count if isinstance(count, int) else len(nxt), "snapshot", None)
        if before is None:
            return
        at = hello.get("serverTime")
        at = at if isinstance(at, str) else _now_iso()
        for user_id in before:
            if user_id not in nxt:
                self._h.fire("left", PresenceLeft(self.id, user_id, at))
        for user_id, u in nxt.items():
            if user_id not in before:
                self._h.fire("joined", PresenceJoined(self.id, user_id, u.state, u.since or at))

    def _on_presence(self, f: Mapping[str, Any]) -> None:
        if not self.watch_presence or self._presence is None:
            return
        nxt = dict(self._presence)
        user_id: str = f["userId"]
        kind = f["type"]
        ts = f.get("timestamp")
        ts = ts if isinstance(ts, str) else _now_iso()
        count = self._presence_count
        change: PresenceChangeKind
        if kind == "presence.joined":
            change = "joined"
            if user_id not in nxt:
                count += 1
            nxt[user_id] = _presence_user(user_id, 1, f.get("state"), ts)
        elif kind == "presence.left":
            change = "left"
            nxt.pop(user_id, None)
            count = max(len(nxt), count - 1)
        elif kind == "presence.updated":
            change = "updated"
            had = nxt.get(user_id)
            if had is None:
                # A user beyond the first 100 listed when this connection opened: present, since unknown.
                count = max(count, len(nxt) + 1)
            nxt[user_id] = _presence_user(
                user_id, had.connections if had else 1, f.get("state"), had.since if had else None
            )
        else:
            return
        self._set_presence_map(nxt, count, change, user_id)
        if change == "joined":
            self._h.fire("joined", PresenceJoined(self.id, user_id, nxt[user_id].state, ts))
        elif change == "left":
            self._h.fire("left", PresenceLeft(self.id, user_id, ts))

    def _set_presence_map(
        self, users: dict[str, PresenceUser], count: int, change: PresenceChangeKind, user_id: str | None
    ) -> None:
        self._presence = users
        self._presence_view = MappingProxyType(users)
        self._presence_count = count
        self._h.fire("presence", PresenceChange(self.id, self._presence_view, count, change, user_id))

    def clear_presence(self) -> None:
        """Left, closed or stopped: the map is emptied (and watchers told so)."""
        if self._presence is None:
            return
        self._presence = None
        self._presence_view = EMPTY_PRESENCE
        self._presence_count = 0
        self._h.fire("presence", PresenceChange(self.id, EMPTY_PRESENCE, 0, "cleared", None))

    # ---- sync ----

    async def sync(self) -> Synced | None:
        ws = self.ws
        if not self.connected or ws is None:
            return None
        if self._sync is None:
            since = self.last_seq or 0
            fut: asyncio.Future[Synced | None] = asyncio.get_running_loop().create_future()
            self._sync = _PendingSync(since, fut)
            if not await self.send_text(json.dumps({"type": "sync", "since": since})):
                self._end_sync()
                return None
            # A socket that slept may be dead: with no frame at all within pong_timeout it is
            # replaced, as the keepalive would (and the new connection resumes after `since`).
            if self._o.pong_timeout > 0:
                self._spawn(self._await_frame(ws, self._o.pong_timeout, "no answer to sync"))
        return await asyncio.shield(self._sync.future)

    def _on_synced(self, f: Mapping[str, Any]) -> None:
        pending = self._sync
        self._sync = None
        server_seq = f.get("lastSeq")
        server_seq = server_seq if isinstance(server_seq, int) else None
        # The replay went up to the room's latest seq: later ones arrive live after this frame.
        if server_seq is not None:
            self.last_seq = server_seq
        since = pending.since if pending is not None else (self.last_seq or 0)
        result = Synced(self.id, since, server_seq, f.get("recovered") is not False)
        # Done once what the replay brought has been handed to the app.
        self._inbox.put_nowait(_SyncMark(result, pending.future if pending is not None else None))

    def _end_sync(self) -> None:
        """A sync whose socket went: left out of sync()'s results (the reconnect resumes)."""
        pending = self._sync
        self._sync = None
        if pending is not None and not pending.future.done():
            pending.future.set_result(None)

    # ---- stopping for good ----

    def _fail(self, code: str, message: str, *, close_code: int | None = None, status: int | None = None,
              server_code: str | None = None) -> None:
        self.state = "error"
        self._active = False
        err = RealtimeError(
            code, f"room {self.id}: {message}", room_id=self.id, fatal=True, close_code=close_code, status=status,
            server_code=server_code,
        )
        self.fatal = err
        log.debug("room %s: stopped: %s", self.id, code)
        self._end_sync()
        self.clear_presence()
        self._h.changed()
        self._h.failed(err)

    def _fail_for(self, error: str, refusal: _Refused | None, closed: _Closed | None = None) -> None:
        status = refusal.status if refusal is not None and refusal.status else None
        server_code = refusal.code if refusal is not None else None
        says = ""
        if refusal is not None:
            says = f"{refusal.status}{' ' + refusal.code if refusal.code else ''}"
            says += f": {refusal.message}" if refusal.message else ""
        close_code = closed.code if closed is not None and refusal is None else None
        reason = closed.reason if closed is not None else ""
        if error == "invalid_frames":
            msg = f"the server closed the connection for invalid frames (4003): {reason}"
        elif error == "token_expired":
            msg = f"the server refused the token (4001): {reason}"
        elif error == "unauthorized":
            how = "a fresh token from get_token was refused too" if self._o.get_token else "pass get_token to supply fresh tokens"
            msg = f"the server refused the token ({says}); {how}"
        elif error == "forbidden":
            msg = f"not allowed in this room ({says})"
        elif error == "refused":
            msg = f"the server refused the connection ({says})"
        elif error == "max_reconnect_attempts":
            msg = f"gave up after {self._o.max_attempts} reconnect attempts"
        else:
            msg = error
        self._fail(error, msg, close_code=close_code, status=status, server_code=server_code)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def _presence_user(user_id: str, connections: object, state: object, since: object) -> PresenceUser:
    return PresenceUser(
        user_id=user_id,
        connections=connections if isinstance(connections, int) else 1,
        state=MappingProxyType(dict(state)) if isinstance(state, dict) else MappingProxyType({}),
        since=since if isinstance(since, str) else None,
    )


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


async def _close_socket(ws: ClientConnection, timeout: float) -> None:
    try:
        async with asyncio.timeout(timeout):
            await ws.close(1000, "client closed")
    except TimeoutError:
        ws.transport.abort()
