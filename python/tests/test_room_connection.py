"""One room's connection against stand-in peers (a websockets server playing roomcast), for what
the real worker does not do on demand: a batch frame fed to the frame handler, close 4008 idle,
and a socket that closes before `connected` (the probe)."""

from __future__ import annotations

import json
import logging
from http import HTTPStatus
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve
from websockets.http11 import Request, Response

from helpers import Recorder, eventually
from roomcast import ClientEvent, Notification, RealtimeClient, RealtimeError

ROOM = "user_a"


def _note(seq: int, **more: Any) -> dict[str, Any]:
    return {"id": f"n{seq}", "seq": seq, "type": "note.created", "data": {"i": seq}, "status": "success",
            "timestamp": "2026-01-01T00:00:00.000Z", "requiresAck": False, "attempt": 1, **more}


FRAMES: list[dict[str, Any]] = [
    _note(1),
    {"type": "event", "event": "typing.start", "data": {"f": 1}, "userId": "bob", "timestamp": "t1"},
    {"id": "e1", "type": "upload.progress", "data": {"pct": 40}, "status": "pending", "timestamp": "t2",
     "requiresAck": False, "ephemeral": True},
    _note(2),
    {"type": "subscribed", "data": {"types": ["note.*"]}},
    _note(1),  # a replay of one already handed over: a duplicate
    _note(3, type="task.done"),
]


async def _fed(frames: list[Any]) -> tuple[list[tuple[str, Any]], RealtimeClient]:
    """A client whose room is handed ``frames`` as if they had arrived on its socket; returns
    what its handlers saw, in order."""
    client = RealtimeClient("http://127.0.0.1:1", [ROOM], token="t", max_reconnect_attempts=0)
    seen: list[tuple[str, Any]] = []
    client.on("notification", lambda n: seen.append(("notification", (n.id, n.seq, n.ephemeral))))
    client.on("note.*", lambda m: seen.append(("note.*", m.id if isinstance(m, Notification) else m)))
    client.on("event", lambda e: seen.append(("event", (e.event, e.user_id, dict(e.data)))))
    client.on("typing.*", lambda m: seen.append(("typing.*", m.event if isinstance(m, ClientEvent) else m)))
    client.on("duplicate", lambda n: seen.append(("duplicate", n.id)))
    client.on("subscribed", lambda s: seen.append(("subscribed", s.types)))
    client.on("error", lambda e: None)  # port 1: no server, and no retry (max_reconnect_attempts=0)
    await client.connect()
    with pytest.raises(RealtimeError):
        await client.wait_connected(5)
    room = client._rooms[ROOM]
    for f in frames:
        room.on_frame(f)
    await eventually(lambda: ("notification", ("n3", 3, False)) in seen, what="the last notification handed over")
    return seen, client


async def test_a_batch_is_handled_frame_by_frame_exactly_as_if_each_came_alone() -> None:
    alone, c1 = await _fed(FRAMES)
    batched, c2 = await _fed([{"type": "batch", "frames": FRAMES}])
    try:
        assert batched == alone
        # Events, control frames and duplicates are reported as they arrive; notifications are
        # handed over one at a time, in order, by the room's dispatcher.
        assert alone == [
            ("event", ("typing.start", "bob", {"f": 1})),
            ("typing.*", "typing.start"),
            ("subscribed", ["note.*"]),
            ("duplicate", "n1"),
            ("notification", ("n1", 1, False)),
            ("note.*", "n1"),
            ("notification", ("e1", None, True)),
            ("notification", ("n2", 2, False)),
            ("note.*", "n2"),
            ("notification", ("n3", 3, False)),
        ]
        handed = [v for k, v in batched if k == "notification"]
        assert handed == [("n1", 1, False), ("e1", None, True), ("n2", 2, False), ("n3", 3, False)], "in order, once"
        assert c2.last_seq(ROOM) == 3, "the ephemeral one moved nothing; the seqs inside the batch did"
    finally:
        await c1.close()
        await c2.close()


