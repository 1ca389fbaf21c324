"""What the server's contract says, as plain functions and constants the client and its room
connections share: room id and type rules, pattern matching, event rates, backoff, and reading
the server's answers (tokens, URLs, ``Retry-After``, error bodies)."""

from __future__ import annotations

import base64
import json
import random as _random
import re
import time
from email.utils import parsedate_to_datetime
from typing import Callable, Mapping

ROOM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
# A notification type or client event name (the server's rule).
TYPE = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
# Most ids one ack frame may carry (server limit).
MAX_ACK_IDS = 256
CONTROL_FRAMES = frozenset({"connected", "pong", "subscribed", "error", "event", "synced"})
# The server's windows: at most 3 `presence.set` and CLIENT_EVENT_RATE `emit` per 10 s.
PRESENCE_SET_RATE = 3
RATE_WINDOW = 10.0
# Sent this much later than a window strictly needs, so network jitter cannot make the server
# see two frames closer together than they were sent.
RATE_MARGIN = 0.5



def backoff_delay(
    attempt: int,
    *,
    initial_delay: float = 1.0,
    max_delay: float = 30.0,
    multiplier: float = 2.0,
    random: Callable[[], float] = _random.random,
) -> float:
    """Seconds before reconnect attempt ``attempt`` (1-based): exponential backoff with full
    jitter, uniformly random in ``[0, min(max_delay, initial_delay * multiplier**(attempt-1)))``."""
    cap = min(max_delay, initial_delay * multiplier ** max(0, attempt - 1))
    return float(random() * cap)


def matches_type(pattern: str, type_: str) -> bool:
    """Whether a type pattern (``*``, ``note.*`` or an exact type) matches a notification type
    or client event name, as the server matches its filters: ``note.*`` matches ``note.a`` and
    ``note.a.b``, not ``note`` or ``notes.x``."""
    if pattern == "*":
        return True
    if pattern.endswith(".*"):
        prefix = pattern[:-1]
        return len(type_) > len(prefix) and type_.startswith(prefix)
    return pattern == type_


def is_pattern(p: object) -> bool:
    return isinstance(p, str) and (p == "*" or bool(TYPE.match(p[:-2] if p.endswith(".*") else p)))


_RATE = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d+)\s*/\s*(\d+)\s*(ms|s|m)\s*$")


def parse_event_rates(rates: str | Mapping[str, tuple[int, float]] | None) -> list[tuple[str, int, float]]:
    """Per-event-name limits, as the server's ``CLIENT_EVENT_RATES`` (``typing.*=5/5s,
    cursor.move=30/1s``) or as ``{pattern: (events, seconds)}``."""
    if not rates:
        return []
    out: list[tuple[str, int, float]] = []
    if isinstance(rates, str):
        for part in filter(None, (p.strip() for p in rates.split(","))):
            m = _RATE.match(part)
            if not m or not is_pattern(m.group(1)) or int(m.group(2)) < 1 or int(m.group(3)) < 1:
                raise ValueError(f"event_rates: {part!r} is not like 'typing.*=5/5s'")
            unit = {"ms": 0.001, "s": 1.0, "m": 60.0}[m.group(4)]
            out.append((m.group(1), int(m.group(2)), float(m.group(3)) * unit))
    else:
        for pattern, (count, seconds) in rates.items():
            if not is_pattern(pattern) or count < 1 or seconds <= 0:
                raise ValueError(f"event_rates: bad limit for {pattern!r}")
            out.append((pattern, int(count), float(seconds)))
    return out


def token_exp(token: str) -> float | None:
    """A JWT's ``exp`` (seconds), read without verifying; None when it has none."""
    try:
        part = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
        exp = claims.get("exp")
        return float(exp) if isinstance(exp, (int, float)) else None
    except (IndexError, ValueError, AttributeError):
        return None


def ws_base(url: str) -> str:
    u = url.rstrip("/")
    lower = u.lower()
    if lower.startswith("https:"):
        return "wss:" + u[6:]
    if lower.startswith("http:"):
        return "ws:" + u[5:]
    if lower.startswith(("ws:", "wss:")):
        return u
    raise ValueError(f"url must be an http(s) or ws(s) URL, got {url!r}")


def http_base(ws: str) -> str:
    return "https:" + ws[4:] if ws.lower().startswith("wss:") else "http:" + ws[3:]


def retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_body(body: bytes | bytearray | None) -> tuple[str | None, str | None]:
    """The server's ``{"error":{"code","message"}}`` of a refusal, when it sent one."""
    try:
        err = json.loads(body or b"")["error"]
        return str(err.get("code")), str(err.get("message"))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, None


def prune(times: list[float], now: float, window: float) -> list[float]:
    while times and now - times[0] >= window + RATE_MARGIN:
        times.pop(0)
    return times
