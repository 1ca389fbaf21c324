"""RealtimeClient against the real worker: delivery, acks, redelivery, dedupe, filters,
iteration and shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from helpers import Recorder, ServedWorker, eventually, token_for, uid, with_deadline
from roomcast import Broadcaster, Notification, RealtimeClient, RealtimeError
from helpers import API_KEY


async def test_delivers_in_order_and_auto_ack_stops_redelivery(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    handled: list[Notification] = []

    async def handler(n: Notification) -> None:
        await asyncio.sleep(0.01)  # an async handler: acked only after it returns
        handled.append(n)

    client.on("notification", handler)
    await client.connect()
    await client.wait_connected(10)
    for i in range(1, 4):
        await worker.publish(room, {"type": "note.created", "data": {"i": i}, "requiresAck": True})
    await eventually(lambda: len(handled) == 3, what="three notifications")

    async def all_acked() -> bool:
        return all(h["deliveryStatus"] == "acked" for h in await worker.history(room))

    await eventually(all_acked, what="every notification acked")
    hist = await worker.history(room)
    assert [h["attempts"] for h in hist] == [1, 1, 1], "acked on first delivery: no redelivery round"
    assert all(h["ackedBy"] == u for h in hist)
    assert [n.seq for n in handled] == [1, 2, 3]
    assert [n.data["i"] for n in handled] == [1, 2, 3]
    assert all(n.requires_ack and n.attempt == 1 and n.room_id == room for n in handled)
    # Three ack rounds (300 ms each) later, still nothing was delivered again.
    assert await rec.quiet("duplicate", 1.0)
    assert len(handled) == 3
    assert client.last_seq(room) == 3


async def test_a_raising_handler_gets_the_redelivery(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u))
    attempts: list[int] = []

    def handler(n: Notification) -> None:
        attempts.append(n.attempt)
        if len(attempts) == 1:
            raise RuntimeError("the app could not show it yet")

    client.on("notification", handler)
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "task.done", "requiresAck": True})
    await eventually(lambda: len(attempts) == 2, what="the redelivery reached the handler")

    async def acked() -> bool:
        return bool((await worker.history(room))[0]["deliveryStatus"] == "acked")

    await eventually(acked, what="acked after the second, successful handling")
    assert attempts == [1, 2]
    assert (await worker.history(room))[0]["attempts"] == 2
    errors = [e for e in rec["error"] if e.code == "handler_error"]
    assert len(errors) == 1 and not errors[0].fatal and errors[0].room_id == room
    assert "could not show it yet" in errors[0].message
    assert isinstance(errors[0].__cause__, RuntimeError)


async def test_async_for_acks_after_the_body_and_not_when_it_raises(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, _ = make_client(worker.url, [room], token=token_for(u))
    await client.connect()
    await client.wait_connected(10)
    # Published before anyone iterates: held for the loop, not acked unseen.
    await worker.publish(room, {"type": "a", "requiresAck": True})
    await worker.publish(room, {"type": "b", "requiresAck": True})
    seen: list[tuple[str, int]] = []

    async def statuses() -> list[str]:
        return [h["deliveryStatus"] for h in await worker.history(room)]

    async def raising_loop() -> None:
        async for n in client:
            seen.append((n.type, n.attempt))
            if n.type == "b":
                raise ValueError("body failed")

    with pytest.raises(ValueError):
        await with_deadline(raising_loop())
    assert seen == [("a", 1), ("b", 1)]
    # a: its body finished and the loop asked for the next one: acked. b: the body raised.
    await eventually(lambda: _eq(statuses(), ["acked", "pending"]), what="a acked, b still pending")

    async def next_loop() -> None:
        async for n in client:
            seen.append((n.type, n.attempt))
            client.ack(n.id)  # leaving the loop early: ack explicitly what was handled
            break

    await with_deadline(next_loop())
    assert seen[2][0] == "b" and seen[2][1] >= 2, "the server's redelivery of b"
    await eventually(lambda: _eq(statuses(), ["acked", "acked"]), what="b acked")
    assert len(seen) == 3


async def _eq(coro: Any, want: Any) -> bool:
    return bool(await coro == want)


async def test_one_publish_to_user_and_request_rooms_is_seen_once_and_acked_in_both(
    worker: ServedWorker, make_client: Any
) -> None:
    u = uid()
    req = f"q{u}"
    rooms = [f"user_{u}", f"request_{req}"]
    client, rec = make_client(worker.url, rooms, token=token_for(u, rooms=[f"request_{req}"]))
    seen: list[Notification] = []
    client.on("notification", seen.append)
    await client.connect()
    await client.wait_connected(10)
    async with Broadcaster(worker.url, API_KEY) as rc:
        result = await rc.broadcast(u, "note.creation.completed", {"noteId": "n1"}, request_id=req, requires_ack=True)
    assert set(result.rooms) == set(rooms)
    await rec.wait("duplicate")
    assert len(seen) == 1
    assert seen[0].id == result.id and seen[0].request_id == req

    async def both_acked() -> bool:
        return [(await worker.history(r))[0]["deliveryStatus"] for r in rooms] == ["acked", "acked"]

    await eventually(both_acked, what="acked in both rooms")
    assert len(seen) == 1


async def test_type_filters_on_connect_and_subscribe_unsubscribe(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    client, rec = make_client(worker.url, [room], token=token_for(u), types=["note.*"])
    seen: list[str] = []
    client.on("notification", lambda n: seen.append(n.type))
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "task.created"})
    await worker.publish(room, {"type": "note.created"})
    await eventually(lambda: seen == ["note.created"], what="only note.*")

    await client.subscribe(["task.*"])
    subscribed = await rec.wait("subscribed")
    assert subscribed[0].types == ["note.*", "task.*"]
    await worker.publish(room, {"type": "task.done"})
    await eventually(lambda: seen[-1:] == ["task.done"], what="task.* after subscribe")

    await client.unsubscribe(["note.*"])
    await rec.wait("subscribed", 2)
    assert rec["subscribed"][1].types == ["task.*"]
    assert client.types == ["task.*"]
    await worker.publish(room, {"type": "note.updated"})
    await worker.publish(room, {"type": "task.closed"})
    # Per room, notifications come in seq order: task.closed arriving proves note.updated was
    # filtered out, not late.
    await eventually(lambda: seen[-1:] == ["task.closed"], what="task.closed")
    assert seen == ["note.created", "task.done", "task.closed"]


async def test_async_with_closes_the_sockets_and_ends_iteration(worker: ServedWorker) -> None:
    u = uid()
    room = f"user_{u}"
    got: list[str] = []

    async def consume(client: RealtimeClient) -> None:
        async for n in client:
            got.append(n.type)

    async with RealtimeClient(worker.url, [room], token=token_for(u)) as client:
        await client.wait_connected(10)
        consumer = asyncio.create_task(consume(client))
        assert (await worker.health(room))["connections"] == 1
        await worker.publish(room, {"type": "hello"})
        await eventually(lambda: got == ["hello"], what="delivered to the loop")
    assert client.state == "disconnected"
    await with_deadline(consumer)  # the loop ended by itself
    await eventually(_no_connections(worker, room), what="the server saw the socket close")


def _no_connections(worker: ServedWorker, room: str) -> Any:
    async def check() -> bool:
        return bool((await worker.health(room))["connections"] == 0)

    return check


async def test_4003_invalid_frames_stop_the_room_for_good(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    client, rec = make_client(worker.url, [f"user_{u}"], token=token_for(u))
    await client.connect()
    await client.wait_connected(10)
    for _ in range(10):
        await client.send("not json")
    await rec.wait("disconnected")
    assert rec["disconnected"][0].code == 4003
    await eventually(lambda: client.state == "error", what="stopped")
    fatal = [e for e in rec["error"] if e.fatal]
    assert [(e.code, e.close_code, e.room_id) for e in fatal] == [("invalid_frames", 4003, f"user_{u}")]
    with pytest.raises(RealtimeError) as info:
        await client.wait_connected(1)
    assert info.value.code == "invalid_frames"
    assert await rec.quiet("reconnecting", 0.5)
    assert rec["reconnecting"] == []


async def test_keepalive_replaces_a_peer_that_stops_answering(make_client: Any) -> None:
    # A stand-in server: says `connected`, then never answers anything. The client is under test.
    accepted = 0
    received: list[Any] = []

    async def handler(ws: ServerConnection) -> None:
        nonlocal accepted
        accepted += 1
        await ws.send('{"type":"connected","roomId":"user_k","connectionId":"c%d","lastSeq":0}' % accepted)
        async for m in ws:
            received.append(m)

    async with serve(handler, "127.0.0.1", 0, ping_interval=None) as server:
        port = server.sockets[0].getsockname()[1]
        client, rec = make_client(f"http://127.0.0.1:{port}", ["user_k"], token="t", ping_interval=0.1, pong_timeout=0.08)
        await client.connect()
        await client.wait_connected(5)
        drops = await rec.wait("disconnected", timeout=5)
        assert (drops[0].code, drops[0].reason, drops[0].was_connected) == (1006, "keepalive timeout", True)
        assert received[:1] == ["ping"]
        connected = await rec.wait("connected", 2, timeout=5)
        assert connected[1].connection_id == "c2", "replaced by a new connection"
        await client.close()


async def test_bad_input_gets_a_clear_error_before_any_connection() -> None:
    with pytest.raises(ValueError, match="invalid room id"):
        RealtimeClient("http://127.0.0.1:1", ["../etc"], token="t")
    with pytest.raises(ValueError, match="token"):
        RealtimeClient("http://127.0.0.1:1", ["user_a"])
    with pytest.raises(ValueError, match="http"):
        RealtimeClient("ftp://example.com", ["user_a"], token="t")
    client = RealtimeClient("http://127.0.0.1:1", ["user_a"], token="t")
    with pytest.raises(ValueError, match="unknown event"):
        client.on("note created", print)  # neither an event nor a type
    with pytest.raises(RealtimeError, match="connect"):
        await client.wait_connected(1)
    await client.close()
    assert [n async for n in client] == [], "a loop over a closed client ends at once"
