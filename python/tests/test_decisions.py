"""roomcast.decide.decide against the table both clients share: every case, with its defaults."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from roomcast.decide import decide

TABLE = json.loads((Path(__file__).resolve().parents[2] / "tests/fixtures/reconnect-cases.json").read_text())
CASES: list[dict[str, Any]] = TABLE["cases"]


def test_the_table_is_there_and_not_empty() -> None:
    assert len(CASES) >= 20
    assert len({c["name"] for c in CASES}) == len(CASES), "case names are unique"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any]) -> None:
    given = {**TABLE["defaults"], **case["given"]}
    assert decide(given) == case["then"]


def test_an_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        decide({"kind": "closed", "code": 1006})


def test_no_limit_never_gives_up() -> None:
    # maxAttempts None (the Python client's default, max_reconnect_attempts=None): no limit.
    assert decide({"kind": "close", "code": 1006, "attempt": 10_000, "maxAttempts": None})["action"] == "reconnect"
