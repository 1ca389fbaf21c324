"""roomcast for Python: receive realtime notifications with asyncio (``RealtimeClient``) and
publish them from backends (``Broadcaster``). Guide: docs/client-python.md."""

from ._types import (
    Acked,
    CloseCode,
    Connected,
    ConnectionState,
    Disconnected,
    Notification,
    RealtimeError,
    Reconnecting,
    Recovery,
    StateChange,
    Status,
    Subscribed,
    TokenReason,
)
from .broadcaster import Broadcaster, BroadcastError, BroadcastResult, PublishResult, retry_delay
from .client import RealtimeClient, TokenProvider, backoff_delay

__all__ = [
    "Acked",
    "BroadcastError",
    "BroadcastResult",
    "Broadcaster",
    "CloseCode",
    "Connected",
    "ConnectionState",
    "Disconnected",
    "Notification",
    "PublishResult",
    "RealtimeClient",
    "RealtimeError",
    "Reconnecting",
    "Recovery",
    "StateChange",
    "Status",
    "Subscribed",
    "TokenProvider",
    "TokenReason",
    "backoff_delay",
    "retry_delay",
]
