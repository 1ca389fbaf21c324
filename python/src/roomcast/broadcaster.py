"""``Broadcaster``: publish roomcast notifications from a backend (job handlers, API routes),
with retries that can never notify twice. Holds an API key: server side only.

Mirrors client/broadcaster.js: one idempotency key per call, reused by all of that call's
retries, and the notification's ``id`` defaults to that key, so an attempt whose answer was lost
answers ``duplicate: true`` instead of notifying again. Guide: docs/client-python.md.
"""

from __future__ import annotations

import asyncio
import os
import random as _random
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence
from urllib.parse import quote

import httpx

from ._types import Status

__all__ = ["Broadcaster", "BroadcastError", "BroadcastResult", "PublishResult", "retry_delay"]


class BroadcastError(Exception):
    """The final failure of a publish.

    ``status`` is the HTTP status of the last answer (0 when none arrived), ``code`` the
    server's error code (``invalid_body``, ``unauthorized``, ``partial_failure``…) or
    ``network_error`` / ``timeout``; ``body`` the last answer's body; ``attempts`` how many
    requests were made. ``retryable``: whether calling again with the same idempotency key may
    succeed.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 0,
        code: str = "unknown",
        body: object = None,
        attempts: int = 1,
        failed_rooms: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.body = body
        self.attempts = attempts
        self.failed_rooms = list(failed_rooms)
        """For ``broadcast_many``: the rooms that still failed."""

    @property
    def retryable(self) -> bool:
        return self.status == 0 or self.status >= 500 or self.code == "partial_failure"

    def __repr__(self) -> str:
        return f"BroadcastError(status={self.status}, code={self.code!r}, message={self.message!r})"


@dataclass(frozen=True)
class PublishResult:
    """One room's answer to a publish."""

    id: str
    seq: int | None
    """None for an ephemeral publish (which takes no seq)."""
    broadcast_count: int
    """The sockets it was sent to now."""
    duplicate: bool
    """True when an earlier call with the same key had already published it."""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> PublishResult:
        seq = body.get("seq")
        return cls(
            id=str(body.get("id", "")),
            seq=seq if isinstance(seq, int) else None,
            broadcast_count=int(body.get("broadcastCount", 0)),
            duplicate=body.get("duplicate") is True,
            raw=dict(body),
        )


@dataclass(frozen=True)
class BroadcastResult:
    """The answer of ``POST /broadcast``: per room (``user_{id}``, ``request_{id}``)."""

    rooms: dict[str, PublishResult]

    @property
    def id(self) -> str:
        """The notification's id (the same in every room)."""
        return next(iter(self.rooms.values())).id if self.rooms else ""


