"""torchrun --nproc_per_node=2 (gloo, CPU): sharded scans equal the single-process scan, and a
rank that dies leaves its finished points for a resumed run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from landscape.scans.runner import Surface

WORKER = Path(__file__).with_name("dist_scan_worker.py")


def _torchrun(out: Path, mode: str, port: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(WORKER), str(out), mode]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_scan_equals_single_process_and_resumes_after_a_rank_dies(tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    r = _torchrun(full, "full", _free_port())
    assert r.returncode == 0, r.stderr[-3000:]
    dist, ref = Surface.load(full / "s.npz"), Surface.load(full / "ref.npz")
    assert dist.done.all() and dist.meta["world_size"] == 2
    np.testing.assert_array_equal(dist.values["loss"], ref.values["loss"])  # bit for bit
    assert json.loads((full / "counts.json").read_text())["points_per_rank"] == [10, 10]
    assert not list(full.glob("s.npz.rank*.npz"))  # partial files merged and removed

    crash = tmp_path / "crash"
    crash.mkdir()
    r = _torchrun(crash, "die", _free_port())
    assert r.returncode != 0
    parts = sorted(crash.glob("s.npz.rank*.npz"))
    assert parts, "a dying run must leave per-rank partial files"
    saved = np.zeros((5, 4), bool)
    for p in parts:
        saved |= Surface.load(p).done
    assert 3 <= saved.sum() < 20
    r = _torchrun(crash, "resume", _free_port())
    assert r.returncode == 0, r.stderr[-3000:]
    counts = json.loads((crash / "counts.json").read_text())["points_per_rank"]
    assert sum(counts) == 20 - int(saved.sum())  # no finished point recomputed
    resumed = Surface.load(crash / "s.npz")
    np.testing.assert_array_equal(resumed.values["loss"], ref.values["loss"])
