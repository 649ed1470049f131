"""Issue 20, items 4-5 in real processes: SIGINT/SIGTERM stop a long command within seconds with exit
status 130 and one line (also a batched scan started with SIGINT ignored, as a background job of a
script is), and an analysis killed with SIGKILL resumes to the result of an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from landscape.scans.runner import Surface
from landscape.util import lock
from saved_models import save_tiny_checkpoint, tiny_texts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("signals")
    save_tiny_checkpoint(root / "ck")
    (root / "texts.txt").write_text("\n".join(tiny_texts(200)))
    return root / "ck", root / "texts.txt"


def _start(argv: list[str], ignore_sigint: bool = False) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}

    def background() -> None:  # what a non-interactive shell does to `cmd &`
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return subprocess.Popen([sys.executable, "-m", "analyses.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=env, cwd=ROOT, preexec_fn=background if ignore_sigint else None)


def _wait_for(proc: subprocess.Popen, marker: str, timeout: float = 120.0) -> str:
    """Read the merged output until ``marker`` shows (progress of the computing part)."""
    os.set_blocking(proc.stdout.fileno(), False)
    seen, t0 = b"", time.time()
    while marker.encode() not in seen:
        assert proc.poll() is None, f"ended before {marker!r}: {seen.decode(errors='replace')[-2000:]}"
        assert time.time() - t0 < timeout, f"no {marker!r} after {timeout} s: {seen.decode(errors='replace')[-2000:]}"
        seen += proc.stdout.read() or b""
        time.sleep(0.05)
    return seen.decode(errors="replace")


def _stop(proc: subprocess.Popen, sig: int, within: float = 10.0) -> str:
    t0 = time.time()
    proc.send_signal(sig)
    try:
        proc.wait(timeout=within + 20)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"still running {within + 20} s after signal {sig}")
    os.set_blocking(proc.stdout.fileno(), True)
    rest = proc.stdout.read().decode(errors="replace")
    assert time.time() - t0 < within, f"took {time.time() - t0:.1f} s to stop"
    assert proc.returncode == 130, rest
    lines = [ln for ln in rest.replace("\r", "\n").splitlines() if ln.startswith("landscape:")]
    assert len(lines) == 1 and lines[0].startswith("landscape: interrupted"), rest
    return rest


def test_sigint_stops_a_batched_scan_started_with_sigint_ignored(ckpt, tmp_path):
    """Defect: `landscape scan ... &` from a script inherits SIGINT ignored and ran to 225/225, exit 0."""
    out = tmp_path / "o"
    proc = _start(["scan", str(ckpt[0]), "--texts", str(ckpt[1]), "--examples", "8", "--dims", "2", "--grid", "40",
                   "--batch-points", "4", "--out", str(out)], ignore_sigint=True)
    _wait_for(proc, "surface scan:")
    time.sleep(1.0)
    _stop(proc, signal.SIGINT)
    partial = Surface.load(out / "scan_2d.npz")
    assert 0 < partial.n_done < 1600 and not (out / lock.LOCK_NAME).exists()


@pytest.mark.parametrize(("argv", "marker", "sig"), [
    (["fisher"], "fisher[empirical]:", signal.SIGTERM),
    (["hessian", "--top-k", "3", "--trace", "--trace-matvecs", "3000"], "lowered to 32", signal.SIGINT),
    (["audit", "--examples", "8"], "audit blocks:", signal.SIGTERM),
])
def test_sigint_and_sigterm_stop_fisher_curvature_and_an_analysis(ckpt, tmp_path, argv, marker, sig):
    proc = _start([argv[0], str(ckpt[0]), "--texts", str(ckpt[1]), *argv[1:], "--out", str(tmp_path / "o")])
    _wait_for(proc, marker)
    time.sleep(0.5)
    _stop(proc, sig)
    assert not (tmp_path / "o" / lock.LOCK_NAME).exists()


@pytest.mark.slow
def test_an_analysis_killed_mid_way_resumes_to_the_uninterrupted_result(ckpt, tmp_path):
    args = [str(ckpt[0]), "--texts", str(ckpt[1]), "--examples", "8", "--points", "5", "--eig-iters", "4",
            "--trace-matvecs", "6", "--no-progress"]
    killed = tmp_path / "killed"
    proc = _start(["audit", *args[:-1], "--out", str(killed)])
    _wait_for(proc, "audit blocks:  25%")
    proc.kill()
    proc.wait()
    assert (killed / lock.LOCK_NAME).is_file()  # left behind by the killed run
    resumed = subprocess.run([sys.executable, "-m", "analyses.cli", "audit", *args, "--out", str(killed), "--resume"],
                             cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert resumed.returncode == 0, resumed.stderr
    assert "taking over the lock" in resumed.stderr and str(proc.pid) in resumed.stderr
    fresh = subprocess.run([sys.executable, "-m", "analyses.cli", "audit", *args, "--out", str(tmp_path / "fresh")],
                           cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert fresh.returncode == 0, fresh.stderr
    a, b = (json.loads((p / "result.json").read_text()) for p in (killed, tmp_path / "fresh"))
    assert a["blocks"].keys() == b["blocks"].keys()
    for name, block in b["blocks"].items():
        for key, value in block.items():
            if isinstance(value, float) and not any(w in key for w in ("second", "time")):
                assert a["blocks"][name][key] == pytest.approx(value, rel=1e-6, nan_ok=True), (name, key)
    np.testing.assert_allclose(np.load(killed / "arrays" / "sensitivity.npz")["losses"],
                               np.load(tmp_path / "fresh" / "arrays" / "sensitivity.npz")["losses"], rtol=1e-6)
