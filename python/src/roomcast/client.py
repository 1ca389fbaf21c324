"""``RealtimeClient``: receive roomcast notifications over WebSockets, with asyncio.

It gives the guarantees of the JavaScript client (client/roomcast.js): reconnect with
exponential backoff and full jitter, keepalive, resume with ``since=``, dedupe by id, ack after
the app handled a notification, fresh tokens on 4001 and 401, and a clear end on every refusal.
Guide: docs/client-python.md.
"""

from __future__ import annotations

import asyncio
import base64
import inspect
import json
import logging
import os
import random as _random
import re
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import partial
from email.utils import parsedate_to_datetime
from typing import (
    Any,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Literal,
    Mapping,
    Sequence,
    Union,
    get_args,
    overload,
)
from urllib.parse import quote, urlencode

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus, WebSocketException

from ._types import (
    Acked,
    CloseCode,
    Connected,
    ConnectionState,
    Disconnected,
    Notification,
    RealtimeError,
    Reconnecting,
    Recovery,
    StateChange,
    Subscribed,
    TokenReason,
)

__all__ = ["RealtimeClient", "backoff_delay", "TokenProvider"]

log = logging.getLogger("roomcast")

TokenProvider = Callable[[str, TokenReason], Union[str, Awaitable[str]]]
"""``get_token(room_id, reason)``: returns a JWT, or an awaitable of one."""

EventName = Literal[
    "notification",
    "duplicate",
    "state",
    "connected",
    "disconnected",
    "reconnecting",
    "recovery",
    "subscribed",
    "ack",
    "error",
]

_EVENTS = frozenset(get_args(EventName))
ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# Most ids one ack frame may carry (server limit).
MAX_ACK_IDS = 256
CONTROL_FRAMES = frozenset({"connected", "pong", "subscribed", "error"})

_RoomState = Literal["idle", "connecting", "connected", "reconnecting", "error", "closed"]


