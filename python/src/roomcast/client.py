"""``RealtimeClient``: receive roomcast notifications over WebSockets, with asyncio.

It gives what the JavaScript client (client/roomcast.js) gives: reconnect with exponential
backoff and full jitter, keepalive, resume with ``since=``, dedupe by id, ack after the app
handled a notification, fresh tokens on 4001 and 401, a clear end on every refusal, handlers
by type, presence, client events, sync, and rooms joined and left at runtime. Each room's
connection is a ``RoomConnection`` (room.py); this class is the façade over them.
Guide: docs/client-python.md.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import random as _random
from collections import OrderedDict
from functools import partial
from typing import (
    Any,
    AsyncIterator,
    Callable,
    Iterable,
    Literal,
    Mapping,
    Sequence,
    Union,
    get_args,
    overload,
)

from ._types import (
    Acked,
    ClientEvent,
    Connected,
    ConnectionState,
    Disconnected,
    Notification,
    PresenceChange,
    PresenceJoined,
    PresenceLeft,
    PresenceUser,
    RealtimeError,
    Reconnecting,
    Recovery,
    RoomStatus,
    StateChange,
    Subscribed,
    Synced,
)
from ._protocol import ROOM_ID, TYPE, backoff_delay, is_pattern, matches_type, parse_event_rates, ws_base
from .room import Hooks, Options, RoomConnection, Seen, TokenProvider

__all__ = ["RealtimeClient", "backoff_delay", "matches_type", "TokenProvider"]

log = logging.getLogger("roomcast")

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
    "status",
    "presence",
    "joined",
    "left",
    "event",
    "synced",
]
"""The client's own events. Any other name given to ``on`` is a notification type or client
event name, or a pattern of them."""

_EVENTS = frozenset(get_args(EventName))
# How many left rooms' positions a client remembers for a later join.
MAX_POSITIONS = 256
# How many ephemeral ids are remembered to drop the same publish arriving through a second room.
EPHEMERAL_IDS = 256

Handler = Callable[[Any], object]


class _End:
    def __init__(self, error: RealtimeError | None) -> None:
        self.error = error


class _Stream:
    """One ``async for`` over the client: its queue of notifications to hand over."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Notification, asyncio.Future[bool]] | _End] = asyncio.Queue()
        self.open = True

    async def offer(self, n: Notification) -> bool:
        """Hands ``n`` to the consumer; True once its loop body finished without raising."""
        if not self.open:
            return False
        fut: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.queue.put_nowait((n, fut))
        return await fut


