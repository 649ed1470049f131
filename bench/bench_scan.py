"""Scan speed, measured side by side in one run (results in BENCHMARKS.md).

    python bench/bench_scan.py [--quick] [--only 1 2 3 4] [--grid 21] [--dist-batches auto|N] [--rows FILE]

1. per-point scan time / bare forward time on the same prepared data (tiny BERT MLM, 21x21 grid,
   the scan's defaults, so ``batch_points="auto"`` may batch);
2. ours against loss-landscapes' random_plane (pip install loss-landscapes; the `bench` extra), same
   model, 21x21 points and data: their metric in no-grad eval mode (the row), and their stock
   ``Loss``-like metric (grad on, the model's mode as left; reported); and the weight drift each leaves;
3. batched (vmap, batch_points=k) against one point at a time, and what ``batch_points="auto"``
   picks, on a small MLP (where batching pays) and on the tiny BERT;
4. torchrun 2 ranks x 1 thread against 1 rank x 1 thread (target >= 1.8x), timed from a barrier after
   setup to a barrier after the result, with each rank's CPU seconds and the machine's ceiling (two
   independent 1-rank runs together; bench/_dist.py); tiny BERT on a 21x21 grid, with the data
   sized so that the 1-rank scan takes at least 20 s (``--dist-batches auto``: estimated from part 1,
   or a quick measurement, then rescaled from the 1-rank run itself; or give a number of batches).

Ends with ready-to-paste Markdown rows (``--rows FILE`` appends them to FILE). ``--quick`` (6x6
grids, a ~2 s torchrun workload) only checks the script; the table's rows come from the defaults
(about 5 min on a quiet 2-core machine).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import _report
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective

from landscape import objectives, scans, util
from landscape.scans import directions

BERT = {"hidden": 64, "layers": 2, "vocab": 1000}
BERT_LABEL = "tiny BERT MLM (hidden 64, 2 layers, vocab 1000)"


def bert_setup(n_batches: int = 4):
    model = make_tiny_bert(**BERT)
    data = make_mlm_batches(n_batches=n_batches, batch_size=8, seq_len=32, vocab=1000)
    return model, data, mlm_objective()


def bare_forward_seconds(model, obj, prepared, reps):
    times = []
    with util.deterministic_eval(model), torch.no_grad():
        for _ in range(reps):
            t0 = time.perf_counter()
            tot = 0.0
            for p in prepared:
                s, _ = obj.loss_sum(model, p)
                tot += float(s)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def overhead(n, runs, rows, cmd):
    model, data, obj = bert_setup()
    prepared = obj.prepare_data(model, data)
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    ratios, bares, points, picks = [], [], [], []
    for _ in range(runs):  # interleaved, so load changes hit both sides
        bare = bare_forward_seconds(model, obj, prepared, 3)
        t0 = time.perf_counter()
        res = scans.scan_2d(model, obj, data, d1, d2, np.linspace(-1, 1, n), np.linspace(-1, 1, n), progress=False)
        per_point = (time.perf_counter() - t0) / (n * n)
        ratios.append(per_point / bare)
        bares.append(bare)
        points.append(per_point)
        picks.append(res.meta.get("batch_points"))
    med = statistics.median(ratios)
    print(f"[1] per-point scan / bare forward ({BERT_LABEL}, 4 batches of 8x32, {n}x{n} grid, incl. data prep + checks "
          f"+ fingerprints): median of {runs} interleaved runs {med:.3f} (runs {', '.join(f'{r:.3f}' for r in ratios)}); "
          f"ratio of minima {min(points) / min(bares):.3f}; bare forward min {min(bares)*1e3:.1f} ms; "
          f"batch_points picked {picks}", flush=True)
    rows.append(_report.row(f"scan per point / bare forward, {BERT_LABEL}, {n}×{n} grid (median of {runs} interleaved)",
                            f"{med:.3f} (bare forward {statistics.median(bares) * 1e3:.1f} ms; batch_points {picks[-1]})",
                            "≤ 1.05", med <= 1.05, cmd))
    return statistics.median(points)


def versus_loss_landscapes(steps, repeats, rows, cmd):
    try:
        import loss_landscapes
        import loss_landscapes.main as llm
        from loss_landscapes.metrics import Metric
    except ImportError:
        print("[2] loss-landscapes not installed: pip install loss-landscapes")
        rows.append(_report.row("scan vs loss-landscapes random_plane", "loss-landscapes not installed", "≥ 1.3× faster",
                                False, cmd))
        return None
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
    for label, no_grad, reps in (("no_grad + eval metric", True, repeats),
                                 ("their Loss metric (grad on, train mode as left)", False, 1)):
        theirs, ours = [], []
        for _ in range(reps):
            m = make_tiny_bert(**BERT)
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
            m2 = make_tiny_bert(**BERT)
            before = util.weights_fingerprint(m2)
            t0 = time.perf_counter()
            scans.scan_2d(m2, obj, data, d1, d2, grid, grid, progress=False)
            ours.append(time.perf_counter() - t0)
            exact_ours = util.weights_fingerprint(m2) == before
        results[label] = (min(theirs), min(ours), left, drift, exact_ours)
        speed = min(theirs) / min(ours)
        print(f"[2] vs loss-landscapes random_plane, {steps}x{steps} points, {label}: theirs {min(theirs):.2f} s, "
              f"ours {min(ours):.2f} s -> ours {speed:.2f}x faster; their weights left moved by "
              f"max |Δθ| = {left:.3g}; their accumulated-step drift at the end point = {drift:.3g} (relative, vs float64 "
              f"θ₀ + Σcᵢdᵢ); ours bit-exact after the scan: {exact_ours}; their normalization: {norm_used}", flush=True)
        detail = (f"{speed:.2f}× faster (theirs {min(theirs):.2f} s, ours {min(ours):.2f} s, best of {reps}; their weights "
                  f"left moved by {left:.2g}, end-point drift {drift:.2g}; ours bit-exact: {exact_ours})")
        if no_grad:
            rows.append(_report.row(f"scan vs loss-landscapes random_plane, their metric in no-grad eval mode, {BERT_LABEL}, "
                                    f"{steps}×{steps}", detail, "≥ 1.3× faster", speed >= 1.3, cmd))
        else:
            rows.append(_report.row(f"scan vs loss-landscapes random_plane, their stock Loss-like metric (grad on), "
                                    f"{steps}×{steps}", detail, "reported", None, cmd))
    llm.rand_u_like, llm.orthogonal_to = orig_rand, orig_orth
    return results


def _mlp_setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    g = torch.Generator().manual_seed(0)
    data = [(torch.randn(256, 16, generator=g), torch.randint(0, 4, (256,), generator=g)) for _ in range(2)]
    return model, data, objectives.Criterion(nn.CrossEntropyLoss())


def batched(n, repeats, rows, cmd):
    for label, setup, ks in (("MLP 16-32-4, 512 examples", _mlp_setup, (1, 16, 64, "auto")),
                             (f"{BERT_LABEL}, 4 batches of 8x32", bert_setup, (1, 16, "auto"))):
        model, data, obj = setup()
        d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
        xs = np.linspace(-1, 1, n)
        out, ref, picked = {}, None, None
        for k in ks:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res = scans.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False, batch_points=k)
                times.append(time.perf_counter() - t0)
                ref = res.values["loss"] if ref is None else ref
            out[k] = min(times)
            if k == "auto":
                picked = res.meta.get("batch_points")
            err = float(np.abs(res.values["loss"] - ref).max())
            print(f"[3] {label}, {n}x{n} grid, batch_points={k}{f' (picked {picked})' if k == 'auto' else ''}: "
                  f"{out[k]:.3f} s (speed-up {out[1] / out[k]:.2f}x, max |Δloss| vs one-at-a-time {err:.1e})", flush=True)
        fixed = {k: t for k, t in out.items() if k != "auto"}
        best_k = min(fixed, key=fixed.get)
        ok = picked == best_k or out["auto"] <= 1.1 * fixed[best_k]
        rows.append(_report.row(f"vmap-batched grid points vs one at a time, {label}, {n}×{n}, best of {repeats}",
                                f"best fixed k={best_k}: {out[1] / fixed[best_k]:.2f}× vs one at a time; auto picked "
                                f"{picked}: {out[1] / out['auto']:.2f}× (" + ", ".join(f"k={k} {t:.2f} s" for k, t in out.items()) + ")",
                                "chosen automatically where it pays (auto picks the best fixed k, or runs within 10 % of it)", ok, cmd))
    return out


# ----------------------------------------------------------------------------- 4. torchrun


def dist_worker(n_batches: int, grid: int) -> None:
    """Run under torchrun (or alone): the scan between two barriers (``_dist.timed_interval``); rank 0
    prints one JSON line."""
    import _dist

    util.dist_context()
    model, data, obj = bert_setup(n_batches)
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    xs = np.linspace(-1, 1, grid)
    res, rec = _dist.timed_interval(lambda: scans.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False))
    if rec is not None:
        print(json.dumps({**rec, "batch_points": res.meta.get("batch_points"),
                          "points_per_rank": res.meta.get("points_per_rank")}), flush=True)


def run_dist(nproc: int, n_batches: int, grid: int) -> dict:
    """One torchrun of the scan worker with ``nproc`` ranks: its JSON record."""
    import _dist

    return _dist.run(__file__, ["--dist-worker", "--dist-batches", str(n_batches), "--grid", str(grid)], nproc)


def distributed(grid, dist_batches, target_s, per_point, rows, cmd):
    """1 rank, 2 ranks and the machine's ceiling (``_dist.compare``) on a workload of ≥ ``target_s``."""
    import _dist

    if dist_batches == "auto":
        if per_point is None:  # a quick measurement: one small scan at the default data size (4 batches)
            model, data, obj = bert_setup()
            d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
            xs = np.linspace(-1, 1, 6)
            scans.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False, batch_points=1)  # warm-up
            t0 = time.perf_counter()
            scans.scan_2d(model, obj, data, d1, d2, xs, xs, progress=False, batch_points=1)
            per_point = (time.perf_counter() - t0) / 36
        per_batch_point = per_point / 4 * torch.get_num_threads()  # measured with this process's threads
        n = max(1, int(np.ceil(target_s / (grid * grid * per_batch_point))))
        print(f"[4] torchrun workload: {n} batches of 8x32 on a {grid}x{grid} grid (~{n * grid * grid * per_batch_point:.0f} s "
              "single-process, estimated)", flush=True)
        for _ in range(2):  # the estimate is rough: rescale from a 1-rank run itself (kept when big enough)
            first = run_dist(1, n, grid)
            if first["seconds"] >= 0.8 * target_s:
                break
            n, first = max(n + 1, int(np.ceil(n * target_s / first["seconds"]))), None
            print(f"    1 rank took below {0.8 * target_s:.0f} s: resized to {n} batches", flush=True)
    else:
        n, first = int(dist_batches), None
    args = ["--dist-worker", "--dist-batches", str(n), "--grid", str(grid)]
    one, two, _, summary = _dist.compare(__file__, args, f"4: scan, {n} batches of 8x32, {grid}x{grid}", first)
    speed, big = one["seconds"] / two["seconds"], one["seconds"] >= 20
    picks = f"batch_points {one['batch_points']} / {two['batch_points']}"
    rows.append(_report.row(f"torchrun 2 ranks vs 1 (1 thread each, barrier to barrier), scan, {BERT_LABEL}, "
                            f"{n} batches of 8x32, {grid}×{grid}, {picks}",
                            summary + ("" if big else "; workload under 20 s"), "≥ 1.8× on a workload ≥ 20 s",
                            speed >= 1.8 and big, cmd))
    return one, two


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="check the script: 6x6 grids, 1 repeat, a ~2 s torchrun workload")
    ap.add_argument("--only", type=int, nargs="*", default=None)
    ap.add_argument("--grid", type=int, default=None, help="points per axis (default 21; quick 6)")
    ap.add_argument("--dist-batches", default="auto", help="data batches (8x32) for part 4: 'auto' (≥ 20 s single-process) or N")
    ap.add_argument("--dist-seconds", type=float, default=25.0, help="single-process seconds 'auto' aims at")
    ap.add_argument("--rows", default=None, help="append the Markdown rows to this file")
    ap.add_argument("--dist-worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    grid = args.grid or (6 if args.quick else 21)
    if args.dist_worker:
        return dist_worker(int(args.dist_batches), grid)
    if args.quick:
        args.dist_seconds = 2.0
    runs, repeats = (1, 1) if args.quick else (3, 2)
    cmd = _report.command()
    print(f"{_report.machine()}; load average before: {_report.load_average()}", flush=True)
    rows: list[str] = []
    per_point = None
    if args.only is None or 1 in args.only:
        per_point = overhead(grid, runs, rows, cmd)
    if args.only is None or 2 in args.only:
        versus_loss_landscapes(grid, repeats, rows, cmd)
    if args.only is None or 3 in args.only:
        batched(grid, repeats, rows, cmd)
    if args.only is None or 4 in args.only:
        distributed(grid, args.dist_batches, args.dist_seconds, per_point, rows, cmd)
    _report.print_table(rows)
    if args.rows:
        _report.append_rows(args.rows, rows)


if __name__ == "__main__":
    main()