def retry_delay(
    retry: int,
    *,
    base: float = 0.25,
    maximum: float = 5.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds before retry ``retry`` (1-based): exponential backoff with full jitter."""
    return float(random() * min(maximum, base * 2 ** (retry - 1)))


def _error_text(error: BaseException | str | object) -> str:
    if isinstance(error, BaseException):
        return str(error) or type(error).__name__
    if isinstance(error, str):
        return error or "error"
    return repr(error)


class Broadcaster:
    """Publishes notifications over HTTP with the API key.

    ``url`` defaults to ``ROOMCAST_URL`` and ``api_key`` to ``ROOMCAST_API_KEY`` from the
    environment. Network errors, timeouts and 5xx answers are retried ``retries`` times with
    exponential backoff and full jitter; 4xx answers never are. Use as ``async with`` or call
    ``aclose()``; pass ``http_client`` to share an ``httpx.AsyncClient`` (then it is yours to
    close).
    """

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        *,
        retries: int = 3,
        timeout: float = 10.0,
        retry_delay: float = 0.25,
        max_retry_delay: float = 5.0,
        http_client: httpx.AsyncClient | None = None,
        random: Callable[[], float] | None = None,
    ) -> None:
        base = url or os.environ.get("ROOMCAST_URL")
        key = api_key or os.environ.get("ROOMCAST_API_KEY")
        if not base:
            raise ValueError("Broadcaster needs `url` (or ROOMCAST_URL in the environment)")
        if not key:
            raise ValueError(
                "Broadcaster needs `api_key` (or ROOMCAST_API_KEY in the environment): one of "
                "the server's BROADCAST_API_KEYS"
            )
        if retries < 0:
            raise ValueError("retries must be 0 or more")
        self._base = base.rstrip("/")
        self._api_key = key
        self._retries = retries
        self._timeout = timeout
        self._retry_delay = retry_delay
        self._max_retry_delay = max_retry_delay
        self._random = random or _random.random
        self._own_client = http_client is None
        self._http = http_client or httpx.AsyncClient()

    async def aclose(self) -> None:
        if self._own_client:
            await self._http.aclose()

    async def __aenter__(self) -> Broadcaster:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def broadcast(
        self,
        user_id: str,
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        requires_ack: bool = False,
        status: Status = "success",
        idempotency_key: str | None = None,
    ) -> BroadcastResult:
        """Publishes to ``user_{user_id}`` and, with ``request_id``, ``request_{request_id}``
        (``POST /broadcast``). Give ``idempotency_key`` made of your job's run id and step
        (``f"{run_id}:notify"``) so that a retried step never notifies twice."""
        message = _message(type, data, status=status, requires_ack=requires_ack)
        return await self._broadcast({"userId": user_id}, message, request_id, idempotency_key)

    async def broadcast_error(
        self,
        user_id: str,
        type: str,
        error: BaseException | str,
        *,
        data: Mapping[str, Any] | None = None,
        request_id: str | None = None,
        requires_ack: bool = False,
        idempotency_key: str | None = None,
    ) -> BroadcastResult:
        """A ``status: "error"`` notification carrying the error's text."""
        message = _message(type, data, status="error", requires_ack=requires_ack)
        message["error"] = _error_text(error)
        return await self._broadcast({"userId": user_id}, message, request_id, idempotency_key)

    async def broadcast_many(
        self,
        user_ids: Sequence[str],
        type: str,
        data: Mapping[str, Any] | None = None,
        *,
        request_id: str | None = None,
        requires_ack: bool = False,
        status: Status = "success",
        idempotency_key: str | None = None,
    ) -> BroadcastResult:
        """Publishes one notification (one id) to many users' rooms at once (``POST /broadcast``
        with ``userIds``, 1–100 distinct ids). Rooms the server could not reach (a ``207``
        answer) are published again, just those, with the same key; a room that still fails
        raises ``BroadcastError`` with ``code="partial_failure"`` and ``failed_rooms``."""
        ids = list(user_ids)
        if not ids:
            raise ValueError("broadcast_many needs at least one user id")
        message = _message(type, data, status=status, requires_ack=requires_ack)
        return await self._broadcast({"userIds": ids}, message, request_id, idempotency_key)

    async def broadcast_room(
        self, room: str, message: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> PublishResult:
        """Publishes ``message`` (``{"type", "data", "status", "requiresAck", …}`` as in the
        protocol) to one room (``POST /rooms/{room}/broadcast``)."""
        key, body = _prepare(message, idempotency_key)
        answer, _ = await self._post(f"/rooms/{quote(room, safe='')}/broadcast", body, key)
        return PublishResult.from_json(answer)

    # ---- internals ----

    async def _broadcast(
        self,
        target: dict[str, Any],
        message: dict[str, Any],
        request_id: str | None,
        idempotency_key: str | None,
    ) -> BroadcastResult:
        key, message = _prepare(message, idempotency_key)
        body: dict[str, Any] = {**target, "message": message}
        if request_id is not None:
            body["requestId"] = request_id
        answer, status = await self._post("/broadcast", body, key)
        got = answer.get("rooms")
        rooms: dict[str, Any] = dict(got) if isinstance(got, dict) else {}
        failed = [r for r, v in rooms.items() if not isinstance(v, dict) or v.get("success") is False]
        if failed:
            # A 207: publish again to just those rooms, with the same key and id (a room that
            # has it already answers duplicate:true). `message.requestId` is what POST /broadcast
            # fills from the top-level requestId, so every room stores the same notification.
            again = dict(message)
            if request_id is not None:
                again.setdefault("requestId", request_id)
            results = await asyncio.gather(
                *(self._post(f"/rooms/{quote(r, safe='')}/broadcast", again, key) for r in failed),
                return_exceptions=True,
            )
            still: list[str] = []
            for room, result in zip(failed, results):
                if isinstance(result, BroadcastError):
                    still.append(room)
                    rooms[room] = {"success": False, "error": {"code": result.code, "message": result.message}}
                elif isinstance(result, BaseException):
                    raise result
                else:
                    rooms[room] = result[0]
            if still:
                raise BroadcastError(
                    f"publish failed in {len(still)} room(s): {', '.join(still)}; retry with the same "
                    f"idempotency key {key!r}",
                    status=status,
                    code="partial_failure",
                    body={"success": False, "rooms": rooms},
                    failed_rooms=still,
                )
        return BroadcastResult({r: PublishResult.from_json(v) for r, v in rooms.items()})

    async def _post(self, path: str, body: Mapping[str, Any], key: str) -> tuple[dict[str, Any], int]:
        """POSTs ``body``, retrying network errors, timeouts and 5xx with the same key."""
        attempts = 1 + self._retries
        last: BroadcastError | None = None
        headers = {
            "authorization": f"Bearer {self._api_key}",
            "idempotency-key": key,
        }
        for attempt in range(1, attempts + 1):
            if attempt > 1:
                await asyncio.sleep(
                    retry_delay(attempt - 1, base=self._retry_delay, maximum=self._max_retry_delay, random=self._random)
                )
            try:
                res = await self._http.post(self._base + path, json=body, headers=headers, timeout=self._timeout)
            except httpx.TimeoutException as err:
                last = BroadcastError(f"no answer within {self._timeout} s: {err!r}", code="timeout", attempts=attempt)
                continue
            except httpx.TransportError as err:
                last = BroadcastError(f"network error: {err!r}", code="network_error", attempts=attempt)
                continue
            try:
                parsed: Any = res.json()
            except ValueError:
                parsed = res.text
            if res.is_success and isinstance(parsed, dict):
                return parsed, res.status_code
            err_obj = parsed.get("error") if isinstance(parsed, dict) else None
            code = str(err_obj.get("code")) if isinstance(err_obj, dict) else f"http_{res.status_code}"
            why = str(err_obj.get("message")) if isinstance(err_obj, dict) else f"HTTP {res.status_code}"
            last = BroadcastError(
                f"publish failed ({res.status_code} {code}): {why}",
                status=res.status_code,
                code=code,
                body=parsed,
                attempts=attempt,
            )
            # A 4xx means the request itself is wrong (or unauthorized): repeating cannot help.
            if res.status_code < 500:
                raise last
        assert last is not None
        raise last


def _message(type: str, data: Mapping[str, Any] | None, *, status: Status, requires_ack: bool) -> dict[str, Any]:
    return {"type": type, "data": dict(data or {}), "status": status, "requiresAck": requires_ack}


def _prepare(message: Mapping[str, Any], idempotency_key: str | None) -> tuple[str, dict[str, Any]]:
    """The call's key (the caller's, else the message's id, else a new UUID) and the message
    with its id filled from the key, so every room and every retry gets one id."""
    if not isinstance(message, Mapping):
        raise TypeError("message must be a mapping like {'type': …, 'data': {…}}")
    msg = dict(message)
    given = msg.get("id")
    key = idempotency_key or (given if isinstance(given, str) and given else None) or str(uuid.uuid4())
    msg.setdefault("id", key)
    return key, msg
