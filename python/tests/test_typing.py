"""The package is fully typed: mypy --strict finds nothing in it (py.typed promises it to
users), nor in the tests, which use the API as an app would (typed handlers per event)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1]


def test_mypy_strict_passes_on_the_package_and_its_tests() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--cache-dir", str(PACKAGE / ".mypy_cache"), "src/roomcast", "tests"],
        cwd=PACKAGE,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Success: no issues found" in out.stdout
