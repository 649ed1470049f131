"""Scan speed, measured side by side in one run (results in BENCHMARKS.md).

    python bench/bench_scan.py [--quick]

1. per-point scan time / bare forward time on the same prepared data (tiny BERT MLM);
2. ours against loss-landscapes' random_plane (pip install loss-landscapes; the `bench` extra), same
   model, number of points and data; and the weight drift each leaves behind;
3. batched (vmap, batch_points=k) against one point at a time, small MLP;
4. torchrun 2 ranks x 1 thread against 1 rank x 1 thread (tests/dist_scan_worker.py bench mode).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective  # noqa: E402

from landscape import directions, objectives, util, scan  # noqa: E402


def bert_setup():
    model = make_tiny_bert(hidden=64, layers=2, vocab=1000)
    data = make_mlm_batches(n_batches=4, batch_size=8, seq_len=32, vocab=1000)
    return model, data, mlm_objective()


def bare_forward_seconds(model, obj, prepared, reps):
    times = []
    with util.deterministic_eval(model), torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            tot = 0.0
            for p in prepared:
                s, n = obj.loss_sum(model, p)
                tot += float(s)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead(quick):
    model, data, obj = bert_setup()
    prepared = obj.prepare_data(model, data)
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    n = 4 if quick else 6
    ratios, bares, points = [], [], []
    for _ in range(5):  # interleaved, so load changes hit both sides
        bare = bare_forward_seconds(model, obj, prepared, 3)
        t0 = time.perf_counter()
        scan.scan_2d(model, obj, data, d1, d2, np.linspace(-1, 1, n), np.linspace(-1, 1, n), progress=False)
        per_point = (time.perf_counter() - t0) / (n * n)
        ratios.append(per_point / bare)
        bares.append(bare)
        points.append(per_point)
    print(f"[1] per-point scan / bare forward (tiny BERT MLM, {n}x{n} grid, incl. data prep + checks + fingerprints): "
          f"median of 5 interleaved runs {statistics.median(ratios):.3f} (runs {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"ratio of minima {min(points) / min(bares):.3f}; bare forward min {min(bares)*1e3:.1f} ms")
    return statistics.median(ratios)


def versus_loss_landscapes(quick):
    try:
        import loss_landscapes
        import loss_landscapes.main as llm
        from loss_landscapes.metrics import Metric
    except ImportError:
        print("[2] loss-landscapes not installed: pip install loss-landscapes")
        return None
    steps = 4 if quick else 6
    model, data, obj = bert_setup()
    prepared = obj.prepare_data(model, data)

    class MLMLoss(Metric):
        """What loss_landscapes.metrics.Loss does (grad enabled, the model's own mode), on our prepared data."""

        def __init__(self, no_grad):
            super().__init__()
            self.no_grad = no_grad

        def __call__(self, wrapper):
            m = wrapper.modules[0]
            with torch.set_grad_enabled(not self.no_grad):
                s_tot, n_tot = 0.0, 0
                for p in prepared:
                    s, n = obj.loss_sum(m, p)
                    s_tot, n_tot = s_tot + s.item(), n_tot + int(n)
            return s_tot / n_tot

    captured = []
    orig_rand, orig_orth = llm.rand_u_like, llm.orthogonal_to
    llm.rand_u_like = lambda v: captured.append(orig_rand(v)) or captured[-1]
    llm.orthogonal_to = lambda v: captured.append(orig_orth(v)) or captured[-1]
    results = {}
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    grid = np.linspace(-1, 1, steps)
    for label, no_grad in (("their Loss metric (grad on, train mode as left)", False), ("no_grad + eval metric", True)):
        theirs, ours = [], []
        for _ in range(2):
            m = make_tiny_bert(hidden=64, layers=2, vocab=1000)
            if no_grad:
                m.eval()
            theta0 = {k: v.detach().clone() for k, v in m.named_parameters()}
            captured.clear()
            t0 = time.perf_counter()
            try:
                loss_landscapes.random_plane(m, MLMLoss(no_grad), distance=1, steps=steps, normalization="filter")
                norm_used = "filter"
            except ZeroDivisionError:  # their filter_normalize_ divides by a zero slice norm on BERT
                m.load_state_dict({k: v for k, v in theta0.items()}, strict=False)
                captured.clear()
                t0 = time.perf_counter()
                loss_landscapes.random_plane(m, MLMLoss(no_grad), distance=1, steps=steps, normalization="layer")
                norm_used = "layer (their filter normalization raised ZeroDivisionError)"
            theirs.append(time.perf_counter() - t0)
            after = dict(m.named_parameters())
            left = max(float((after[k].detach() - theta0[k]).abs().max()) for k in theta0)
            # their end point should be θ₀ + (steps/2)(d1 − d2): compare in float64
            dir1, dir2 = captured[0], captured[1]
            names = [k for k, _ in m.named_parameters()]
            drift = 0.0
            for k, p, a, b in zip(names, m.parameters(), dir1.parameters, dir2.parameters):
                exact = theta0[k].double() + (steps / 2) * (a.double() - b.double())
                drift = max(drift, float((p.detach().double() - exact).abs().max() / exact.abs().max().clamp_min(1e-30)))
            m2 = make_tiny_bert(hidden=64, layers=2, vocab=1000)
            before = util.weights_fingerprint(m2)
            t0 = time.perf_counter()
            scan.scan_2d(m2, obj, data, d1, d2, grid, grid, progress=False)
            ours.append(time.perf_counter() - t0)
            exact_ours = util.weights_fingerprint(m2) == before
        results[label] = (min(theirs), min(ours), left, drift, exact_ours)
        print(f"[2] vs loss-landscapes random_plane, {steps}x{steps} points, {label}: theirs {min(theirs):.2f} s, "
              f"ours {min(ours):.2f} s -> ours {min(theirs) / min(ours):.2f}x faster; their weights left moved by "
              f"max |Δθ| = {left:.3g}; their accumulated-step drift at the end point = {drift:.3g} (relative, vs float64 "
              f"θ₀ + Σcᵢdᵢ); ours bit-exact after the scan: {exact_ours}; their normalization: {norm_used}")
    llm.rand_u_like, llm.orthogonal_to = orig_rand, orig_orth
    return results


def batched(quick):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g)) for _ in range(2)]
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    n = 11 if quick else 21
    xs = np.linspace(-1, 1, n)
    out = {}
    for k in (1, 16, 64):
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            res = scan.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False, batch_points=k)
            times.append(time.perf_counter() - t0)
            out.setdefault("ref", res.values["loss"])
        out[k] = min(times)
        err = float(np.abs(res.values["loss"] - out["ref"]).max())
        print(f"[3] MLP 16-32-4, 512 examples, {n}x{n} grid, batch_points={k}: {out[k]:.3f} s "
              f"(speed-up {out[1] / out[k]:.2f}x, max |Δloss| vs one-at-a-time {err:.1e})")
    return out


def distributed(quick):
    grid = "4" if quick else "6"
    worker = ROOT / "tests" / "dist_scan_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    secs = {}
    for nproc in (1, 2):
        best = None
        for _ in range(2):
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", "--master_port=29517",
                       str(worker), tmp, "bench", grid]
                r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
                if r.returncode != 0:
                    print(r.stderr[-2000:])
                    return None
                s = json.loads((Path(tmp) / "time.json").read_text())["seconds"]
                best = s if best is None else min(best, s)
        secs[nproc] = best
    print(f"[4] torchrun, tiny BERT (hidden 64), {grid}x{int(grid) + 1} grid, 1 thread per rank: 1 rank {secs[1]:.2f} s, "
          f"2 ranks {secs[2]:.2f} s -> speed-up {secs[1] / secs[2]:.2f}x (scan time inside the workers)")
    return secs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", type=int, nargs="*", default=None)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    parts = {1: overhead, 2: versus_loss_landscapes, 3: batched, 4: distributed}
    for i, f in parts.items():
        if args.only is None or i in args.only:
            f(args.quick)


if __name__ == "__main__":
    main()
