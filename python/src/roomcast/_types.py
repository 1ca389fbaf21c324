"""Values the client hands to the app: notifications, events and errors."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

ConnectionState = Literal["disconnected", "connecting", "connected", "reconnecting", "error"]
"""The client's state over all of its rooms (``error``: a room stopped for good)."""

TokenReason = Literal["connect", "reconnect", "expired", "unauthorized"]
"""Why ``get_token`` is called: a first connection, a reconnection, after close 4001 (the token
expired while connected), or after an HTTP 401 refusal of the upgrade."""

Status = Literal["success", "error", "pending"]


class CloseCode:
    """Close codes the server uses (see docs/protocol.md)."""

    AUTH = 4001
    """Authentication failed, or the token expired while connected."""
    RATE_LIMITED = 4002
    """Rate limit exceeded persistently: reconnect, but later."""
    INVALID_FRAMES = 4003
    """Invalid frames persistently: reconnecting would only repeat the mistake."""
    TOO_BIG = 1009
    """A frame larger than MAX_MESSAGE_BYTES."""


class RealtimeError(Exception):
    """An error the client reports through its ``error`` event.

    ``fatal`` errors stopped their room (``room_id``); the client does not reconnect it until
    ``connect()`` is called again. ``status`` is the HTTP status of a refused upgrade,
    ``close_code`` the WebSocket close code that led to the error, where there was one.
    """

    def __init__(
        self,
        code: str,
        message: str,
        *,
        room_id: str | None = None,
        fatal: bool = False,
        status: int | None = None,
        close_code: int | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.room_id = room_id
        self.fatal = fatal
        self.status = status
        self.close_code = close_code

    def __repr__(self) -> str:
        return (
            f"RealtimeError(code={self.code!r}, room_id={self.room_id!r}, fatal={self.fatal}, "
            f"status={self.status}, close_code={self.close_code}, message={self.message!r})"
        )


@dataclass(frozen=True)
class Notification:
    """One notification, as the server sent it, through the room ``room_id``."""

    id: str
    seq: int
    type: str
    data: Mapping[str, Any]
    status: str
    timestamp: str
    requires_ack: bool
    attempt: int
    room_id: str
    request_id: str | None = None
    error: str | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole frame, for fields this class does not name."""

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any], room_id: str) -> Notification:
        data = frame.get("data")
        request_id = frame.get("requestId")
        error = frame.get("error")
        attempt = frame.get("attempt")
        return cls(
            id=str(frame["id"]),
            seq=int(frame["seq"]),
            type=str(frame.get("type", "")),
            data=data if isinstance(data, dict) else {},
            status=str(frame.get("status", "success")),
            timestamp=str(frame.get("timestamp", "")),
            requires_ack=frame.get("requiresAck") is True,
            attempt=attempt if isinstance(attempt, int) else 1,
            room_id=room_id,
            request_id=request_id if isinstance(request_id, str) else None,
            error=error if isinstance(error, str) else None,
            raw=dict(frame),
        )


@dataclass(frozen=True)
class StateChange:
    state: ConnectionState
    previous: ConnectionState


@dataclass(frozen=True)
class Connected:
    """A room's socket is open and the server said ``connected``."""

    room_id: str
    connection_id: str | None
    last_seq: int | None
    """The room's latest seq, as the server reported it."""
    resumed: bool
    """Whether the client asked to resume (``since=``)."""
    recovered: bool | None
    """With ``resumed``: whether the server still had everything since (None otherwise)."""


@dataclass(frozen=True)
class Disconnected:
    room_id: str
    code: int
    reason: str
    was_connected: bool


@dataclass(frozen=True)
class Reconnecting:
    """The next attempt for a room is scheduled ``delay`` seconds from now."""

    room_id: str
    attempt: int
    delay: float
    code: int | None = None
    """The close code that ended the last connection, if one did."""
    status: int | None = None
    """The HTTP status that refused the last upgrade (429, 5xx), if one did."""


@dataclass(frozen=True)
class Recovery:
    """After each resumed connection. ``recovered=False``: the server no longer had every
    notification after ``since`` (history is bounded): refetch your state from your API."""

    room_id: str
    since: int
    last_seq: int | None
    recovered: bool


@dataclass(frozen=True)
class Subscribed:
    room_id: str
    types: list[str]


@dataclass(frozen=True)
class Acked:
    room_id: str
    ids: list[str]
