"""Fixtures: the real worker in workerd (shared, or one per test with its own settings and
storage) and clients that are closed after each test."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Iterator

import pytest

from helpers import ServedWorker, Recorder
from roomcast import RealtimeClient

# Every shared-worker test may rely on quick ack rounds (default: 5 s), and on client events
# named typing.* and cursor.move being allowed (default: none).
SHARED_BINDINGS = {"ACK_RETRY_INTERVAL_MS": "300", "CLIENT_EVENT_TYPES": "typing.*,cursor.move"}


@pytest.fixture(scope="session")
def worker() -> Iterator[ServedWorker]:
    w = ServedWorker(SHARED_BINDINGS)
    yield w
    w.close()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., ServedWorker]]:
    """Starts a worker of the test's own (bindings, persist dir); stopped after the test."""
    started: list[ServedWorker] = []

    def start(bindings: dict[str, str] | None = None, persist: str | None = None) -> ServedWorker:
        w = ServedWorker(bindings, persist)
        started.append(w)
        return w

    yield start
    for w in started:
        w.close()


@pytest.fixture
async def make_client() -> AsyncIterator[Callable[..., tuple[RealtimeClient, Recorder]]]:
    """``make_client(url, rooms, **options)``: a client with quick reconnects and a Recorder of
    its events; closed after the test."""
    clients: list[RealtimeClient] = []

    def make(url: str, rooms: list[str], **options: Any) -> tuple[RealtimeClient, Recorder]:
        options.setdefault("initial_delay", 0.05)
        options.setdefault("max_delay", 0.2)
        client = RealtimeClient(url, rooms, **options)
        clients.append(client)
        return client, Recorder(client)

    yield make
    for c in clients:
        await c.close()