class StandIn:
    """A websockets server playing roomcast: says `connected` (unless told not to), records
    each request's path, and closes as ``script`` says for each connection in turn."""

    def __init__(self, script: list[str], probe_status: int = 426) -> None:
        self.script = script
        self.paths: list[str] = []
        self.probes: list[str] = []
        self.probe_status = probe_status

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        if request.headers.get("Upgrade", "").lower() != "websocket":
            self.probes.append(request.path)
            body = json.dumps({"error": {"code": "forbidden", "message": "this token may not enter room user_a"}})
            return conn.respond(HTTPStatus(self.probe_status), body)
        self.paths.append(request.path)
        return None

    async def handler(self, ws: ServerConnection) -> None:
        step = self.script.pop(0) if self.script else "stay"
        if step == "close-before-connected":
            await ws.close(1011, "gone")
            return
        n = len(self.paths)
        await ws.send(json.dumps({"type": "connected", "roomId": ROOM, "connectionId": f"c{n}", "lastSeq": 5}))
        if step == "idle":
            await ws.close(4008, "idle")
            return
        async for _ in ws:
            pass


async def test_4008_idle_reconnects_at_once_without_an_error_and_resumes(make_client: Any) -> None:
    peer = StandIn(["idle", "stay"])
    async with serve(peer.handler, "127.0.0.1", 0, process_request=peer.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        # Backoff that would be plain to see (>= 5 s): 4008 must not wait for it.
        client, rec = make_client(f"http://127.0.0.1:{port}", [ROOM], token="t", initial_delay=5, max_delay=5,
                                  random=lambda: 0.999)
        await client.connect()
        connected = await rec.wait("connected", 2, timeout=4)
        assert [c.connection_id for c in connected] == ["c1", "c2"]
        assert [(d.code, d.reason) for d in rec["disconnected"]] == [(4008, "idle")]
        assert [(r.delay, r.code) for r in rec["reconnecting"]] == [(0.0, 4008)]
        assert rec["error"] == []
        assert client.state == "connected"
        assert peer.paths[0] == "/rooms/user_a/subscribe?batch=1"
        assert peer.paths[1] == "/rooms/user_a/subscribe?since=5&batch=1", "resumes after the seq it knew"
        assert peer.probes == []


async def test_a_socket_closed_before_connected_asks_the_probe_and_a_403_is_final(
    make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="roomcast")
    peer = StandIn(["close-before-connected"], probe_status=403)
    async with serve(peer.handler, "127.0.0.1", 0, process_request=peer.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        client, rec = make_client(f"http://127.0.0.1:{port}", [ROOM], token="t")
        await client.connect()
        with pytest.raises(RealtimeError) as info:
            await client.wait_connected(5)
        err = info.value
        assert (err.code, err.status, err.server_code, err.fatal) == ("forbidden", 403, "forbidden", True)
        assert "this token may not enter room user_a" in str(err)
        assert peer.probes == ["/rooms/user_a/subscribe?batch=1"], "the same URL, without Upgrade"
        assert rec["reconnecting"] == []
        assert len(peer.paths) == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "roomcast"]
    assert "room user_a: closed 1011 'gone'" in lines
    assert "room user_a: the probe answered 403 forbidden" in lines


async def test_a_probe_that_says_426_backs_off_and_tries_again(make_client: Any) -> None:
    peer = StandIn(["close-before-connected", "stay"], probe_status=426)
    async with serve(peer.handler, "127.0.0.1", 0, process_request=peer.process_request) as server:
        port = server.sockets[0].getsockname()[1]
        client, rec = make_client(f"http://127.0.0.1:{port}", [ROOM], token="t")
        await client.connect()
        await client.wait_connected(5)
        assert [(r.attempt, r.code, r.status) for r in rec["reconnecting"]] == [(1, 1011, 426)]
        assert len(peer.probes) == 1
        assert [e for e in rec["error"] if e.fatal] == []
