"""The Python API blocks run as written (sizes shrunk so they take seconds), so their names cannot
drift from the code: the whole API on the getting-started page, and the README's short example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from landscape.models import default_model

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
GETTING_STARTED = ROOT / "docs" / "getting-started.md"

# (written, run): the same calls with smaller sizes, and the checkpoint line pointed at a real folder.
SHRINK = [("max_examples=32", "max_examples=4"), ("k=3,", "k=1,"), ("num_matvecs=99", "num_matvecs=3"),
          ("num_runs=8, lanczos_steps=64", "num_runs=1, lanczos_steps=4"), ("coefficients(-1, 1, 21)", "coefficients(-1, 1, 3)"),
          ("num_samples=16", "num_samples=1"), ("rho=0.05, adaptive=True)", "rho=0.05, adaptive=True, steps=1)"),
          ("eps=1e-3)", "eps=1e-3, steps=1)"), ("tol=1e-3, method=\"lanczos\")", "tol=1e-1, method=\"lanczos\", max_iter=4)")]


def api_block(page: Path = GETTING_STARTED, heading: str = "## The Python API in one block") -> str:
    text = page.read_text(encoding="utf-8")
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.slow
@pytest.mark.skipif(default_model.cached_path() is None, reason="the default model is not built in this cache")
def test_getting_started_api_block_runs(tmp_path, monkeypatch):
    from saved_models import save_tiny_checkpoint

    code = api_block()
    for written, run in SHRINK:
        assert written in code, f"README no longer contains {written!r}: update SHRINK"
        code = code.replace(written, run)
    save_tiny_checkpoint(tmp_path / "ckpt")
    code = code.replace('"path/to/hf_dir"', repr(str(tmp_path / "ckpt")))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "docs/getting-started.md (Python API)", "exec"), namespace)
    assert namespace["surf"].complete and (tmp_path / "s.h5").is_file() and namespace["ck"].task == "mlm"


@pytest.mark.slow
@pytest.mark.skipif(default_model.cached_path() is None, reason="the default model is not built in this cache")
def test_readme_short_example_runs(tmp_path, monkeypatch):
    code = api_block(README, "## Python API")
    for written, run in SHRINK:
        code = code.replace(written, run)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert len(namespace["curve"].alphas) == 3
