"""The README's Python API block runs as written (sizes shrunk so it takes seconds), so its names
cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from landscape.models import default_model

README = Path(__file__).resolve().parents[1] / "README.md"

# (written, run): the same calls with smaller sizes, and the checkpoint line pointed at a real folder.
SHRINK = [("max_examples=32", "max_examples=4"), ("k=3,", "k=1,"), ("num_matvecs=99", "num_matvecs=3"),
          ("num_runs=8, lanczos_steps=64", "num_runs=1, lanczos_steps=4"), ("coefficients(-1, 1, 21)", "coefficients(-1, 1, 3)"),
          ("num_samples=16", "num_samples=1"), ("rho=0.05, adaptive=True)", "rho=0.05, adaptive=True, steps=1)"),
          ("eps=1e-3)", "eps=1e-3, steps=1)"), ("tol=1e-3, method=\"lanczos\")", "tol=1e-1, method=\"lanczos\", max_iter=4)")]


def api_block() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Python API"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.mark.slow
@pytest.mark.skipif(default_model.cached_path() is None, reason="the default model is not built in this cache")
def test_readme_api_block_runs(tmp_path, monkeypatch):
    from saved_models import save_tiny_checkpoint

    code = api_block()
    for written, run in SHRINK:
        assert written in code, f"README no longer contains {written!r}: update SHRINK"
        code = code.replace(written, run)
    save_tiny_checkpoint(tmp_path / "ckpt")
    code = code.replace('"path/to/hf_dir"', repr(str(tmp_path / "ckpt")))
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), namespace)
    assert namespace["surf"].complete and (tmp_path / "s.h5").is_file() and namespace["ck"].task == "mlm"
