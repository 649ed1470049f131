"""Worker for tests/test_scan_dist.py and bench/bench_scan.py, run under torchrun.

usage: dist_scan_worker.py OUT_DIR MODE [GRID]
  MODE = full: distributed scan to OUT_DIR/s.npz; rank 0 also runs a single-process reference
         (same threads) to OUT_DIR/ref.npz.
  MODE = die:  rank 1 raises after 3 points; finished points stay in per-rank partial files.
  MODE = resume: resume=True on OUT_DIR/s.npz; writes OUT_DIR/counts.json (points per rank).
  MODE = bench: time the distributed scan only; rank 0 writes OUT_DIR/time.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective  # noqa: E402

from landscape import util, scans  # noqa: E402
from landscape.scans import directions


def main() -> int:
    out, mode = Path(sys.argv[1]), sys.argv[2]
    grid = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    ctx = util.dist_context()
    hidden = 16 if mode != "bench" else 64
    model = make_tiny_bert(hidden=hidden)
    data = make_mlm_batches(n_batches=2, batch_size=4 if mode != "bench" else 8, seq_len=12 if mode != "bench" else 32)
    obj = mlm_objective()
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    xs, ys = np.linspace(-1, 1, grid), np.linspace(-0.5, 0.5, grid + 1)
    if mode == "die" and ctx.rank == 1:
        original, calls = obj.forward, {"n": 0}

        def dying(*a, **k):
            calls["n"] += 1
            if calls["n"] > 2 * 3:  # 2 batches per point: dies during its 4th point
                raise RuntimeError("rank 1 died")
            return original(*a, **k)

        obj.forward = dying
    if mode == "bench":
        t0 = time.perf_counter()
        scans.scan_2d(model, obj, data, d1, d2, xs, ys, progress=False)
        elapsed = time.perf_counter() - t0
        if ctx.is_main:
            (out / "time.json").write_text(json.dumps({"seconds": elapsed, "world_size": ctx.world_size,
                                                       "threads": torch.get_num_threads()}))
        return 0
    before = util.weights_fingerprint(model)
    res = scans.scan_2d(model, obj, data, d1, d2, xs, ys, path=out / "s.npz", resume=(mode == "resume"),
                       progress=False, save_every=0.0)
    assert util.weights_fingerprint(model) == before
    if ctx.is_main:
        (out / "counts.json").write_text(json.dumps({"points_per_rank": res.meta["points_per_rank"]}))
        if mode == "full":
            ref = scans.scan_2d(model, obj, data, d1, d2, xs, ys, path=out / "ref.npz", progress=False, distributed=False)
            assert ref.meta["world_size"] == 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
