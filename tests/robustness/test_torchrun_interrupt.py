"""Issue 20 item 4 under torchrun: Ctrl-C (SIGINT) or SIGTERM to a 2-rank gloo run's process group.

What happens, end to end. The signal reaches torchrun and both ranks. Each rank's handler
(:func:`analyses.cli.errors.interrupts_raise`) raises ``KeyboardInterrupt`` at its next bytecode, or
when a blocking gloo collective returns (the peer that stopped closes its sockets, so a blocked
rank is released at once); the command's ``finally`` saves the rank's finished points and
restores the weights, and the rank prints one line and exits 130. torchrun itself treats SIGINT and
SIGTERM as death signals: it forwards the signal to the workers, waits for them, and exits with
status 1 through its ``SignalException`` (torch.distributed.elastic's documented behaviour; the
ranks' 130 is not passed through). Asserted: ends within seconds, torchrun's status 1, one
``landscape: interrupted`` line per rank and no other line of ours, the checkpoint unchanged, the
lock released, and ``--resume`` (under torchrun, or in one process) gives the uninterrupted result.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from saved_models import save_tiny_checkpoint, tiny_texts

from landscape.scans.runner import Surface
from landscape.util import lock

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "OMP_NUM_THREADS": "1",
       "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> tuple[Path, Path, dict[str, str]]:
    """(a saved tiny BERT, a file of 200 texts, the checkpoint files' SHA-256 before any run)."""
    folder = tmp_path_factory.mktemp("torchrun-interrupt")
    texts = folder / "texts.txt"
    texts.write_text("\n".join(tiny_texts(200)))
    save_tiny_checkpoint(folder / "ck")
    return folder / "ck", texts, _digest(folder / "ck")


def _scan_args(ckpt, out: Path) -> list[str]:
    return ["scan", str(ckpt[0]), "--texts", str(ckpt[1]), "--examples", "8", "--dims", "2", "--grid", "40",
            "--batch-points", "1", "--out", str(out)]


@pytest.fixture(scope="module")
def uninterrupted(ckpt, tmp_path_factory) -> Surface:
    """The scan run to the end in one process (torchrun gives the same numbers to rounding)."""
    out = tmp_path_factory.mktemp("fresh")
    fresh = subprocess.run([sys.executable, "-m", "analyses.cli", *_scan_args(ckpt, out), "--no-progress"], cwd=ROOT,
                           env=ENV, capture_output=True, text=True, timeout=300)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    return Surface.load(out / "scan_2d.npz")


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _interrupt(argv: list[str], sig: int, marker: bytes) -> tuple[int, str, float]:
    """Start ``torchrun ... -m analyses.cli ARGV`` in its own process group, signal the group after the
    first progress, and return (torchrun's status, its merged output, seconds from signal to exit)."""
    proc = subprocess.Popen([*TORCHRUN, "-m", "analyses.cli", *argv], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, env=ENV, cwd=ROOT, start_new_session=True)
    os.set_blocking(proc.stdout.fileno(), False)
    seen, t0 = b"", time.time()
    while marker not in seen:
        assert proc.poll() is None, f"ended before the first progress: {seen.decode(errors='replace')[-2000:]}"
        assert time.time() - t0 < 120, f"no progress after 120 s: {seen.decode(errors='replace')[-2000:]}"
        seen += proc.stdout.read() or b""
        time.sleep(0.05)
    time.sleep(1.0)
    t1 = time.time()
    os.killpg(proc.pid, sig)  # what Ctrl-C does to a foreground job: every process of the group
    try:
        proc.wait(timeout=40)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"torchrun still running 40 s after signal {sig}")
    took = time.time() - t1
    os.set_blocking(proc.stdout.fileno(), True)
    return proc.returncode, (seen + proc.stdout.read()).decode(errors="replace"), took


def _check_stopped(status: int, output: str, took: float) -> None:
    """Within seconds, torchrun's status 1, and from each rank one line of ours: the interrupt's."""
    assert took < 10, f"took {took:.1f} s to stop:\n{output[-3000:]}"
    assert status == 1, output[-3000:]  # torchrun's SignalException: its exit on a death signal
    lines = output.replace("\r", "\n").splitlines()
    ours = [ln for ln in lines if ln.startswith("landscape:") and "lowered to" not in ln]
    assert len(ours) == 2 and all(ln.startswith("landscape: interrupted") for ln in ours), output[-3000:]
    assert "internal error" not in output and "Traceback" not in output.split("death signal")[0], output[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize(("sig", "resume_ranks"), [(signal.SIGINT, 2), (signal.SIGTERM, 1)])
def test_signal_to_a_torchrun_scan_stops_all_ranks_and_keeps_their_points(ckpt, uninterrupted, tmp_path, sig,
                                                                          resume_ranks):
    """Ctrl-C / SIGTERM to a sharded scan: both ranks stop, keep their points, and --resume (under
    torchrun, or in one process) completes to the uninterrupted surface."""
    out = tmp_path / "o"
    _check_stopped(*_interrupt(_scan_args(ckpt, out), sig, b"surface scan rank 0:"))
    assert _digest(ckpt[0]) == ckpt[2]  # the checkpoint on disk is unchanged
    assert not (out / lock.LOCK_NAME).exists()
    kept = [Surface.load(p) for p in sorted(out.glob("scan_2d.npz.rank*.npz"))]
    assert len(kept) == 2 and all(0 < s.n_done < 1600 for s in kept)  # each rank kept its finished points
    launcher = TORCHRUN if resume_ranks == 2 else [sys.executable]
    resumed = subprocess.run([*launcher, "-m", "analyses.cli", *_scan_args(ckpt, out), "--resume", "--no-progress"],
                             cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    result = Surface.load(out / "scan_2d.npz")
    assert result.n_done == uninterrupted.n_done == 1600
    np.testing.assert_allclose(result.values["loss"], uninterrupted.values["loss"], rtol=1e-6)


@pytest.mark.slow
def test_sigint_reaches_ranks_inside_collectives(ckpt, tmp_path):
    """A Hessian run all-reduces every product, so a rank is often blocked in gloo when Ctrl-C comes:
    the rank that stops first closes its sockets, the blocked one returns and stops too."""
    argv = ["hessian", str(ckpt[0]), "--texts", str(ckpt[1]), "--top-k", "3", "--trace", "--trace-matvecs", "3000",
            "--out", str(tmp_path / "o")]
    _check_stopped(*_interrupt(argv, signal.SIGINT, b"estimated time"))
    assert _digest(ckpt[0]) == ckpt[2] and not (tmp_path / "o" / lock.LOCK_NAME).exists()
