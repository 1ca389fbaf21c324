"""RealtimeClient reconnecting against the real worker: resume across a runtime restart on the
same storage, and a fresh token after the server closed with 4001."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Callable

from helpers import Gate, ServedWorker, eventually, token_for, uid, with_deadline
from roomcast import Notification, TokenReason


async def test_resumes_across_a_runtime_restart_with_no_gap_and_no_duplicate(
    start_worker: Callable[..., ServedWorker], make_client: Any, tmp_path: Path
) -> None:
    w = start_worker({}, persist=str(tmp_path))
    u = uid()
    room = f"user_{u}"
    # get_token runs before every (re)connection: the test holds it to publish while the
    # client provably holds no socket, then lets it in.
    gate: Gate | None = None
    reasons: list[TokenReason] = []

    async def get_token(room_id: str, reason: TokenReason) -> str:
        reasons.append(reason)
        if gate is not None:
            await gate.pass_through()
        return token_for(u)

    client, rec = make_client(w.url, [room], get_token=get_token)
    seen: list[Notification] = []
    client.on("notification", seen.append)
    await client.connect()
    await client.wait_connected(10)
    for i in range(1, 4):
        await w.publish(room, {"type": "note.created", "data": {"i": i}})
    await eventually(lambda: len(seen) == 3, what="three before the restart")

    gate = Gate()
    w.stop_and_restart_begin()
    await w.stopped()
    drops = await rec.wait("disconnected")
    assert drops[0].was_connected
    await w.started()
    await with_deadline(gate.asked.wait())  # the client is between attempts, holding no socket
    r4 = await w.publish(room, {"type": "note.created", "data": {"i": 4}})
    r5 = await w.publish(room, {"type": "note.created", "data": {"i": 5}})
    assert (r4["seq"], r5["seq"]) == (4, 5), "seq continues across the restart"
    assert r4["broadcastCount"] == 0, "nobody was connected"
    gate.opened.set()
    gate = None

    await client.wait_connected(15)
    await eventually(lambda: len(seen) == 5, what="the two published while away")
    await w.publish(room, {"type": "note.created", "data": {"i": 6}})
    await eventually(lambda: len(seen) == 6, what="a live one after")
    assert await rec.quiet("duplicate", 0.3)
    assert [n.data["i"] for n in seen] == [1, 2, 3, 4, 5, 6]
    assert [n.seq for n in seen] == [1, 2, 3, 4, 5, 6]
    assert len({n.id for n in seen}) == 6
    assert [(r.since, r.recovered) for r in rec["recovery"]] == [(3, True)]
    assert reasons[0] == "connect" and set(reasons[1:]) == {"reconnect"}
    assert client.last_seq(room) == 6


async def test_after_4001_a_new_token_resumes_without_loss_and_the_same_token_stops(
    worker: ServedWorker, make_client: Any
) -> None:
    # The server closes at exp + its 5 s leeway, and workerd ends the TCP connection some
    # seconds after the 4001 frame: the two cases share that wait.
    await asyncio.gather(_new_token_resumes(worker, make_client), _same_token_stops(worker, make_client))


async def _new_token_resumes(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    room = f"user_{u}"
    gate = Gate()
    reasons: list[TokenReason] = []

    async def get_token(room_id: str, reason: TokenReason) -> str:
        reasons.append(reason)
        if len(reasons) == 1:
            # Admitted within the server's clock leeway, closed with 4001 about 2 s later.
            return token_for(u, ttl=-3)
        await gate.pass_through()
        return token_for(u)

    client, rec = make_client(worker.url, [room], get_token=get_token)
    seen: list[Notification] = []
    client.on("notification", seen.append)
    await client.connect()
    await client.wait_connected(10)
    await worker.publish(room, {"type": "note.created", "data": {"i": 1}})
    await eventually(lambda: len(seen) == 1, what="the first notification")

    await with_deadline(gate.asked.wait(), 30)
    assert rec["disconnected"][0].code == 4001
    assert reasons == ["connect", "expired"]
    await worker.publish(room, {"type": "note.created", "data": {"i": 2}})  # while away
    gate.opened.set()

    await client.wait_connected(10)
    await eventually(lambda: len(seen) == 2, what="the one published while away")
    await worker.publish(room, {"type": "note.created", "data": {"i": 3}})
    await eventually(lambda: len(seen) == 3, what="a live one after")
    assert [n.data["i"] for n in seen] == [1, 2, 3]
    assert [n.seq for n in seen] == [1, 2, 3]
    assert [(r.since, r.recovered) for r in rec["recovery"]] == [(1, True)]
    assert [e for e in rec["error"] if e.fatal] == []
    assert client.state == "connected"


async def _same_token_stops(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    fixed = token_for(u, ttl=-3)
    asked: list[TokenReason] = []

    def get_token(room_id: str, reason: TokenReason) -> str:  # a plain function works too
        asked.append(reason)
        return fixed

    client, rec = make_client(worker.url, [f"user_{u}"], get_token=get_token)
    await client.connect()
    await client.wait_connected(10)
    await eventually(lambda: client.state == "error", 30, "stopped after the 4001")
    fatal = [e for e in rec["error"] if e.fatal]
    assert [(e.code, e.close_code, e.room_id) for e in fatal] == [("token_expired", 4001, f"user_{u}")]
    assert f"user_{u}" in fatal[0].message
    assert asked == ["connect", "expired"]
    assert len(rec["connected"]) == 1
