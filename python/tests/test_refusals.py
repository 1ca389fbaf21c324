"""Refused upgrades against the real worker: 401 gets one fresh token and then stops, 403 stops at
once, 429 waits Retry-After. Connection attempts are counted by a TCP proxy in front of the
worker, so "no further attempts" is what the server would see."""

from __future__ import annotations

import time
from typing import Any, Callable

import pytest
from websockets.asyncio.client import connect

from helpers import ServedWorker, TcpProxy, eventually, sign_hs256, token_for, uid, with_deadline
from roomcast import RealtimeError, TokenReason

# Backoff far below the quiet window below: a retry, if any, would show within it.
QUICK = {"initial_delay": 0.05, "max_delay": 0.1}
QUIET = 1.0


async def test_401_gets_exactly_one_fresh_token_then_a_fatal_unauthorized(
    worker: ServedWorker, make_client: Any
) -> None:
    u = uid()
    room = f"user_{u}"
    asked: list[TokenReason] = []

    def get_token(room_id: str, reason: TokenReason) -> str:
        asked.append(reason)
        # A different token every time, each signed with the wrong key.
        return sign_hs256({"sub": u, "exp": int(time.time()) + 60, "n": len(asked)}, "not-the-secret")

    async with TcpProxy(worker.port) as proxy:
        client, rec = make_client(proxy.url, [room], get_token=get_token, **QUICK)
        await client.connect()
        with pytest.raises(RealtimeError) as info:
            await client.wait_connected(10)
        err = info.value
        assert (err.code, err.status, err.room_id, err.fatal) == ("unauthorized", 401, room, True)
        assert room in str(err) and "401" in str(err)
        assert asked == ["connect", "unauthorized"]
        assert proxy.connections == 2
        assert client.state == "error"
        # No further attempts after the fatal error.
        assert await rec.quiet("reconnecting", QUIET)
        assert proxy.connections == 2
        assert asked == ["connect", "unauthorized"]
        assert [e.code for e in rec["error"] if e.fatal] == ["unauthorized"]


async def test_401_with_a_plain_token_is_fatal_at_once(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    async with TcpProxy(worker.port) as proxy:
        bad = sign_hs256({"sub": u, "exp": int(time.time()) + 60}, "not-the-secret")
        client, rec = make_client(proxy.url, [f"user_{u}"], token=bad, **QUICK)
        await client.connect()
        with pytest.raises(RealtimeError) as info:
            await client.wait_connected(10)
        assert (info.value.code, info.value.status) == ("unauthorized", 401)
        assert await rec.quiet("reconnecting", QUIET)
        assert proxy.connections == 1


async def test_403_forbidden_room_is_fatal_at_once(worker: ServedWorker, make_client: Any) -> None:
    u = uid()
    other = f"user_{uid()}"
    asked: list[TokenReason] = []

    def get_token(room_id: str, reason: TokenReason) -> str:
        asked.append(reason)
        return token_for(u)  # valid, but not for someone else's room

    async with TcpProxy(worker.port) as proxy:
        client, rec = make_client(proxy.url, [other], get_token=get_token, **QUICK)
        await client.connect()
        with pytest.raises(RealtimeError) as info:
            await client.wait_connected(10)
        err = info.value
        assert (err.code, err.status, err.room_id, err.fatal) == ("forbidden", 403, other, True)
        assert other in str(err)
        assert asked == ["connect"]
        assert proxy.connections == 1
        assert await rec.quiet("reconnecting", QUIET)
        assert proxy.connections == 1
        assert rec["reconnecting"] == []


async def test_429_waits_retry_after_and_connects_once_the_other_socket_closed(
    start_worker: Callable[..., ServedWorker], make_client: Any
) -> None:
    w = start_worker({"MAX_CONNECTIONS_PER_USER": "1"})
    u = uid()
    room = f"user_{u}"
    holder = await connect(
        f"ws://127.0.0.1:{w.port}/rooms/{room}/subscribe",
        additional_headers={"Authorization": f"Bearer {token_for(u)}"},
    )
    try:
        assert '"connected"' in str(await holder.recv())
        async with TcpProxy(w.port) as proxy:
            # No jitter, so the delay is exactly the server's Retry-After.
            client, rec = make_client(proxy.url, [room], token=token_for(u), random=lambda: 0.0, **QUICK)
            await client.connect()
            plans = await rec.wait("reconnecting")
            t0 = time.monotonic()
            assert (plans[0].status, plans[0].attempt) == (429, 1)
            retry_after = plans[0].delay
            assert retry_after >= 1, "the server's Retry-After"
            assert client.state == "connecting"
            await holder.close()
            await with_deadline(client.wait_connected(), retry_after + 15)
            waited = time.monotonic() - t0
            assert waited >= retry_after - 0.1, f"reconnected after {waited:.1f} s"
            assert proxy.connections == 2, "one refused attempt, then one after Retry-After"
            assert len(rec["reconnecting"]) == 1
            assert [e for e in rec["error"] if e.fatal] == []
            assert (await w.health(room))["connections"] == 1
    finally:
        await holder.close()


async def test_a_server_that_is_not_there_is_retried_with_backoff_up_to_max_attempts(
    make_client: Any,
) -> None:
    async with TcpProxy(1) as proxy:  # forwards to a port nothing listens on
        client, rec = make_client(
            proxy.url, ["user_nobody"], token=token_for("nobody"), max_reconnect_attempts=3,
            random=lambda: 0.999, initial_delay=0.02, max_delay=0.05,
        )
        await client.connect()
        with pytest.raises(RealtimeError) as info:
            await client.wait_connected(10)
        assert (info.value.code, info.value.fatal) == ("max_reconnect_attempts", True)
        delays = [round(p.delay, 4) for p in rec["reconnecting"]]
        assert delays == [round(0.999 * d, 4) for d in (0.02, 0.04, 0.05)], "doubling, capped"
        assert proxy.connections == 4
        assert await rec.quiet("reconnecting", 0.5)
        assert proxy.connections == 4
        await eventually(lambda: client.state == "error")
