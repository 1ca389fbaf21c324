"""What the client does after each refusal or close: one pure function, checked against the
table both clients share (tests/fixtures/reconnect-cases.json, read by python/tests/test_decisions.py
and by the JavaScript suite).

``decide`` takes and returns the table's shapes as they are (its camelCase keys included), so
that one table checks both clients. The connection loop (``roomcast.room``) asks it after every
close, refusal and new token, and only carries its answer out.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, TypedDict

__all__ = ["DEFAULTS", "Decision", "decide"]

DEFAULTS: Mapping[str, Any] = {
    "wasConnected": True,
    "hasGetToken": True,
    "authRetried": False,
    "everConnected": True,
    "attempt": 0,
    "maxAttempts": None,
}
"""What a missing member of ``given`` means. ``maxAttempts`` None: no limit."""

# Close codes (docs/protocol.md).
_AUTH = 4001
_RATE_LIMITED = 4002
_INVALID_FRAMES = 4003
_IDLE = 4008


class Decision(TypedDict, total=False):
    action: Literal["reconnect", "probe", "use_token", "fail"]
    delay: Literal["none", "backoff", "backoff+rate_limited", "retry_after"]
    """With ``reconnect``: at once, exponential backoff for attempt+1, that plus
    ``rate_limited_delay``, or the server's Retry-After plus jitter."""
    tokenReason: Literal["connect", "reconnect", "expired", "unauthorized"]
    """With ``reconnect``: what ``get_token`` is asked for next."""
    error: str
    """With ``fail``: the fatal error's code."""


def decide(given: Mapping[str, Any]) -> Decision:
    """The action after one close (``kind`` "close": ``code``, ``wasConnected``), refusal
    (``kind`` "refused": HTTP ``status``, 0 for no answer) or new token (``kind`` "token":
    ``reason``, ``sameToken``), given ``hasGetToken``, ``authRetried``, ``everConnected``,
    ``attempt`` (attempts made in this streak) and ``maxAttempts`` (None: no limit).

    Raises ``ValueError`` for a ``kind`` it does not know."""
    g = {**DEFAULTS, **given}
    kind = g.get("kind")
    again: Literal["connect", "reconnect"] = "reconnect" if g["everConnected"] else "connect"
    max_attempts = g["maxAttempts"]
    exhausted = max_attempts is not None and g["attempt"] >= max_attempts

    if kind == "token":
        if g["sameToken"] and g["reason"] == "unauthorized":
            return {"action": "fail", "error": "unauthorized"}
        if g["sameToken"] and g["reason"] == "expired":
            return {"action": "fail", "error": "token_expired"}
        return {"action": "use_token"}

    if kind == "close":
        code = g["code"]
        if code == _INVALID_FRAMES:
            return {"action": "fail", "error": "invalid_frames"}
        if code == _AUTH and not g["hasGetToken"]:
            return {"action": "fail", "error": "token_expired"}
        if code == _IDLE:
            # Idle is not an error: at once, whatever the attempt count.
            return {"action": "reconnect", "delay": "none", "tokenReason": again}
        if not g["wasConnected"]:
            # Closed before `connected`: refused, or never reached the server; ask which.
            return {"action": "probe"}
        if exhausted:
            return {"action": "fail", "error": "max_reconnect_attempts"}
        if code == _AUTH:
            return {"action": "reconnect", "delay": "backoff", "tokenReason": "expired"}
        if code == _RATE_LIMITED:
            return {"action": "reconnect", "delay": "backoff+rate_limited", "tokenReason": again}
        return {"action": "reconnect", "delay": "backoff", "tokenReason": again}

    if kind == "refused":
        status = g["status"]
        if status == 401:
            if g["hasGetToken"] and not g["authRetried"] and not exhausted:
                # Once per streak of refusals: a cached token may just have expired.
                return {"action": "reconnect", "delay": "none", "tokenReason": "unauthorized"}
            return {"action": "fail", "error": "unauthorized"}
        if status == 403:
            return {"action": "fail", "error": "forbidden"}
        if 400 <= status < 500 and status not in (408, 426, 429):
            # The request itself is wrong (room id, query, route): repeating it cannot help.
            return {"action": "fail", "error": "refused"}
        if exhausted:
            return {"action": "fail", "error": "max_reconnect_attempts"}
        if status == 429:
            return {"action": "reconnect", "delay": "retry_after", "tokenReason": again}
        # 426 (it would be accepted now), 408, 5xx, no answer: a passing problem.
        return {"action": "reconnect", "delay": "backoff", "tokenReason": again}

    raise ValueError(f"decide: unknown kind {kind!r} (one of close, refused, token)")