class RealtimeClient:
    """Holds one WebSocket per room, keeps it alive, resumes after drops without gaps or
    duplicates, and acknowledges notifications once the app has handled them.

    Use it as ``async with RealtimeClient(...) as client:`` (or ``await client.connect()`` …
    ``await client.close()``), and receive notifications with ``async for n in client:``,
    ``client.on("notification", handler)`` or ``client.on("note.*", handler)``.
    See docs/client-python.md.
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
        presence: bool | Sequence[str] = False,
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
        client_event_rate: int = 20,
        event_rates: str | Mapping[str, tuple[int, float]] | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        base = url or os.environ.get("ROOMCAST_URL")
        if not base:
            raise ValueError("RealtimeClient needs `url` (or ROOMCAST_URL in the environment)")
        room_list = [rooms] if isinstance(rooms, str) else list(rooms)
        for r in room_list:
            _check_room_id(r)
        if token is None and get_token is None:
            raise ValueError("RealtimeClient needs `token` (a JWT) or `get_token` (a callable)")
        if dedupe_size < 1:
            raise ValueError("dedupe_size must be at least 1")
        if not isinstance(presence, bool) and (
            isinstance(presence, str) or not isinstance(presence, Sequence) or not all(isinstance(r, str) for r in presence)
        ):
            raise ValueError("presence is True (every room), False, or a list of room ids")
        self._opts = Options(
            ws_base=ws_base(base),
            token=token,
            get_token=get_token,
            initial_delay=initial_delay,
            max_delay=max_delay,
            multiplier=multiplier,
            stable_after=stable_after,
            rate_limited_delay=rate_limited_delay,
            max_attempts=max_reconnect_attempts,
            ping_interval=ping_interval,
            pong_timeout=pong_timeout,
            connect_timeout=connect_timeout,
            ack_delay=ack_delay,
            max_frame_bytes=max_frame_bytes,
            headers=dict(headers or {}),
            random=random or _random.random,
            client_event_rate=client_event_rate,
            event_rates=parse_event_rates(event_rates),
        )
        self._hooks = Hooks(
            fire=self._fire,
            admit=self._admit,
            admit_ephemeral=self._admit_ephemeral,
            hand_over=self._hand_over,
            on_event=self._on_event,
            forget=self._forget,
            changed=self._update_state,
            failed=self._room_failed,
            types=lambda: self._types,
        )
        self._types: list[str] = list(dict.fromkeys(types))
        self._auto_ack = auto_ack
        self._message_filter = message_filter
        self._dedupe_size = dedupe_size
        self._presence_rooms: bool | frozenset[str] = (
            presence if isinstance(presence, bool) else frozenset(presence)
        )
        self._rooms: dict[str, RoomConnection] = {}
        for rid in dict.fromkeys(room_list):
            self._rooms[rid] = self._new_room(rid, (since or {}).get(rid))
        # Positions of rooms that were left, so that joining again resumes.
        self._positions: OrderedDict[str, int] = OrderedDict()
        self._seen: OrderedDict[str, Seen] = OrderedDict()
        self._ephemeral: OrderedDict[str, set[str]] = OrderedDict()
        self._handlers: dict[str, list[Handler]] = {}
        self._patterns: dict[str, list[Handler]] = {}
        self._streams: set[_Stream] = set()
        self._consumers = asyncio.Event()
        self._state: ConnectionState = "disconnected"
        self._state_changed = asyncio.Event()
        self._closed = True  # not connecting: before connect() and after close()
        self._shut = False  # close() was called (and connect() not since)
        self._tasks: set[asyncio.Future[Any]] = set()

    def _new_room(self, room_id: str, since: int | None, presence: bool | None = None) -> RoomConnection:
        watch = presence if presence is not None else (
            self._presence_rooms is True or (not isinstance(self._presence_rooms, bool) and room_id in self._presence_rooms)
        )
        return RoomConnection(room_id, since=since, watch_presence=watch, options=self._opts, hooks=self._hooks)

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
        return room.public_state if room else None

    def room_status(self, room_id: str) -> RoomStatus | None:
        """One room's state, attempt count, last connection time, last seq and fatal error."""
        room = self._rooms.get(room_id)
        return room.status() if room else None

    def last_seq(self, room_id: str) -> int | None:
        """The last seq seen in a room (also one the client left); persist it and pass it back
        as ``since`` to resume across restarts of your process."""
        room = self._rooms.get(room_id)
        return room.last_seq if room else self._positions.get(room_id)

    def presence(self, room_id: str) -> Mapping[str, PresenceUser] | None:
        """Who is online in a presence-watching room: user id -> ``PresenceUser``. A new
        read-only mapping on every change; empty until the room first connects. None for a room
        that does not watch presence or that the client does not hold."""
        room = self._rooms.get(room_id)
        return room.presence if room else None

    def presence_count(self, room_id: str) -> int | None:
        """How many users are online in a presence-watching room (None before it first
        connected). It can exceed ``len(presence(room_id))``: the server lists the first 100
        users when a connection opens, then everyone who arrives."""
        room = self._rooms.get(room_id)
        return room.presence_count if room else None

    async def connect(self) -> None:
        """Opens every room that is not open or opening (also restarts rooms stopped by a
        fatal error). Returns at once; ``wait_connected()`` waits for the sockets."""
        self._closed = False
        self._shut = False
        for room in self._rooms.values():
            room.start()
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
                await self._state_changed.wait()

    async def close(self, timeout: float = 2.0) -> None:
        """Sends pending acks, closes every socket (code 1000) and stops reconnecting. Returns
        once the sockets are closed (at most ``timeout`` seconds each) and the client's tasks
        have ended. ``async for`` loops over the client end."""
        self._closed = True
        self._shut = True
        rooms = list(self._rooms.values())
        for room in rooms:
            await room.flush_acks()
        await asyncio.gather(*(r.stop("closed", timeout) for r in rooms), return_exceptions=True)
        await asyncio.gather(*(r.drop_inbox() for r in rooms), return_exceptions=True)
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for room in rooms:
            room.clear_presence()
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

    async def join(self, room_id: str, *, since: int | None = None, presence: bool = False) -> None:
        """Adds a room and opens it (on a closed client: at the next ``connect()``). ``since``
        resumes after that seq (0: everything the room still holds); without it, a room this
        client left earlier resumes where it was, and a new one starts with the offline queue.
        ``presence=True`` watches the room's presence. Joining a room the client holds does
        nothing, except that ``presence=True`` on one that does not watch presence yet reopens
        its socket with presence on (resuming after its last seq: nothing is lost)."""
        _check_room_id(room_id)
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            raise ValueError(f"since must be an integer >= 0, got {since!r}")
        held = self._rooms.get(room_id)
        if held is not None:
            if presence and not held.watch_presence:
                held.watch_presence = True
                if not self._closed and held.state not in ("error", "closed", "idle"):
                    await held.restart()
                    self._update_state()
            return
        remembered = self._positions.pop(room_id, None)
        room = self._new_room(room_id, since if since is not None else remembered, True if presence else None)
        self._rooms[room_id] = room
        if not self._closed:
            room.start()
        self._update_state()

    async def leave(self, room_id: str, timeout: float = 2.0) -> None:
        """Removes a room: sends its pending acks, closes its socket, stops reconnecting it. Its
        last seq is remembered (``last_seq`` still answers), so a later ``join`` resumes without
        a gap. Returns once the socket closed (at most ``timeout`` seconds)."""
        room = self._rooms.pop(room_id, None)
        if room is None:
            return
        await room.flush_acks()
        await room.stop("closed", timeout)
        await room.drop_inbox()
        room.clear_presence()
        if room.last_seq is not None:
            self._positions[room_id] = room.last_seq
            while len(self._positions) > MAX_POSITIONS:
                self._positions.popitem(last=False)
        self._update_state()

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
                    room.queue_ack(nid)

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
            if await room.send_text(text):
                sent += 1
        return sent

    async def emit(self, room_id: str, event: str, data: Mapping[str, Any] | None = None) -> bool:
        """Sends a client event (e.g. ``typing.start``) to the room's other connections; the
        server stamps it with this user's id and must allow the name (``CLIENT_EVENT_TYPES``).
        Events are not queued: False when the room is not connected, or when sending it would
        exceed ``client_event_rate`` events per 10 s or an ``event_rates`` limit (the
        server would refuse it)."""
        if not isinstance(event, str) or not TYPE.match(event):
            raise ValueError(f"invalid event name {event!r}: 1-128 characters of A-Z a-z 0-9 _ . : -")
        if data is not None and not isinstance(data, Mapping):
            raise TypeError("emit: data must be a mapping (a JSON object)")
        room = self._rooms.get(room_id)
        if room is None:
            return False
        return await room.emit(event, data)

    async def set_presence(self, room_id: str, state: Mapping[str, Any]) -> None:
        """Sets this user's presence state in a room (a JSON object): every presence watcher of
        the room sees it. The server takes at most 3 per 10 s per connection, so calls beyond
        that are coalesced: the newest state is sent as soon as the window allows. Kept across
        reconnects (sent again on each new connection); the state last sent is not sent again."""
        room = self._rooms.get(room_id)
        if room is None:
            raise ValueError(f"set_presence: the client does not hold room {room_id!r}")
        if not isinstance(state, Mapping):
            raise TypeError("set_presence: the state must be a mapping (a JSON object)")
        await room.set_presence(state)

    async def sync(self, room_id: str | None = None) -> list[Synced]:
        """Asks the server for everything published after the last seq this client saw, in
        every connected room (or one), without reconnecting. Returns, once what came back has
        been handed to the app, one ``Synced`` per room that answered (rooms not connected are
        left out: they resume when they reconnect). Concurrent calls share one request per room."""
        if room_id is None:
            rooms = list(self._rooms.values())
        else:
            held = self._rooms.get(room_id)
            rooms = [held] if held is not None else []
        results = await asyncio.gather(*(r.sync() for r in rooms))
        return [r for r in results if r is not None]

    # Handler registration, typed per event. Handlers may be plain functions or coroutine
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
    @overload
    def on(self, event: Literal["status"], handler: Callable[[RoomStatus], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["presence"], handler: Callable[[PresenceChange], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: Literal["joined"], handler: Callable[[PresenceJoined], object]
    ) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["left"], handler: Callable[[PresenceLeft], object]) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["event"], handler: Callable[[ClientEvent], object]) -> Callable[[], None]: ...
    @overload
    def on(self, event: Literal["synced"], handler: Callable[[Synced], object]) -> Callable[[], None]: ...
    @overload
    def on(
        self, event: str, handler: Callable[[Union[Notification, ClientEvent]], object]
    ) -> Callable[[], None]: ...
    def on(self, event: str, handler: Callable[[Any], object]) -> Callable[[], None]:
        """Adds a handler. A name the client defines (``notification``, ``connected``,
        ``presence``, ``event``…) is that event. Any other name is a notification type or client
        event name, or a pattern of them (``memory.created``, ``note.*``, ``*``): the handler gets
        each matching ``Notification`` (after the ``notification`` handlers, and like them
        awaited before the auto-ack) and each matching ``ClientEvent``."""
        if not callable(handler):
            raise TypeError("handler must be callable")
        if event in _EVENTS:
            table = self._handlers
        elif is_pattern(event):
            table = self._patterns
        else:
            raise ValueError(
                f"unknown event {event!r}: not one of {', '.join(sorted(_EVENTS))}, "
                "nor a notification type or a pattern like 'note.*'"
            )
        handlers = table.setdefault(event, [])
        # Wrapped so that the same function added twice is removed once per `on`.
        entry: Handler = lambda arg: handler(arg)  # noqa: E731
        handlers.append(entry)
        if table is self._patterns or event == "notification":
            self._consumers.set()

        def off() -> None:
            if entry in handlers:
                handlers.remove(entry)
            if not handlers and table.get(event) is handlers:
                del table[event]
            self._refresh_consumers()

        return off

    # ---- what rooms ask of the client ----

    def _admit(self, room: RoomConnection, n: Notification) -> Seen | None:
        rec = self._seen.get(n.id)
        if rec is not None:
            # Already delivered: a redelivery, a replay, or the same publish via another room.
            self._seen.move_to_end(n.id)
            rec.rooms.add(room.id)
            if n.requires_ack and rec.acked:
                room.queue_ack(n.id)  # the first ack may have been lost with its socket
            self._fire("duplicate", n)
            return None
        if not self._filter(room, n):
            return None
        entry = Seen(rooms={room.id})
        self._seen[n.id] = entry
        while len(self._seen) > self._dedupe_size:
            self._seen.popitem(last=False)
        return entry

    def _admit_ephemeral(self, room: RoomConnection, n: Notification) -> bool:
        """Ephemeral ids are kept apart from stored ones (an ephemeral publish may reuse a stored
        id). The same publish through a second room is dropped; the same id again through the
        same room is a new publish that reused it."""
        via = self._ephemeral.get(n.id)
        if via is not None and room.id not in via:
            via.add(room.id)
            self._fire("duplicate", n)
            return False
        self._ephemeral.pop(n.id, None)
        self._ephemeral[n.id] = {room.id}
        while len(self._ephemeral) > EPHEMERAL_IDS:
            self._ephemeral.popitem(last=False)
        return self._filter(room, n)

    def _filter(self, room: RoomConnection, n: Notification) -> bool:
        if self._message_filter is None:
            return True
        try:
            return bool(self._message_filter(n))
        except Exception as err:
            self._fire(
                "error",
                RealtimeError("filter_error", f"room {room.id}: message_filter raised: {err!r}", room_id=room.id),
            )
            return False

    def _forget(self, nid: str, entry: Seen) -> None:
        if self._seen.get(nid) is entry:
            del self._seen[nid]

    def _typed(self, name: str) -> list[Handler]:
        """The handlers of a notification type or event name: exact and matching patterns."""
        return [h for pattern, hs in self._patterns.items() if matches_type(pattern, name) for h in hs]

    async def _hand_over(self, room: RoomConnection, n: Notification, entry: Seen | None) -> None:
        # Nothing is acked that nobody handled: wait for a handler or an `async for`.
        while not self._handlers.get("notification") and not self._patterns and not self._streams:
            self._consumers.clear()
            await self._consumers.wait()
        handlers = list(self._handlers.get("notification", [])) + self._typed(n.type)
        streams = list(self._streams)
        calls = [_call(h, n) for h in handlers] + [s.offer(n) for s in streams]
        results = await asyncio.gather(*calls, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None or any(r is False for r in results):
            # Not acked: the server redelivers it, and then it is handed to the app again.
            if entry is not None:
                self._forget(n.id, entry)
            if failure is not None:
                err = RealtimeError(
                    "handler_error", f"room {room.id}: notification handler raised: {failure!r}", room_id=room.id
                )
                err.__cause__ = failure
                self._fire("error", err)
            return
        if entry is not None and n.requires_ack and self._auto_ack:
            self.ack(n.id)

    def _on_event(self, room: RoomConnection, e: ClientEvent) -> None:
        """A client event from another connection: to `event` handlers, then matching names."""
        self._fire("event", e)
        for h in self._typed(e.event):
            self._call_soon(h, e, room)

    def _call_soon(self, handler: Handler, arg: object, room: RoomConnection) -> None:
        def failed(err: BaseException) -> None:
            failure = RealtimeError("handler_error", f"room {room.id}: event handler raised: {err!r}", room_id=room.id)
            failure.__cause__ = err
            self._fire("error", failure)

        try:
            result = handler(arg)
        except Exception as err:
            failed(err)
            return
        if inspect.isawaitable(result):
            task = asyncio.ensure_future(result)
            self._tasks.add(task)

            def done(t: asyncio.Future[Any]) -> None:
                self._tasks.discard(t)
                if not t.cancelled() and t.exception() is not None:
                    failed(t.exception())  # type: ignore[arg-type]

            task.add_done_callback(done)

    def _room_failed(self, err: RealtimeError) -> None:
        for stream in list(self._streams):
            stream.queue.put_nowait(_End(err))
        self._fire("error", err)

    # ---- iteration ----

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
        if self._handlers.get("notification") or self._patterns or self._streams:
            self._consumers.set()

    # ---- state, events ----

    def _first_fatal(self) -> RealtimeError | None:
        return next((r.fatal for r in self._rooms.values() if r.fatal is not None), None)

    def _fire(self, event: str, arg: object) -> None:
        if event == "error" and not self._handlers.get("error"):
            assert isinstance(arg, RealtimeError)
            level = logging.ERROR if arg.fatal else logging.WARNING
            log.log(level, "%s (%s)", arg.message, arg.code)
        for handler in list(self._handlers.get(event, [])):
            try:
                result = handler(arg)
                if inspect.isawaitable(result):
                    task = asyncio.ensure_future(result)
                    self._tasks.add(task)
                    task.add_done_callback(partial(self._listener_done, event))
            except Exception as err:
                self._listener_failed(event, err)

    def _listener_done(self, event: str, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._listener_failed(event, exc)

    def _listener_failed(self, event: str, err: BaseException) -> None:
        if event == "error":
            log.error("an `error` listener raised", exc_info=err)
            return
        failure = RealtimeError("listener_error", f"a `{event}` listener raised: {err!r}")
        failure.__cause__ = err
        self._fire("error", failure)

    def _update_state(self) -> None:
        for room in list(self._rooms.values()):
            key = (room.public_state, room.attempt, room.last_connected_at)
            if key != room.status_key:
                room.status_key = key
                self._fire("status", room.status())
        states = [r.public_state for r in self._rooms.values()]
        nxt: ConnectionState
        if self._closed or not states:
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
            self._fire("state", StateChange(nxt, prev))
        # Wakes wait_connected() on any room's change (the overall state may stay "error").
        self._state_changed.set()
        self._state_changed = asyncio.Event()


async def _call(handler: Handler, arg: object) -> bool:
    result = handler(arg)
    if inspect.isawaitable(result):
        await result
    return True


def _check_room_id(r: object) -> None:
    if not isinstance(r, str) or not ROOM_ID.match(r):
        raise ValueError(f"invalid room id: {r!r}")


def _normalize_types(types: Sequence[str]) -> list[str]:
    items = [types] if isinstance(types, str) else list(types)
    if not items or any(not isinstance(t, str) or not t for t in items):
        raise ValueError("types must be a non-empty list of type patterns")
    return list(dict.fromkeys(items))