def backoff_delay(
    attempt: int,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 30.0,
    multiplier: float = 2.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds before reconnect attempt ``attempt`` (1-based): exponential backoff with full
    jitter, uniformly random in ``[0, min(max_delay, initial_delay * multiplier**(attempt-1)))``."""
    cap = min(max_delay, initial_delay * multiplier ** max(0, attempt - 1))
    return float(random() * cap)


def _token_exp(token: str) -> float | None:
    """A JWT's ``exp`` (seconds), read without verifying; None when it has none."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, AttributeError):
        return None


def _ws_base(url: str) -> str:
    u = url.rstrip("/")
    lower = u.lower()
    if lower.startswith("https:"):
        return "wss:" + u[6:]
    if lower.startswith("http:"):
        return "ws:" + u[5:]
    if lower.startswith(("ws:", "wss:")):
        return u
    raise ValueError(f"url must be an http(s) or ws(s) URL, got {url!r}")


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _error_body(body: bytes | bytearray | None) -> tuple[str | None, str | None]:
    """The server's ``{"error":{"code","message"}}`` of a refusal, when it sent one."""
    try:
        err = json.loads(body or b"")["error"]
        return str(err.get("code")), str(err.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None


@dataclass
class _Seen:
    """A notification already handed to the app (or being handed)."""

    rooms: set[str]
    acked: bool = False


@dataclass
class _Room:
    id: str
    last_seq: int | None
    state: _RoomState = "idle"
    ever_connected: bool = False
    ws: ClientConnection | None = None
    attempt: int = 0
    token: str | None = None
    resume_from: int | None = None
    connected_at: float = 0.0
    connection_id: str | None = None
    ack_queue: dict[str, None] = field(default_factory=dict)  # an ordered set
    ack_task: asyncio.Task[None] | None = None
    task: asyncio.Task[None] | None = None
    dispatcher: asyncio.Task[None] | None = None
    inbox: asyncio.Queue[tuple[Notification, _Seen]] = field(default_factory=asyncio.Queue)
    heard: asyncio.Event = field(default_factory=asyncio.Event)
    dead_reason: str | None = None
    fatal: RealtimeError | None = None


@dataclass
class _Refused:
    status: int
    retry_after: float | None
    code: str | None
    message: str | None


@dataclass
class _Closed:
    code: int
    reason: str
    was_connected: bool


@dataclass
class _NetworkError:
    error: BaseException


class _End:
    def __init__(self, error: RealtimeError | None) -> None:
        self.error = error


class _Stream:
    """One ``async for`` over the client: its queue of notifications to hand over."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Notification, asyncio.Future[bool]] | _End] = (
            asyncio.Queue()
        )
        self.open = True

    async def offer(self, n: Notification) -> bool:
        """Hands ``n`` to the consumer; True once its loop body finished without raising."""
        if not self.open:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((n, fut))
        return await fut


_Outcome = Union[_Refused, _Closed, _NetworkError]


class RealtimeClient:
    """Holds one WebSocket per room, keeps it alive, resumes after drops without gaps or
    duplicates, and acknowledges notifications once the app has handled them.

    Use it as ``async with RealtimeClient(...) as client:`` (or ``await client.connect()`` …
    ``await client.close()``), and receive notifications with ``async for n in client:`` or
    ``client.on("notification", handler)``. See docs/client-python.md.
    """

    def __init__(
        self,
        url: str | None = None,
        rooms: Sequence[str] | str = (),
        *,
        token: str | None = None,
        get_token: TokenProvider | None = None,
        types: Sequence[str] = (),
        since: Mapping[str, int] | None = None,
        auto_ack: bool = True,
        message_filter: Callable[[Notification], bool] | None = None,
        initial_delay: float = 1.0,
        max_delay: float = 30.0,
        multiplier: float = 2.0,
        stable_after: float = 10.0,
        rate_limited_delay: float = 30.0,
        max_reconnect_attempts: int | None = None,
        ping_interval: float = 30.0,
        pong_timeout: float = 10.0,
        connect_timeout: float = 15.0,
        dedupe_size: int = 1000,
        ack_delay: float = 0.02,
        max_frame_bytes: int | None = 16 * 2**20,
        headers: Mapping[str, str] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        base = url or os.environ.get("ROOMCAST_URL")
        if not base:
            raise ValueError("RealtimeClient needs `url` (or ROOMCAST_URL in the environment)")
        self._ws_base = _ws_base(base)
        room_list = [rooms] if isinstance(rooms, str) else list(rooms)
        if not room_list:
            raise ValueError("RealtimeClient needs `rooms` (room ids such as 'user_42')")
        for r in room_list:
            if not isinstance(r, str) or not ROOM_ID.match(r):
                raise ValueError(f"invalid room id: {r!r}")
        if token is None and get_token is None:
            raise ValueError("RealtimeClient needs `token` (a JWT) or `get_token` (a callable)")
        if dedupe_size < 1:
            raise ValueError("dedupe_size must be at least 1")
        self._token = token
        self._get_token = get_token
        self._types: list[str] = list(dict.fromkeys(types))
        self._auto_ack = auto_ack
        self._message_filter = message_filter
        self._initial_delay = initial_delay
        self._max_delay = max_delay
        self._multiplier = multiplier
        self._stable_after = stable_after
        self._rate_limited_delay = rate_limited_delay
        self._max_attempts = max_reconnect_attempts
        self._ping_interval = ping_interval
        self._pong_timeout = pong_timeout
        self._connect_timeout = connect_timeout
        self._dedupe_size = dedupe_size
        self._ack_delay = ack_delay
        self._max_frame_bytes = max_frame_bytes
        self._headers = dict(headers or {})
        self._random = random or _random.random

        self._rooms: dict[str, _Room] = {}
        for rid in dict.fromkeys(room_list):
            s = (since or {}).get(rid)
            ok = isinstance(s, int) and not isinstance(s, bool) and s >= 0
            self._rooms[rid] = _Room(id=rid, last_seq=s if ok else None)
        self._seen: OrderedDict[str, _Seen] = OrderedDict()
        self._handlers: dict[str, list[Callable[[Any], object]]] = {}
        self._streams: set[_Stream] = set()
        self._consumers = asyncio.Event()
        self._state: ConnectionState = "disconnected"
        self._state_changed = asyncio.Event()
        self._closed = True  # not connecting: before connect() and after close()
        self._shut = False  # close() was called (and connect() not since)
        self._tasks: set[asyncio.Future[Any]] = set()

    # ---- public API ----

    @property
    def state(self) -> ConnectionState:
        """The client's connection state over all of its rooms."""
        return self._state

    @property
    def rooms(self) -> list[str]:
        return list(self._rooms)

    @property
    def types(self) -> list[str]:
        """The current type filter (empty: every type)."""
        return list(self._types)

    def room_state(self, room_id: str) -> ConnectionState | None:
        room = self._rooms.get(room_id)
        return _public_state(room) if room else None

    def last_seq(self, room_id: str) -> int | None:
        """The last seq seen in a room; persist it and pass it back as ``since`` to resume
        across restarts of your process."""
        room = self._rooms.get(room_id)
        return room.last_seq if room else None

    async def connect(self) -> None:
        """Opens every room that is not open or opening (also restarts rooms stopped by a
        fatal error). Returns at once; ``wait_connected()`` waits for the sockets."""
        self._closed = False
        self._shut = False
        for room in self._rooms.values():
            if room.dispatcher is None or room.dispatcher.done():
                room.dispatcher = asyncio.create_task(self._dispatch_loop(room))
            if room.state in ("idle", "error", "closed"):
                room.attempt = 0
                room.fatal = None
                room.state = "reconnecting" if room.ever_connected else "connecting"
                room.task = asyncio.create_task(self._run(room))
        self._update_state()

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Waits until every room is connected. Raises the fatal ``RealtimeError`` of a room
        that stopped, and ``TimeoutError`` after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                if self._closed:
                    why = "the client is closed" if self._shut else "call connect() (or use `async with`) first"
                    raise RealtimeError("closed", why)
                if self._state == "connected":
                    return
                fatal = self._first_fatal()
                if fatal is not None:
                    raise fatal
                event = self._state_changed
                await event.wait()

    async def close(self, timeout: float = 2.0) -> None:
        """Sends pending acks, closes every socket (code 1000) and stops reconnecting. Returns
        once the sockets are closed (at most ``timeout`` seconds each) and the client's tasks
        have ended. ``async for`` loops over the client end."""
        self._closed = True
        self._shut = True
        rooms = list(self._rooms.values())
        for room in rooms:
            await self._flush_acks(room)
        closing = []
        for room in rooms:
            ws = room.ws
            if room.state not in ("error",):
                room.state = "closed"
            if ws is not None:
                closing.append(self._close_socket(ws, timeout))
        if closing:
            await asyncio.gather(*closing, return_exceptions=True)
        tasks: list[asyncio.Future[Any]] = [
            t for r in rooms for t in (r.task, r.dispatcher, r.ack_task) if t is not None
        ]
        tasks += list(self._tasks)
        current = asyncio.current_task()
        tasks = [t for t in tasks if t is not current]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for room in rooms:
            room.task = room.dispatcher = room.ack_task = None
            room.ws = None
            # Received but not handed over: forget them, so that a later connection's replay or
            # redelivery hands them to the app instead of dropping them as duplicates.
            while not room.inbox.empty():
                n, entry = room.inbox.get_nowait()
                self._forget(n.id, entry)
        for stream in list(self._streams):
            stream.queue.put_nowait(_End(None))
        self._update_state()

    async def __aenter__(self) -> RealtimeClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __aiter__(self) -> AsyncIterator[Notification]:
        """``async for n in client``: each notification once, in order per room. ``n`` is acked
        (when it asked for an ack) once the loop body has finished and the next one is
        requested; leaving the loop by ``break`` or an exception leaves the current one unacked,
        so the server redelivers it. The loop ends when the client closes, and raises the
        ``RealtimeError`` of a room that stopped for good."""
        return self._stream()

    def ack(self, ids: str | Iterable[str]) -> None:
        """Acknowledges notifications (needed only with ``auto_ack=False``). Sent to every room
        that delivered the id, queued while a room is reconnecting. Idempotent."""
        for nid in [ids] if isinstance(ids, str) else list(ids):
            if not isinstance(nid, str) or not nid:
                continue
            rec = self._seen.get(nid)
            if rec is not None:
                rec.acked = True
            for rid in list(rec.rooms) if rec is not None else list(self._rooms):
                room = self._rooms.get(rid)
                if room is not None:
                    self._queue_ack(room, nid)

    async def subscribe(self, types: Sequence[str]) -> None:
        """Adds type patterns (``note.*``, ``task.created``, ``*``) to the filter of every open
        socket and of later reconnects. The first one narrows an unfiltered client."""
        new = _normalize_types(types)
        for t in new:
            if t not in self._types:
                self._types.append(t)
        await self.send({"type": "subscribe", "data": {"types": new}})

    async def unsubscribe(self, types: Sequence[str]) -> None:
        """Removes type patterns from the filter; an empty filter means every type."""
        gone = _normalize_types(types)
        self._types = [t for t in self._types if t not in gone]
        await self.send({"type": "unsubscribe", "data": {"types": gone}})

    async def send(self, frame: str | Mapping[str, Any], *, room_id: str | None = None) -> int:
        """Sends a raw protocol frame (a mapping is sent as JSON) to one room or to every
        connected room; returns how many sockets it was sent to."""
        text = frame if isinstance(frame, str) else json.dumps(frame)
        sent = 0
        for room in list(self._rooms.values()):
            if room_id is not None and room.id != room_id:
                continue
            ws = room.ws
            if room.state == "connected" and ws is not None:
                try:
                    await ws.send(text)
                    sent += 1
                except ConnectionClosed:
                    pass  # the connection loop handles the close
        return sent

    # Listener registration, typed per event. Handlers may be plain functions or coroutine
    # functions; ``on`` returns the function that removes the handler.
    @overload
    def on(
        self,
        event: Literal["notification", "duplicate"],
        handler: Callable[[Notification], object],
    ) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["state"], handler: Callable[[StateChange], object]) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["connected"], handler: Callable[[Connected], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["disconnected"], handler: Callable[[Disconnected], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["reconnecting"], handler: Callable[[Reconnecting], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["recovery"], handler: Callable[[Recovery], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["subscribed"], handler: Callable[[Subscribed], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["ack"], handler: Callable[[Acked], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["error"], handler: Callable[[RealtimeError], object]
    ) -> Callable[[], None]: ...
    def on(self, event: EventName, handler: Callable[[Any], object]) -> Callable[[], None]:
        if event not in _EVENTS:
            raise ValueError(f"unknown event {event!r}; one of {', '.join(sorted(_EVENTS))}")
        if not callable(handler):
            raise TypeError("handler must be callable")
        handlers = self._handlers.setdefault(event, [])
        # Wrapped so that the same function added twice is removed once per `on`.
        entry: Callable[[Any], object] = lambda arg: handler(arg)  # noqa: E731
        handlers.append(entry)
        if event == "notification":
            self._consumers.set()

        def off() -> None:
            if entry in handlers:
                handlers.remove(entry)
            self._refresh_consumers()

        return off

    # ---- one room's connection loop ----

    async def _run(self, room: _Room) -> None:
        reason: TokenReason = "reconnect" if room.ever_connected else "connect"
        while not self._closed:
            try:
                token = await self._fetch_token(room, reason)
            except Exception as err:  # the app's get_token failed
                if self._closed:
                    return
                self._emit_error(
                    RealtimeError("token_error", f"room {room.id}: get_token failed: {err!r}", room_id=room.id),
                )
                if reason == "expired":
                    return self._fail(
                        room,
                        "token_expired",
                        "the server closed the connection for the token (4001) and get_token "
                        f"could not supply a new one: {err!r}",
                        close_code=CloseCode.AUTH,
                    )
                if reason == "unauthorized":
                    return self._fail(
                        room, "unauthorized", f"the token was refused (401) and get_token failed: {err!r}", status=401
                    )
                if not await self._wait_retry(room):
                    return
                continue
            if self._closed:
                return
            if not isinstance(token, str) or not token:
                return self._fail(room, "no_token", "get_token returned no token")
            if reason == "expired" and token == room.token:
                return self._fail(
                    room,
                    "token_expired",
                    "the server closed the connection for the token (4001) and get_token "
                    "returned the same token",
                    close_code=CloseCode.AUTH,
                )
            if reason == "unauthorized" and token == room.token:
                return self._fail(
                    room, "unauthorized", "the token was refused (401) and get_token returned the same token", status=401
                )
            if self._get_token is None and reason != "connect":
                exp = _token_exp(token)
                if exp is not None and exp <= time.time():
                    return self._fail(
                        room, "token_expired", "the token has expired; pass get_token to refresh it",
                        close_code=CloseCode.AUTH,
                    )
            room.token = token

            outcome = await self._connect_once(room, token)
            if self._closed:
                return
            if isinstance(outcome, _Refused):
                s = outcome.status
                why = outcome.message or f"HTTP {s}"
                if s == 401:
                    if self._get_token is None or reason == "unauthorized":
                        return self._fail(room, "unauthorized", f"the server refused the token (401): {why}", status=s)
                    # One fresh token, then a second refusal is final.
                    reason = "unauthorized"
                    continue
                if s == 403:
                    return self._fail(room, "forbidden", f"the server refused the room (403): {why}", status=s)
                if s == 429 or s >= 500:
                    reason = "reconnect" if room.ever_connected else "connect"
                    if not await self._wait_retry(room, status=s, retry_after=outcome.retry_after):
                        return
                    continue
                return self._fail(room, outcome.code or "refused", f"the server refused the connection ({s}): {why}", status=s)
            if isinstance(outcome, _NetworkError):
                self._emit_error(
                    RealtimeError(
                        "connect_failed", f"room {room.id}: could not connect: {outcome.error!r}", room_id=room.id
                    )
                )
                reason = "reconnect" if room.ever_connected else "connect"
                if not await self._wait_retry(room):
                    return
                continue
            # The socket was open (and possibly connected) and closed.
            code = outcome.code
            if outcome.was_connected and time.monotonic() - room.connected_at >= self._stable_after:
                room.attempt = 0
            if code == CloseCode.INVALID_FRAMES:
                return self._fail(
                    room, "invalid_frames",
                    f"the server closed the connection for invalid frames (4003): {outcome.reason}",
                    close_code=code,
                )
            if code == CloseCode.AUTH and self._get_token is None:
                return self._fail(
                    room, "token_expired", f"the server refused the token (4001): {outcome.reason}", close_code=code
                )
            reason = "expired" if code == CloseCode.AUTH else ("reconnect" if room.ever_connected else "connect")
            if not await self._wait_retry(room, code=code):
                return

    async def _fetch_token(self, room: _Room, reason: TokenReason) -> str:
        if self._get_token is None:
            return self._token or ""
        got = self._get_token(room.id, reason)
        if inspect.isawaitable(got):
            got = await got
        return got

    async def _wait_retry(
        self, room: _Room, *, code: int | None = None, status: int | None = None, retry_after: float | None = None
    ) -> bool:
        """Sleeps until the next attempt; False when the room gave up instead."""
        room.attempt += 1
        if self._max_attempts is not None and room.attempt > self._max_attempts:
            self._fail(
                room, "max_reconnect_attempts", f"gave up after {self._max_attempts} reconnect attempts",
                close_code=code, status=status,
            )
            return False
        delay = backoff_delay(
            room.attempt,
            initial_delay=self._initial_delay,
            max_delay=self._max_delay,
            multiplier=self._multiplier,
            random=self._random,
        )
        if code == CloseCode.RATE_LIMITED:
            delay += self._rate_limited_delay
        if retry_after is not None:
            # The server said when; the jitter on top spreads a crowd refused at once.
            delay += retry_after
        room.state = "reconnecting" if room.ever_connected else "connecting"
        self._update_state()
        self._emit("reconnecting", Reconnecting(room.id, room.attempt, delay, code, status))
        await asyncio.sleep(delay)
        return not self._closed

    async def _connect_once(self, room: _Room, token: str) -> _Outcome:
        params: dict[str, str] = {}
        room.resume_from = room.last_seq
        if room.last_seq is not None:
            params["since"] = str(room.last_seq)
        if self._types:
            params["types"] = ",".join(self._types)
        url = f"{self._ws_base}/rooms/{quote(room.id, safe='')}/subscribe"
        if params:
            url += "?" + urlencode(params)
        headers = {**self._headers, "Authorization": f"Bearer {token}"}
        room.dead_reason = None
        try:
            ws = await connect(
                url,
                additional_headers=headers,
                open_timeout=self._connect_timeout,
                # Keepalive is the protocol's text `ping` (answered without waking the room).
                ping_interval=None,
                close_timeout=self._connect_timeout,
                max_size=self._max_frame_bytes,
            )
        except InvalidStatus as err:
            res = err.response
            code, why = _error_body(res.body)
            return _Refused(res.status_code, _retry_after(res.headers.get("Retry-After")), code, why)
        except (OSError, TimeoutError, WebSocketException) as err:
            return _NetworkError(err)
        room.ws = ws
        keepalive: asyncio.Task[None] | None = None
        try:
            async with asyncio.timeout(self._connect_timeout):
                while room.state != "connected":
                    self._on_frame(room, await ws.recv())
            keepalive = asyncio.create_task(self._keepalive(room, ws))
            async for message in ws:
                self._on_frame(room, message)
        except TimeoutError:
            room.dead_reason = "connect timeout"
            ws.transport.abort()
        except ConnectionClosed:
            pass
        finally:
            if keepalive is not None:
                keepalive.cancel()
            was_connected = room.state == "connected"
            room.ws = None
            if self._closed:
                room.state = "closed"
        await ws.wait_closed()
        close_code = ws.close_code if ws.close_code is not None else 1006
        reason = room.dead_reason or ws.close_reason or ""
        if room.dead_reason is not None:
            close_code = 1006
        if not self._closed:
            room.state = "reconnecting" if room.ever_connected else "connecting"
            self._update_state()
            self._emit("disconnected", Disconnected(room.id, close_code, reason, was_connected))
        return _Closed(close_code, reason, was_connected)

    async def _keepalive(self, room: _Room, ws: ClientConnection) -> None:
        if not self._ping_interval > 0:
            return
        while True:
            await asyncio.sleep(self._ping_interval)
            room.heard.clear()
            try:
                await ws.send("ping")
            except ConnectionClosed:
                return
            try:
                async with asyncio.timeout(self._pong_timeout):
                    await room.heard.wait()
            except TimeoutError:
                # Gone without a close (a sleeping laptop, a NAT that forgot us): replace it.
                room.dead_reason = "keepalive timeout"
                ws.transport.abort()
                return

    @staticmethod
    async def _close_socket(ws: ClientConnection, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await ws.close(1000, "client closed")
        except TimeoutError:
            ws.transport.abort()

    # ---- frames ----

    def _on_frame(self, room: _Room, data: str | bytes) -> None:
        # Any frame proves the connection alive.
        room.heard.set()
        if not isinstance(data, str) or data == "pong":
            return
        try:
            frame = json.loads(data)
        except ValueError:
            return
        if not isinstance(frame, dict):
            return
        kind = frame.get("type")
        if kind in CONTROL_FRAMES and not isinstance(frame.get("seq"), int):
            if kind == "connected":
                self._on_hello(room, frame)
            elif kind == "subscribed":
                data_field = frame.get("data")
                types = data_field.get("types", []) if isinstance(data_field, dict) else []
                self._emit("subscribed", Subscribed(room.id, list(types)))
            elif kind == "error":
                self._emit_error(
                    RealtimeError(
                        str(frame.get("code", "server_error")),
                        f"room {room.id}: {frame.get('message', 'error frame from the server')}",
                        room_id=room.id,
                    )
                )
            return
        if isinstance(frame.get("id"), str) and isinstance(frame.get("seq"), int):
            self._on_notification(room, Notification.from_frame(frame, room.id))

    def _on_hello(self, room: _Room, hello: Mapping[str, Any]) -> None:
        since = room.resume_from
        room.state = "connected"
        room.ever_connected = True
        room.connected_at = time.monotonic()
        cid = hello.get("connectionId")
        room.connection_id = cid if isinstance(cid, str) else None
        server_seq = hello.get("lastSeq")
        server_seq = server_seq if isinstance(server_seq, int) else None
        # Without a known seq, start from the room's; a room whose log is behind ours (storage
        # reset) restarts ours.
        if server_seq is not None and (room.last_seq is None or server_seq < room.last_seq):
            room.last_seq = server_seq
        resumed = since is not None
        recovered = hello.get("recovered") is not False if resumed else None
        self._update_state()
        self._emit("connected", Connected(room.id, room.connection_id, server_seq, resumed, recovered))
        if since is not None and recovered is not None:
            self._emit("recovery", Recovery(room.id, since, server_seq, recovered))
        if room.ack_queue:
            self._spawn_flush(room, 0.0)

    def _on_notification(self, room: _Room, n: Notification) -> None:
        if room.last_seq is None or n.seq > room.last_seq:
            room.last_seq = n.seq
        rec = self._seen.get(n.id)
        if rec is not None:
            # Already delivered: a redelivery, a replay, or the same publish via another room.
            self._seen.move_to_end(n.id)
            rec.rooms.add(room.id)
            if n.requires_ack and rec.acked:
                self._queue_ack(room, n.id)  # the first ack may have been lost with its socket
            self._emit("duplicate", n)
            return
        if self._message_filter is not None:
            try:
                keep = self._message_filter(n)
            except Exception as err:
                self._emit_error(
                    RealtimeError("filter_error", f"room {room.id}: message_filter raised: {err!r}", room_id=room.id)
                )
                return
            if not keep:
                return
        entry = _Seen(rooms={room.id})
        self._seen[n.id] = entry
        while len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        room.inbox.put_nowait((n, entry))

    # ---- handing notifications to the app ----

    async def _dispatch_loop(self, room: _Room) -> None:
        while True:
            n, entry = await room.inbox.get()
            try:
                await self._dispatch(room, n, entry)
            except asyncio.CancelledError:
                self._forget(n.id, entry)  # closed while the app was handling it
                raise

    def _forget(self, nid: str, entry: _Seen) -> None:
        if self._seen.get(nid) is entry:
            del self._seen[nid]

    async def _dispatch(self, room: _Room, n: Notification, entry: _Seen) -> None:
        # Nothing is acked that nobody handled: wait for a handler or an `async for`.
        while not self._handlers.get("notification") and not self._streams:
            self._consumers.clear()
            await self._consumers.wait()
        handlers = list(self._handlers.get("notification", []))
        streams = list(self._streams)
        calls = [self._call(h, n) for h in handlers] + [s.offer(n) for s in streams]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None or any(r is False for r in results):
            # Not acked: the server redelivers it, and then it is handed to the app again.
            self._forget(n.id, entry)
            if failure is not None:
                err = RealtimeError(
                    "handler_error", f"room {room.id}: notification handler raised: {failure!r}", room_id=room.id
                )
                err.__cause__ = failure
                self._emit_error(err)
            return
        if n.requires_ack and self._auto_ack:
            self.ack(n.id)

    @staticmethod
    async def _call(handler: Callable[[Any], object], arg: object) -> bool:
        result = handler(arg)
        if inspect.isawaitable(result):
            await result
        return True

    async def _stream(self) -> AsyncIterator[Notification]:
        if self._shut:
            return
        fatal = self._first_fatal()
        if fatal is not None:
            raise fatal
        stream = _Stream()
        self._streams.add(stream)
        self._consumers.set()
        current: asyncio.Future[bool] | None = None
        try:
            while True:
                item = await stream.queue.get()
                if isinstance(item, _End):
                    if item.error is not None:
                        raise item.error
                    return
                n, current = item
                yield n
                # The consumer asked for the next one: it handled this one.
                if not current.done():
                    current.set_result(True)
                current = None
        finally:
            stream.open = False
            self._streams.discard(stream)
            self._refresh_consumers()
            if current is not None and not current.done():
                current.set_result(False)
            while not stream.queue.empty():
                left = stream.queue.get_nowait()
                if not isinstance(left, _End) and not left[1].done():
                    left[1].set_result(False)

    def _refresh_consumers(self) -> None:
        if self._handlers.get("notification") or self._streams:
            self._consumers.set()

    # ---- acks ----

    def _queue_ack(self, room: _Room, nid: str) -> None:
        room.ack_queue[nid] = None
        if room.ack_task is None or room.ack_task.done():
            self._spawn_flush(room, self._ack_delay)

    def _spawn_flush(self, room: _Room, delay: float) -> None:
        async def later() -> None:
            # Batched for a moment: one frame for a burst of acks.
            await asyncio.sleep(delay)
            room.ack_task = None
            await self._flush_acks(room)

        if room.ack_task is not None and not room.ack_task.done():
            room.ack_task.cancel()
        room.ack_task = asyncio.create_task(later())

    async def _flush_acks(self, room: _Room) -> None:
        ws = room.ws
        if not room.ack_queue or room.state != "connected" or ws is None:
            return
        ids = list(room.ack_queue)
        room.ack_queue.clear()
        for i in range(0, len(ids), MAX_ACK_IDS):
            chunk = ids[i : i + MAX_ACK_IDS]
            frame = {"type": "ack", "notificationId": chunk[0]} if len(chunk) == 1 else {"type": "ack", "ids": chunk}
            try:
                await ws.send(json.dumps(frame))
            except ConnectionClosed:
                # Sent with the next connection of this room instead.
                for nid in ids[i:]:
                    room.ack_queue[nid] = None
                return
            self._emit("ack", Acked(room.id, chunk))

    # ---- state, events ----

    def _fail(
        self,
        room: _Room,
        code: str,
        message: str,
        *,
        close_code: int | None = None,
        status: int | None = None,
    ) -> None:
        room.state = "error"
        err = RealtimeError(
            code, f"room {room.id}: {message}", room_id=room.id, fatal=True, close_code=close_code, status=status
        )
        room.fatal = err
        self._update_state()
        for stream in list(self._streams):
            stream.queue.put_nowait(_End(err))
        self._emit_error(err)

    def _first_fatal(self) -> RealtimeError | None:
        return next((r.fatal for r in self._rooms.values() if r.fatal is not None), None)

    def _emit_error(self, err: RealtimeError) -> None:
        if not self._handlers.get("error"):
            level = logging.ERROR if err.fatal else logging.WARNING
            log.log(level, "%s (%s)", err.message, err.code)
        self._emit("error", err)

    def _emit(self, event: EventName, arg: object) -> None:
        for handler in list(self._handlers.get(event, [])):
            try:
                result = handler(arg)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(partial(self._listener_done, event))
            except Exception as err:
                self._listener_failed(event, err)

    def _listener_done(self, event: EventName, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._listener_failed(event, exc)

    def _listener_failed(self, event: EventName, err: BaseException) -> None:
        if event == "error":
            log.error("an `error` listener raised", exc_info=err)
            return
        failure = RealtimeError("listener_error", f"a `{event}` listener raised: {err!r}")
        failure.__cause__ = err
        self._emit_error(failure)

    def _update_state(self) -> None:
        states = [_public_state(r) for r in self._rooms.values()]
        nxt: ConnectionState
        if self._closed:
            nxt = "disconnected"
        elif "error" in states:
            nxt = "error"
        elif all(s == "connected" for s in states):
            nxt = "connected"
        elif "reconnecting" in states:
            nxt = "reconnecting"
        elif "connecting" in states:
            nxt = "connecting"
        else:
            nxt = "disconnected"
        if nxt != self._state:
            prev = self._state
            self._state = nxt
            self._emit("state", StateChange(nxt, prev))
        # Wakes wait_connected() on any room's change (the overall state may stay "error").
        self._state_changed.set()
        self._state_changed = asyncio.Event()


def _public_state(room: _Room) -> ConnectionState:
    s = room.state
    if s == "idle" or s == "closed":
        return "disconnected"
    return s


def _normalize_types(types: Sequence[str]) -> list[str]:
    items = [types] if isinstance(types, str) else list(types)
    if not items or any(not isinstance(t, str) or not t for t in items):
        raise ValueError("types must be a non-empty list of type patterns")
    return list(dict.fromkeys(items))

