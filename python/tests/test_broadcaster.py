"""Broadcaster against the real worker, behind a TCP proxy that can lose answers: retries reuse
one idempotency key, so the user sees each notification exactly once; 4xx are never retried."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from helpers import API_KEY, ServedWorker, TcpProxy, eventually, token_for, uid
from roomcast import Broadcaster, BroadcastError, Notification


def fresh_connections() -> httpx.AsyncClient:
    # One TCP connection per request, so the proxy's connection count is the request count.
    return httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))


async def test_an_answer_lost_after_publishing_is_retried_with_one_key_and_delivered_once(
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

    async with TcpProxy(worker.port) as proxy, fresh_connections() as http:
        proxy.plan = ["lose"]  # the first request is published, but its answer never arrives
        rc = Broadcaster(proxy.url, API_KEY, retry_delay=0.01, http_client=http)
        result = await rc.broadcast(u, "note.creation.completed", {"noteId": "n1"}, request_id=req)
        assert proxy.connections == 2, "the first attempt and one retry"
        assert set(result.rooms) == set(rooms)
        key = result.id
        assert re.fullmatch(r"[0-9a-f-]{36}", key), "a generated UUID is the key and the id"
        for room in rooms:
            r = result.rooms[room]
            assert (r.duplicate, r.id, r.seq) == (True, key, 1), room

        await eventually(lambda: len(seen) == 1, what="delivered")
        await rec.wait("duplicate")  # the same id through the request room, dropped
        assert len(seen) == 1, "the user sees it once"
        n = seen[0]
        assert (n.id, n.type, n.status, n.request_id, dict(n.data)) == (
            key, "note.creation.completed", "success", req, {"noteId": "n1"},
        )
        for room in rooms:
            assert len(await worker.history(room)) == 1, room

        # A retried job step calls again with its own stable key: still one notification.
        again = await rc.broadcast(u, "note.creation.completed", {"noteId": "n1"}, request_id=req, idempotency_key=key)
        assert all(r.duplicate for r in again.rooms.values())
        assert await rec.quiet("duplicate", 0.3)
        assert len(seen) == 1
        assert len(await worker.history(f"user_{u}")) == 1


async def test_a_4xx_is_not_retried(worker: ServedWorker) -> None:
    u = uid()
    async with TcpProxy(worker.port) as proxy, fresh_connections() as http:
        rc = Broadcaster(proxy.url, API_KEY, retry_delay=0.01, http_client=http)
        with pytest.raises(BroadcastError) as info:
            await rc.broadcast(u, "ping")  # a reserved type
        err = info.value
        assert (err.status, err.code, err.attempts, err.retryable) == (400, "reserved_type", 1, False)
        assert proxy.connections == 1

        wrong = Broadcaster(proxy.url, "not-a-key", retry_delay=0.01, http_client=http)
        with pytest.raises(BroadcastError) as info:
            await wrong.broadcast_room(f"user_{u}", {"type": "note.created"})
        assert (info.value.status, info.value.code, info.value.attempts) == (401, "unauthorized", 1)
        assert proxy.connections == 2
    assert await worker.history(f"user_{u}") == []


async def test_no_answer_at_all_is_retried_then_raised() -> None:
    async with TcpProxy(1) as proxy, fresh_connections() as http:  # nothing behind it
        rc = Broadcaster(proxy.url, API_KEY, retries=2, retry_delay=0.01, http_client=http)
        with pytest.raises(BroadcastError) as info:
            await rc.broadcast("u1", "note.created")
        err = info.value
        assert (err.status, err.code, err.attempts, err.retryable) == (0, "network_error", 3, True)
        assert proxy.connections == 3


async def test_broadcast_error_broadcast_room_and_settings_from_the_environment(
    worker: ServedWorker, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    u = uid()
    room = f"user_{u}"
    client, _ = make_client(worker.url, [room], token=token_for(u))
    seen: list[Notification] = []
    client.on("notification", seen.append)
    await client.connect()
    await client.wait_connected(10)

    monkeypatch.setenv("ROOMCAST_URL", worker.url)
    monkeypatch.setenv("ROOMCAST_API_KEY", API_KEY)
    async with Broadcaster() as rc:
        r = await rc.broadcast_error(u, "note.creation.failed", ValueError("quota exceeded"),
                                     idempotency_key=f"run-{u}:error")
        assert r.rooms[room].id == f"run-{u}:error"
        direct = await rc.broadcast_room(room, {"type": "note.updated", "data": {"v": 2}, "requiresAck": True})
        assert (direct.seq, direct.duplicate, direct.broadcast_count) == (2, False, 1)
    await eventually(lambda: len(seen) == 2, what="both delivered")
    assert (seen[0].status, seen[0].error, seen[0].type) == ("error", "quota exceeded", "note.creation.failed")
    assert (seen[1].type, dict(seen[1].data), seen[1].requires_ack) == ("note.updated", {"v": 2}, True)

    monkeypatch.delenv("ROOMCAST_API_KEY")
    with pytest.raises(ValueError, match="ROOMCAST_API_KEY"):
        Broadcaster()


async def test_broadcast_many_reaches_every_user_once_with_one_id(worker: ServedWorker, make_client: Any) -> None:
    users = [uid() for _ in range(3)]
    seen: dict[str, list[Notification]] = {u: [] for u in users}
    for u in users:
        client, _ = make_client(worker.url, [f"user_{u}"], token=token_for(u))
        client.on("notification", seen[u].append)
        await client.connect()
        await client.wait_connected(10)

    async with TcpProxy(worker.port) as proxy, fresh_connections() as http:
        proxy.plan = ["lose"]  # published everywhere, but the answer is lost: retried with its key
        rc = Broadcaster(proxy.url, API_KEY, retry_delay=0.01, http_client=http)
        result = await rc.broadcast_many(users, "report.ready", {"week": 48})
        assert proxy.connections == 2
        assert set(result.rooms) == {f"user_{u}" for u in users}
        assert {r.id for r in result.rooms.values()} == {result.id}, "one id in every room"
        assert all(r.duplicate for r in result.rooms.values()), "the retry found every room done"

    for u in users:
        got = seen[u]
        await eventually(lambda: len(got) == 1, what=f"{u} got it")
        assert (got[0].id, got[0].type) == (result.id, "report.ready")
        assert len(await worker.history(f"user_{u}")) == 1


async def test_broadcast_many_reports_the_rooms_that_still_fail(worker: ServedWorker) -> None:
    users = [uid() for _ in range(3)]
    taken = f"user_{users[1]}"
    # That room already holds the id under another key: it answers 409 for this publish.
    await worker.publish(taken, {"type": "x.first", "id": "shared-id"}, **{"idempotency-key": "other"})
    async with fresh_connections() as http:
        rc = Broadcaster(worker.url, API_KEY, retry_delay=0.01, http_client=http)
        with pytest.raises(BroadcastError) as info:
            await rc.broadcast_many(users, "x.second", idempotency_key="shared-id")
        err = info.value
        assert (err.code, err.failed_rooms) == ("partial_failure", [taken])
    for u in users:
        history = await worker.history(f"user_{u}")
        types = [n["type"] for n in history]
        assert types == (["x.first"] if f"user_{u}" == taken else ["x.second"]), u
