"""The client against server features that need their own settings: a replay the server sends
as one batch (batch=1), and idle connections closed with 4008."""

from __future__ import annotations

import logging
from typing import Any, Callable

import pytest

from helpers import ServedWorker, eventually, token_for, uid
from roomcast import RealtimeClient


async def test_a_replay_sent_as_a_batch_is_handed_over_once_in_order_and_acked(
    worker: ServedWorker, make_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="roomcast")
    u = uid()
    req = f"request_q{u}"
    # Published while nobody listens: joining with since=0 replays them, queued, so batched.
    for i in range(30):
        await worker.publish(req, {"type": "job.step", "data": {"i": i}, "requiresAck": i % 3 == 0})
    client, rec = make_client(worker.url, [], token=token_for(u, rooms=[req]))
    seen: list[tuple[int | None, int]] = []
    client.on("job.*", lambda m: seen.append((getattr(m, "seq", None), m.data["i"])))
    await client.connect()
    await client.join(req, since=0)
    await client.wait_connected(10)
    await eventually(lambda: len(seen) == 30, what="all thirty")
    assert seen == [(i + 1, i) for i in range(30)], "each once, in order"
    # How the server splits a replay into batches is its own choice; that it batched is checked.
    batches = [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"room {req}: a batch of ")]
    assert batches, "the replay came batched"
    assert client.last_seq(req) == 30

    async def acked() -> bool:
        hist = await worker.history(req)
        return all(h["deliveryStatus"] == "acked" for h in hist if h["requiresAck"])

    await eventually(acked, what="the ones that asked for it acked")
    assert rec["duplicate"] == []


async def test_an_idle_close_reconnects_at_once_and_the_keepalive_prevents_it(
    start_worker: Callable[..., ServedWorker], make_client: Any
) -> None:
    w = start_worker({"IDLE_TIMEOUT_SECONDS": "1"})
    u = uid()
    room = f"user_{u}"
    # Without keepalive the room hears nothing from this one; with a ping every 0.3 s it does.
    silent, srec = make_client(w.url, [room], token=token_for(u), ping_interval=0,
                               initial_delay=5, max_delay=5, random=lambda: 0.999)
    lively, lrec = make_client(w.url, [room], token=token_for(u), ping_interval=0.3)
    seen: list[str] = []
    silent.on("notification", lambda n: seen.append(n.type))
    await silent.connect()
    await lively.connect()
    await silent.wait_connected(10)
    await lively.wait_connected(10)
    await w.publish(room, {"type": "before"})
    await eventually(lambda: seen == ["before"], what="delivered")

    # Two idle closes: each within twice the timeout, each followed at once by a new connection.
    await srec.wait("connected", 3, timeout=10)
    assert [(d.code, d.reason) for d in srec["disconnected"][:2]] == [(4008, "idle"), (4008, "idle")]
    assert [(r.delay, r.code) for r in srec["reconnecting"][:2]] == [(0.0, 4008), (0.0, 4008)], "no backoff"
    assert srec["error"] == []
    assert all(c.resumed for c in srec["connected"][1:]), "resumed after its last seq"
    await w.publish(room, {"type": "after"})
    await eventually(lambda: seen == ["before", "after"], what="delivered after the idle closes")
    # The whole time, the client with keepalive was never closed.
    assert lrec["disconnected"] == [] and len(lrec["connected"]) == 1


async def test_the_clients_own_event_limits_keep_it_under_the_servers_client_event_rates(
    start_worker: Callable[..., ServedWorker], make_client: Any
) -> None:
    rates = "cursor.move=2/10s"
    w = start_worker({"CLIENT_EVENT_TYPES": "cursor.move", "CLIENT_EVENT_RATES": rates})
    room = f"team_{uid()}"
    # One client without the limit: the server refuses the third. One with it: never sent.
    blind, brec = make_client(w.url, [room], token=token_for("blind", rooms=[room]))
    aware, arec = make_client(w.url, [room], token=token_for("aware", rooms=[room]), event_rates=rates)
    for c in (blind, aware):
        await c.connect()
        await c.wait_connected(10)
    assert [await blind.emit(room, "cursor.move", {"x": i}) for i in range(3)] == [True, True, True]
    errors = await brec.wait("error")
    assert [(e.code, e.fatal) for e in errors] == [("rate_limited", False)]
    assert [await aware.emit(room, "cursor.move", {"x": i}) for i in range(3)] == [True, True, False]
    await aware.sync(room)  # answered after the emits: any refusal of them would have come first
    assert arec["error"] == []
    with pytest.raises(ValueError, match="typing"):
        RealtimeClient(w.url, [room], token="t", event_rates="cursor.move=2")
