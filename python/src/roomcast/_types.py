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
    IDLE = 4008
    """Nothing received from the connection for IDLE_TIMEOUT_SECONDS: reconnect at once."""
    TOO_BIG = 1009
    """A frame larger than MAX_MESSAGE_BYTES."""


class RealtimeError(Exception):
    """An error the client reports through its ``error`` event.

    ``fatal`` errors stopped their room (``room_id``); the client does not reconnect it until
    ``connect()`` is called again. ``status`` is the HTTP status of a refused upgrade,
    ``close_code`` the WebSocket close code that led to the error, where there was one, and
    ``server_code`` the server's own code for it (a refusal's ``{"error":{"code"}}`` or an
    error frame's ``code``, e.g. ``origin_not_allowed``, ``event_not_allowed``).
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
        server_code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.room_id = room_id
        self.fatal = fatal
        self.status = status
        self.close_code = close_code
        self.server_code = server_code

    def __repr__(self) -> str:
        return (
            f"RealtimeError(code={self.code!r}, room_id={self.room_id!r}, fatal={self.fatal}, "
            f"status={self.status}, close_code={self.close_code}, server_code={self.server_code!r}, "
            f"message={self.message!r})"
        )


@dataclass(frozen=True)
class Notification:
    """One notification, as the server sent it, through the room ``room_id``. An ephemeral one
    (``ephemeral=True``, a progress update) has no ``seq``: it is never stored, replayed or acked."""

    id: str
    seq: int | None
    type: str
    data: Mapping[str, Any]
    status: str
    timestamp: str
    requires_ack: bool
    attempt: int
    room_id: str
    request_id: str | None = None
    error: str | None = None
    ephemeral: bool = False
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    """The whole frame, for fields this class does not name."""

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any], room_id: str) -> Notification:
        data = frame.get("data")
        request_id = frame.get("requestId")
        error = frame.get("error")
        attempt = frame.get("attempt")
        seq = frame.get("seq")
        return cls(
            id=str(frame["id"]),
            seq=seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
            type=str(frame.get("type", "")),
            data=data if isinstance(data, dict) else {},
            status=str(frame.get("status", "success")),
            timestamp=str(frame.get("timestamp", "")),
            requires_ack=frame.get("requiresAck") is True,
            attempt=attempt if isinstance(attempt, int) else 1,
            room_id=room_id,
            request_id=request_id if isinstance(request_id, str) else None,
            error=error if isinstance(error, str) else None,
            ephemeral=frame.get("ephemeral") is True,
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


@dataclass(frozen=True)
class ClientEvent:
    """A client event another connection sent through the room ``room_id`` with ``emit``;
    ``user_id`` is the sender's token ``sub``, set by the server."""

    room_id: str
    event: str
    data: Mapping[str, Any]
    user_id: str
    timestamp: str
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_frame(cls, frame: Mapping[str, Any], room_id: str) -> ClientEvent:
        data = frame.get("data")
        return cls(
            room_id=room_id,
            event=str(frame["event"]),
            data=data if isinstance(data, dict) else {},
            user_id=str(frame.get("userId", "")),
            timestamp=str(frame.get("timestamp", "")),
            raw=dict(frame),
        )


@dataclass(frozen=True)
class PresenceUser:
    """One user online in a room: how many sockets they had when this client connected (1 for
    a user who arrived later), their presence state, and since when they are online (None when
    unknown)."""

    user_id: str
    connections: int
    state: Mapping[str, Any]
    since: str | None


PresenceChangeKind = Literal["snapshot", "joined", "left", "updated", "cleared"]


@dataclass(frozen=True)
class PresenceChange:
    """A presence-watching room's map of who is online changed (``users`` is the new map)."""

    room_id: str
    users: Mapping[str, PresenceUser]
    count: int
    change: PresenceChangeKind
    user_id: str | None = None


@dataclass(frozen=True)
class PresenceJoined:
    room_id: str
    user_id: str
    state: Mapping[str, Any]
    timestamp: str


@dataclass(frozen=True)
class PresenceLeft:
    room_id: str
    user_id: str
    timestamp: str


@dataclass(frozen=True)
class Synced:
    """A ``sync()`` of a room finished: what was published after ``since`` has been handed to
    the app. ``recovered=False``: the server no longer had all of it."""

    room_id: str
    since: int
    last_seq: int | None
    recovered: bool


@dataclass(frozen=True)
class RoomStatus:
    """One room's connection. ``last_connected_at``: when it last said ``connected`` (seconds
    since the epoch; None before that); ``error``: the fatal error while the room is stopped."""

    room_id: str
    state: ConnectionState
    attempt: int
    last_connected_at: float | None
    last_seq: int | None
    error: RealtimeError | None
