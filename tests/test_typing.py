"""The public API type-checks: mypy over landscape/, analyses/ and figures/ (config in pyproject.toml)."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # ~30 s cold, a few seconds with mypy's cache
def test_mypy_reports_no_error(monkeypatch):
    from mypy import api  # in the [test] extra: a missing mypy fails, it does not skip
    monkeypatch.chdir(ROOT)
    stdout, stderr, status = api.run(["--config-file", str(ROOT / "pyproject.toml")])
    assert status == 0, stdout[-4000:] + stderr[-2000:]
