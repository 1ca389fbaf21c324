"""Test support: the real worker in workerd (through tests/support/serve.mjs), HS256 tokens
signed with the test secret, a counting TCP proxy that can lose answers, and ways to await
events with a deadline."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import itertools
import json
import os
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, TypeVar

import httpx

from roomcast import RealtimeClient

ROOT = Path(__file__).resolve().parents[2]
# The same values as tests/support/harness.mjs (JWT_SECRET, API_KEY).
JWT_SECRET = "test-secret-0123456789abcdef0123456789"
API_KEY = "test-key-1"

T = TypeVar("T")


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def sign_hs256(claims: dict[str, Any], secret: str = JWT_SECRET) -> str:
    head = _b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64url(json.dumps(claims).encode())
    sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64url(sig)}"


def token_for(sub: str, *, ttl: int = 3600, rooms: list[str] | None = None, secret: str = JWT_SECRET) -> str:
    """A token for ``sub``, allowed in user_{sub} and ``rooms``; ``ttl`` may be negative."""
    now = int(time.time())
    claims: dict[str, Any] = {"sub": sub, "iat": now - max(0, -ttl) - 10, "exp": now + ttl}
    if rooms:
        claims["rooms"] = rooms
    return sign_hs256(claims, secret)


_ids = itertools.count()


def uid(prefix: str = "p") -> str:
    """A fresh user id (rooms are named after it) for one test."""
    return f"{prefix}{os.getpid()}x{int(time.time() * 1000):x}x{next(_ids)}"


class ServedWorker:
    """The compiled worker (build/) in workerd, run by tests/support/serve.mjs."""

    def __init__(self, bindings: dict[str, str] | None = None, persist: str | None = None) -> None:
        args = ["node", str(ROOT / "tests/support/serve.mjs"), json.dumps(bindings or {})]
        if persist is not None:
            args += ["--persist", persist]
        self.proc = subprocess.Popen(args, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.url: str = self._expect("url")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _expect(self, key: str, timeout: float = 60) -> Any:
        line = self._lines.get(timeout=timeout)
        if not line:
            raise RuntimeError(f"serve.mjs exited ({self.proc.poll()}) before saying {key!r}")
        msg = json.loads(line)
        if key not in msg:
            raise RuntimeError(f"serve.mjs said {msg!r}, expected {key!r}")
        return msg[key]

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop_and_restart_begin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("restart\n")
        self.proc.stdin.flush()

    async def stopped(self) -> None:
        """After ``stop_and_restart_begin``: returns once the runtime is down."""
        await asyncio.to_thread(self._expect, "stopped")

    async def started(self) -> None:
        """Then: returns once the runtime is up again, on the same storage and port."""
        url = await asyncio.to_thread(self._expect, "url")
        assert url == self.url

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    # ---- the HTTP API, with the test API key ----

    def _http(self) -> httpx.AsyncClient:
        # One per call: each test runs in an event loop of its own.
        return httpx.AsyncClient(base_url=self.url, headers={"authorization": f"Bearer {API_KEY}"})

    async def publish(self, room: str, message: dict[str, Any], **headers: str) -> dict[str, Any]:
        async with self._http() as http:
            res = await http.post(f"/rooms/{room}/broadcast", json=message, headers=headers)
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    async def history(self, room: str) -> list[dict[str, Any]]:
        async with self._http() as http:
            res = await http.get(f"/rooms/{room}/history")
        assert res.status_code == 200, res.text
        notes: list[dict[str, Any]] = res.json()["notifications"]
        return notes

    async def health(self, room: str) -> dict[str, Any]:
        async with self._http() as http:
            res = await http.get(f"/rooms/{room}/health")
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body


async def eventually(cond: Callable[[], Any], timeout: float = 10, what: str = "condition") -> Any:
    """Polls ``cond`` (sync or async) until it returns something truthy, or fails at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if asyncio.iscoroutine(got):
            got = await got
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


class Recorder:
    """Records every event of a client, so tests can await and inspect them. Not
    ``notification``: a handler of it would take (and ack) what a test means to consume itself."""

    EVENTS = ("duplicate", "state", "connected", "disconnected", "reconnecting",
              "recovery", "subscribed", "ack", "error")

    def __init__(self, client: RealtimeClient) -> None:
        self.events: dict[str, list[Any]] = {e: [] for e in self.EVENTS}
        for e in self.EVENTS:
            client.on(e, self.events[e].append)

    def __getitem__(self, event: str) -> list[Any]:
        return self.events[event]

    async def wait(self, event: str, count: int = 1, timeout: float = 10) -> list[Any]:
        await eventually(lambda: len(self.events[event]) >= count, timeout, f"{count} x {event}")
        return self.events[event]

    async def quiet(self, event: str, seconds: float) -> bool:
        """True when no ``event`` arrives within ``seconds`` (asserting silence after an event)."""
        before = len(self.events[event])
        await asyncio.sleep(seconds)
        return len(self.events[event]) == before


class TcpProxy:
    """A loopback TCP proxy in front of the worker that counts connections. ``plan`` says what
    to do with the next connections: ``"pass"`` (default) forwards both ways; ``"lose"``
    forwards the request, waits until the worker has answered, and then drops the connection
    without passing the answer on (the publish happened, the caller never learns it)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.connections = 0
        self.plan: list[str] = []
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._open: set[asyncio.WriteTransport] = set()

    async def __aenter__(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for t in list(self._handlers):
            t.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    def sever(self) -> None:
        """Drops every connection open now without a close (as a network loss would)."""
        for t in list(self._open):
            t.abort()

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        action = self.plan.pop(0) if self.plan else "pass"
        t = asyncio.ensure_future(self._serve(reader, writer, action))
        self._handlers.add(t)
        t.add_done_callback(self._handlers.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, action: str) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()  # as if the server were not there
            return
        self._open |= {writer.transport, up_writer.transport}
        try:
            if action == "lose":
                forward = asyncio.ensure_future(_pipe(reader, up_writer))
                await up_reader.read(1)  # the worker has processed the request and answers
                forward.cancel()
                writer.transport.abort()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            self._open -= {writer.transport, up_writer.transport}
            up_writer.transport.abort()
            writer.transport.abort()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    try:
        while chunk := await src.read(65536):
            dst.write(chunk)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (ConnectionError, OSError):
        # One side was reset: reset the other too, so that its pipe ends as well.
        dst.transport.abort()


class Gate:
    """Holds ``get_token`` so that a test can act while the client provably holds no socket."""

    def __init__(self) -> None:
        self.asked = asyncio.Event()
        self.opened = asyncio.Event()

    async def pass_through(self) -> None:
        self.asked.set()
        await self.opened.wait()


async def with_deadline(aw: Awaitable[T], timeout: float = 10) -> T:
    async with asyncio.timeout(timeout):
        return await aw
