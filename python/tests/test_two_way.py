"""RealtimeClient's two-way side against the real worker: handlers by type and pattern, client
events between two clients, presence through joins, updates and leaves, sync() filling a gap,
rooms joined and left at runtime, ephemeral notifications, and the DEBUG log of a reconnect."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable

import pytest
from websockets.asyncio.client import ClientConnection, connect as real_connect

from helpers import Gate, Recorder, ServedWorker, TcpProxy, eventually, token_for, uid, with_deadline
from roomcast import ClientEvent, Notification, PresenceChange, PresenceJoined, PresenceLeft, RealtimeClient, TokenReason


def _team() -> tuple[str, Callable[[str], str]]:
    """A team room every user may enter, and a token maker for it."""
    room = f"team_{uid()}"
    return room, lambda sub: token_for(sub, rooms=[room])


async def _acked(worker: ServedWorker, room: str, index: int) -> bool:
    hist = await worker.history(room)
    return len(hist) > index and hist[index]["deliveryStatus"] == "acked"


async def test_handlers_by_type_exact_prefix_and_star(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    got: dict[str, list[str]] = {"notification": [], "note.created": [], "note.*": [], "*": []}
    for name, bucket in got.items():
        client.on(name, lambda m, b=bucket: b.append(m.type if isinstance(m, Notification) else m.event))
    await client.connect()
    await client.wait_connected(10)
    for t in ("note.created", "notes.x", "note", "note.a.b", "task.done"):
        await worker.publish(room, {"type": t})
    await eventually(lambda: len(got["notification"]) == 5, what="five notifications")
    assert got["note.created"] == ["note.created"]
    assert got["note.*"] == ["note.created", "note.a.b"], "not note, not notes.x"
    assert got["*"] == ["note.created", "notes.x", "note", "note.a.b", "task.done"]
    # A name that is neither an event nor a type is a clear error, not a handler that never runs.
    with pytest.raises(ValueError, match="unknown event"):
        client.on("note created", print)


async def test_a_type_handler_alone_gates_the_auto_ack(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    attempts: list[int] = []

    async def flaky(m: Notification | ClientEvent) -> None:
        assert isinstance(m, Notification)
        attempts.append(m.attempt)
        if len(attempts) == 1:
            raise RuntimeError("not yet")

    client.on("job.*", flaky)
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "job.done", "requiresAck": True})
    await eventually(lambda: len(attempts) == 2, what="redelivered after the handler raised")
    await eventually(lambda: _acked(worker, room, 0), what="acked after it returned")
    assert attempts == [1, 2]
    assert [e.code for e in rec["error"]] == ["handler_error"]


async def test_client_events_between_two_clients(worker: ServedWorker, make_client: Any) -> None:
    room, token = _team()
    alice, arec = make_client(worker.url, [room], token=token("alice"), event_rates="cursor.move=2/10s")
    bob, brec = make_client(worker.url, [room], token=token("bob"))
    to_alice: list[ClientEvent] = []
    to_bob: list[ClientEvent] = []
    typing: list[str] = []
    alice.on("event", to_alice.append)
    bob.on("event", to_bob.append)
    bob.on("typing.*", lambda m: typing.append(m.event if isinstance(m, ClientEvent) else m.type))
    assert await alice.emit(room, "typing.start") is False, "not connected yet: not queued"
    await alice.connect()
    await bob.connect()
    await alice.wait_connected(10)
    await bob.wait_connected(10)

    assert await alice.emit(room, "typing.start", {"field": "title"}) is True
    await eventually(lambda: len(to_bob) == 1, what="bob got alice's event")
    e = to_bob[0]
    assert (e.room_id, e.event, dict(e.data), e.user_id) == (room, "typing.start", {"field": "title"}, "alice")
    assert e.timestamp
    assert typing == ["typing.start"]
    # Bob answers; alice gets it, and never her own.
    assert await bob.emit(room, "typing.stop") is True
    await eventually(lambda: len(to_alice) == 1, what="alice got bob's event")
    assert [(x.event, x.user_id) for x in to_alice] == [("typing.stop", "bob")]

    # A name the server does not allow comes back as a non-fatal error; the socket carries on.
    assert await alice.emit(room, "chat.message", {"t": "hi"}) is True
    await arec.wait("error")
    assert [(x.code, x.server_code, x.fatal) for x in arec["error"]] == [("event_not_allowed", "event_not_allowed", False)]
    # The client's own limit for cursor.move (2 per 10 s): the third is not sent at all.
    assert [await alice.emit(room, "cursor.move", {"x": i}) for i in range(3)] == [True, True, False]
    assert await alice.emit(room, "typing.stop") is True
    await eventually(lambda: len(to_bob) == 4, what="two cursor moves and a typing.stop")
    assert [x.event for x in to_bob] == ["typing.start", "cursor.move", "cursor.move", "typing.stop"]
    assert [x.data.get("x") for x in to_bob[1:3]] == [0, 1]
    assert alice.state == "connected" and arec["disconnected"] == []
    with pytest.raises(ValueError, match="invalid event name"):
        await alice.emit(room, "no spaces")
    assert await alice.emit(f"team_{uid()}", "typing.start") is False, "a room the client does not hold"


async def test_presence_of_two_users_through_join_update_and_leave(worker: ServedWorker, make_client: Any) -> None:
    room, token = _team()
    other = f"user_{uid()}"
    alice, arec = make_client(worker.url, [room, other], token=token_for("alice", rooms=[room, other]),
                              presence=[room])
    changes: list[PresenceChange] = []
    joined: list[PresenceJoined] = []
    left: list[PresenceLeft] = []
    alice.on("presence", changes.append)
    alice.on("joined", joined.append)
    alice.on("left", left.append)
    await alice.connect()
    await alice.wait_connected(10)
    assert alice.presence(other) is None, "a room that does not watch presence"
    assert list(alice.presence(room) or {}) == ["alice"]
    assert alice.presence_count(room) == 1
    assert [c.change for c in changes] == ["snapshot"]

    bob, _ = make_client(worker.url, [room], token=token("bob"), presence=True)
    await bob.connect()
    await bob.wait_connected(10)
    await eventually(lambda: len(joined) == 1, what="alice saw bob arrive")
    assert (joined[0].room_id, joined[0].user_id) == (room, "bob")
    assert sorted(alice.presence(room) or {}) == ["alice", "bob"]
    assert alice.presence_count(room) == 2
    assert sorted(bob.presence(room) or {}) == ["alice", "bob"], "bob's snapshot lists both"
    assert bob.presence_count(room) == 2

    before = alice.presence(room)
    await bob.set_presence(room, {"status": "editing", "section": 3})
    await eventually(lambda: changes[-1].change == "updated", what="alice saw bob's state")
    users = alice.presence(room) or {}
    assert dict(users["bob"].state) == {"status": "editing", "section": 3}
    assert users["bob"].user_id == "bob" and users["bob"].connections == 1
    assert users is not before, "a new mapping on every change"
    assert changes[-1].user_id == "bob" and changes[-1].count == 2

    await bob.close()
    await eventually(lambda: len(left) == 1, what="alice saw bob leave")
    assert (left[0].user_id, left[0].room_id) == ("bob", room)
    assert list(alice.presence(room) or {}) == ["alice"]
    assert alice.presence_count(room) == 1
    assert [c.change for c in changes] == ["snapshot", "joined", "updated", "left"]
    with pytest.raises(ValueError, match="does not hold"):
        await alice.set_presence(f"team_{uid()}", {})


class _Lossy:
    """A client connection that loses the frames ``drop`` picks (a network that lost them)."""

    def __init__(self, ws: ClientConnection, drop: Callable[[str | bytes], bool]) -> None:
        self._ws = ws
        self._drop = drop

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)

    async def recv(self) -> str | bytes:
        while True:
            m = await self._ws.recv()
            if not self._drop(m):
                return m

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[str | bytes]:
        async for m in self._ws:
            if not self._drop(m):
                yield m


async def test_sync_fills_a_gap_once_without_reconnecting(
    worker: ServedWorker, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost: list[str] = []
    losing = False
    opened = 0

    async def lossy_connect(*args: Any, **kwargs: Any) -> _Lossy:
        nonlocal opened
        opened += 1

        def drop(m: str | bytes) -> bool:
            if losing and isinstance(m, str) and '"seq"' in m:
                lost.append(m)
                return True
            return False

        return _Lossy(await real_connect(*args, **kwargs), drop)

    monkeypatch.setattr("roomcast.room.connect", lossy_connect)
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    seen: list[int | None] = []
    client.on("notification", lambda n: seen.append(n.seq))
    synced: list[Any] = []
    client.on("synced", synced.append)
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "n.one"})
    await eventually(lambda: seen == [1], what="the first")
    losing = True
    await worker.publish(room, {"type": "n.two"})
    # Not requiresAck: the shared worker's quick ack rounds would redeliver it past the gap.
    await worker.publish(room, {"type": "n.three"})
    await eventually(lambda: len(lost) == 2, what="two frames lost on the way")
    losing = False
    assert client.last_seq(room) == 1

    results = await with_deadline(client.sync())
    assert [(r.room_id, r.since, r.last_seq, r.recovered) for r in results] == [(room, 1, 3, True)]
    assert seen == [1, 2, 3], "the gap, handed over before sync() returned"
    assert synced == results
    assert client.last_seq(room) == 3

    # Nothing missed now: a sync brings nothing again; live ones carry on; one socket all along.
    again = await with_deadline(client.sync(room))
    assert [(r.since, r.last_seq) for r in again] == [(3, 3)]
    await worker.publish(room, {"type": "n.four"})
    await eventually(lambda: seen == [1, 2, 3, 4], what="a live one after")
    assert rec["duplicate"] == [] and opened == 1
    a, b = await with_deadline(asyncio.gather(client.sync(), client.sync()))
    assert a == b, "concurrent calls share one sync"
    assert await client.sync(f"user_{uid()}") == [], "a room not held gives no result"


async def test_join_and_leave_at_runtime_resume_without_gap_or_duplicate(
    worker: ServedWorker, make_client: Any
) -> None:
    u = uid()
    room = f"user_{u}"
    req = f"request_q{u}"
    client, rec = make_client(worker.url, [], token=token_for(u, rooms=[req]))
    seen: list[tuple[str, int | None]] = []
    client.on("notification", lambda n: seen.append((n.room_id, n.seq)))
    await client.connect()
    assert client.rooms == [] and client.state == "disconnected"

    await worker.publish(room, {"type": "queued", "requiresAck": True})  # the offline queue
    await client.join(room)
    await client.wait_connected(10)
    await eventually(lambda: seen == [(room, 1)], what="the offline queue on a first join")

    await client.leave(room)
    assert client.rooms == [] and client.last_seq(room) == 1, "the position is kept"
    await eventually(lambda: _no_connections(worker, room), what="the socket closed")
    await worker.publish(room, {"type": "while.away"})
    await client.join(room)
    await client.wait_connected(10)
    await eventually(lambda: len(seen) == 2, what="resumed after the last seq")
    assert seen == [(room, 1), (room, 2)]

    # A request room whose job published before anyone subscribed: since=0 replays it all.
    await worker.publish(req, {"type": "job.started"})
    await worker.publish(req, {"type": "job.done"})
    await client.join(req, since=0)
    await client.wait_connected(10)
    await eventually(lambda: [s for r, s in seen if r == req] == [1, 2], what="the request room replayed")

    # Joining a held room with presence=True reopens it watching presence, losing nothing.
    assert client.presence(room) is None
    await client.join(room, presence=True)
    await client.wait_connected(10)
    assert list(client.presence(room) or {}) == [u]
    await worker.publish(room, {"type": "after.reopen"})
    await eventually(lambda: seen[-1] == (room, 3), what="live after the reopen")
    assert rec["duplicate"] == [] and rec["error"] == []
    assert sorted(client.rooms) == sorted([room, req])
    with pytest.raises(ValueError, match="invalid room id"):
        await client.join("../x")


async def _no_connections(worker: ServedWorker, room: str) -> bool:
    return bool((await worker.health(room))["connections"] == 0)


async def test_ephemeral_notifications_are_handed_over_never_acked_and_move_no_seq(
    worker: ServedWorker, make_client: Any
) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    seen: list[Notification] = []
    progress: list[Any] = []
    client.on("notification", seen.append)
    client.on("upload.*", lambda m: progress.append(m.data["pct"]))
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "note.created"})
    await worker.publish(room, {"type": "upload.progress", "data": {"pct": 40}, "ephemeral": True})
    await worker.publish(room, {"type": "upload.progress", "data": {"pct": 80}, "ephemeral": True})
    await worker.publish(room, {"type": "note.updated"})
    await eventually(lambda: len(seen) == 4, what="four notifications")
    assert [(n.type, n.seq, n.ephemeral) for n in seen] == [
        ("note.created", 1, False), ("upload.progress", None, True),
        ("upload.progress", None, True), ("note.updated", 2, False),
    ]
    assert progress == [40, 80]
    assert client.last_seq(room) == 2, "ephemeral ones move no seq"
    assert rec["ack"] == [], "never acked"
    assert len(await worker.history(room)) == 2, "never stored"


async def test_debug_lines_name_the_room_through_a_drop_and_a_resume(
    worker: ServedWorker, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="roomcast")
    u = uid()
    room = f"user_{u}"
    async with TcpProxy(worker.port) as proxy:
        client, rec = make_client(proxy.url, [room], token=token_for(u), random=lambda: 0.5)
        client.on("notification", lambda n: None)
        await client.connect()
        await client.wait_connected(10)
        await worker.publish(room, {"type": "a", "requiresAck": True})
        await rec.wait("ack")
        proxy.sever()
        await rec.wait("connected", 2)
    lines = [r.getMessage() for r in caplog.records if r.name == "roomcast" and r.levelno == logging.DEBUG]
    expected = [
        f"room {room}: socket opened",
        f"room {room}: connected (connection ",
        f"room {room}: acks flushed (1 ids)",
        f"room {room}: closed 1006",
        f"room {room}: reconnecting in 0.025 s (backoff, attempt 1, token for reconnect)",
        f"room {room}: resuming since 1",
        f"room {room}: socket opened",
        f"room {room}: connected (connection ",
    ]
    at = 0
    for e in expected:  # in this order
        at = next((i for i in range(at, len(lines)) if lines[i].startswith(e)), -1) + 1
        assert at > 0, f"no {e!r} in order in:\n" + "\n".join(lines)
    assert any("last_seq=1, recovered=True" in line for line in lines), "\n".join(lines)


async def test_set_presence_is_coalesced_under_the_servers_3_per_10_s(worker: ServedWorker, make_client: Any) -> None:
    room, token = _team()
    alice, arec = make_client(worker.url, [room], token=token("alice"))
    bob, _ = make_client(worker.url, [room], token=token("bob"), presence=True)
    states: list[Any] = []
    bob.on("presence", lambda c: states.append(c.users["alice"].state.get("n")) if c.change == "updated" else None)
    await alice.connect()
    await bob.connect()
    await alice.wait_connected(10)
    await bob.wait_connected(10)
    for n in range(1, 6):
        await alice.set_presence(room, {"n": n})
    await alice.set_presence(room, {"n": 5})  # the same again: nothing more to send
    await eventually(lambda: states == [1, 2, 3], what="the first three at once")
    # The fourth is skipped; the newest is sent once the server's window allows it.
    await eventually(lambda: states == [1, 2, 3, 5], timeout=15, what="the newest after the window")
    assert arec["error"] == [], "nothing refused"


async def test_presence_after_a_reconnect_is_the_new_snapshot_with_the_changes_announced(
    worker: ServedWorker, make_client: Any
) -> None:
    room, token = _team()
    gate: Gate | None = None

    async def get_token(room_id: str, reason: TokenReason) -> str:
        if gate is not None and reason == "reconnect":
            await gate.pass_through()
        return token("alice")

    async with TcpProxy(worker.port) as proxy:
        alice, arec = make_client(proxy.url, [room], get_token=get_token, presence=True)
        joined: list[str] = []
        left: list[str] = []
        alice.on("joined", lambda j: joined.append(j.user_id))
        alice.on("left", lambda l: left.append(l.user_id))
        bob, _ = make_client(worker.url, [room], token=token("bob"))
        await alice.connect()
        await alice.wait_connected(10)
        await bob.connect()
        await eventually(lambda: joined == ["bob"], what="bob arrived")

        gate = Gate()
        proxy.sever()
        await with_deadline(gate.asked.wait())  # alice holds no socket now
        assert sorted(alice.presence(room) or {}) == ["alice", "bob"], "kept as last known meanwhile"
        await bob.close()
        carol, _ = make_client(worker.url, [room], token=token("carol"))
        await carol.connect()
        await carol.wait_connected(10)

        async def only_carol() -> bool:
            return bool((await worker.health(room))["connections"] == 1)

        await eventually(only_carol, what="the room holds carol's socket alone")
        gate.opened.set()
        await arec.wait("connected", 2)
        assert sorted(alice.presence(room) or {}) == ["alice", "carol"], "replaced by the new snapshot"
        assert joined == ["bob", "carol"] and left == ["bob"], "who came and went meanwhile"
        assert alice.presence_count(room) == 2
