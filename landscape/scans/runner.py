"""Perturbation scans: the loss along a line θ₀ + αd and over a plane θ₀ + αd + βe.

Every point is set from a saved copy of θ₀ (``θ ← θ₀; θ += αd; θ += βe`` with foreach kernels,
``landscape.perturb.Perturbation``), never by stepping from the previous point,
so no float drift accumulates and the model comes back bit for bit, also when the scan raises.
Points are evaluated in eval mode with math attention on data prepared once (fixed MLM masks)
and kept on the device. The result is a :class:`Curve` or :class:`Surface` (see
``landscape.scans.results``), saved atomically every ``save_every`` seconds when ``path`` is given;
``resume=True`` computes only the points missing from that file, after checking that it was made
for the same model, directions, grid, data and objective.

Under ``torchrun`` the missing points are dealt round-robin to the ranks with no per-point
collective; each rank saves its finished points to ``<path>.rank<r>.npz``, and at the end rank 0
gathers them, writes ``path`` and removes the partial files. A rerun with ``resume=True`` picks up
partial files left by a rank that died. Each point's value does not depend on which rank computed
it, so the result equals a single-process scan.

The driver runs in named stages: :func:`_start` (checks, the :class:`~landscape.evaluator.Evaluator`,
metadata), :func:`_resume` (merge earlier files), :func:`_evaluate_points` (this rank's share,
saved as it goes) and :func:`_finish` (gather, write, clean up). :class:`ScanSettings` carries the
caller's options between them.
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util
from landscape.evaluator import Evaluator, Metric
from landscape.objectives import Objective
from landscape.scans.compiled import CompiledForward
from landscape.scans.direction import check_direction
from landscape.scans.results import Curve, Surface, _GridResult
from landscape.util import data_fingerprint, tensors_fingerprint
from landscape.util.meta import result_meta

__all__ = ["scan_1d", "scan_2d", "coefficients", "ScanSettings", "METRICS"]

METRICS: tuple[Metric, ...] = ("loss", "accuracy")
#: ``batch_points="auto"``: calibrate only on scans with at least this many points (this rank's share),
#: batch at most this many points per call, and only if batching is this much faster per point.
AUTO_MIN_POINTS, AUTO_MAX_BATCH, AUTO_GAIN = 64, 16, 0.8


# ----------------------------------------------------------------------------- coordinates


def coefficients(lo: float, hi: float, n: int) -> np.ndarray:
    """``n`` evenly spaced scan coefficients on [lo, hi], plus 0 when the interval holds the
    origin and the spacing misses it (so an even ``n`` on [-R, R] gives n + 1 points).

    Every sharpness number measured "from θ₀" needs the loss at α = 0 itself, not at a neighbour.
    """
    if n < 2:
        raise ValueError(f"a scan needs at least 2 points per axis, got {n}.")
    a = np.linspace(lo, hi, n)
    if lo < 0.0 < hi and not (a == 0.0).any():
        a = np.sort(np.append(a, 0.0))
    return a


# ----------------------------------------------------------------------------- checks


def _check_grid(values: Any, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of coefficients, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError(f"{what} is empty: give at least one coefficient, e.g. np.linspace(-1, 1, 21).")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what} has NaN or infinite coefficients: {arr[~np.isfinite(arr)][:3].tolist()}.")
    return arr


def _check_metrics(metrics: Sequence[str] | str) -> tuple[str, ...]:
    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or "loss" not in metrics:
        raise ValueError(f"metrics must include 'loss' and be among {list(METRICS)}, got {list(metrics)}.")
    return metrics


_IDENTITY_KEYS = ("model_weights", "model_buffers", "model_fingerprint", "directions", "data", "objective", "metrics")


def _check_resumable(old: _GridResult, new: _GridResult, path: Path) -> None:
    """Refuse to resume from a file made for another model, directions, grid, data or objective."""
    if type(old) is not type(new):
        raise ValueError(f"cannot resume from {path}: it holds a {old.kind}, this scan makes a {new.kind}.")
    for name in ("alphas", "xs", "ys"):
        a, b = getattr(old, name, None), getattr(new, name, None)
        if a is not None and not (b is not None and a.shape == b.shape and np.array_equal(a, b)):
            raise ValueError(f"cannot resume from {path}: it was made for a different grid ({name} differ: "
                             f"{a.size} points in the file, {0 if b is None else b.size} requested). "
                             "Use another path or resume=False.")
    labels = {"model_weights": "model (weights)", "model_buffers": "model (buffers, e.g. BatchNorm statistics)",
              "model_fingerprint": "model (architecture)", "directions": "directions",
              "data": "data", "objective": "objective", "metrics": "metrics"}
    for key in _IDENTITY_KEYS:
        a, b = old.meta.get("identity", {}).get(key), new.meta["identity"].get(key)
        if a != b:
            raise ValueError(f"cannot resume from {path}: it was made for a different {labels[key]} "
                             f"(file: {a!r}, now: {b!r}). Use another path or resume=False to start over.")


def _part_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.name}.rank{rank}.npz")


def _part_files(path: Path) -> list[Path]:
    return sorted(Path(p) for p in glob.glob(glob.escape(str(path)) + ".rank*.npz"))


# ----------------------------------------------------------------------------- driver


@dataclass(frozen=True)
class ScanSettings:
    """The caller's options of one scan (see :func:`scan_1d` for each)."""

    path: Path | None = None
    resume: bool = False
    progress: bool = True
    batch_points: int | Literal["auto"] = "auto"
    save_every: float = 5.0
    distributed: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        bp = self.batch_points
        if bp != "auto" and (isinstance(bp, (str, bool)) or not isinstance(bp, (int, np.integer)) or int(bp) < 1):
            raise ValueError(f"batch_points must be 'auto' or at least 1, got {bp!r}.")
        if self.compile and bp not in ("auto", 1):
            raise ValueError(f"compile=True evaluates one point per call through the compiled forward; batch_points "
                             f"must be 1 or 'auto', got {bp!r} (or drop compile=True to batch points with vmap).")
        if self.path is not None and not isinstance(self.path, Path):
            object.__setattr__(self, "path", Path(self.path))

    def describe(self) -> dict[str, Any]:
        """The settings that shape the run (not the numbers), for ``meta["settings"]``."""
        return {"batch_points": self.batch_points, "save_every": self.save_every, "resume": self.resume,
                "distributed": self.distributed, "compile": self.compile}


@dataclass
class _Scan:
    """One scan in progress: the evaluator, the checked directions, this rank, where to save."""

    ev: Evaluator
    dirs: list[dict[str, Tensor]]
    ctx: util.DistContext
    save_to: Path | None
    forward: CompiledForward
    t_start: float = field(default_factory=time.time)
    computed: int = 0
    t_eval: float = 0.0


def _start(model: nn.Module, objective: Objective, data: Iterable[Any], dirs_in: Sequence[Any], result: _GridResult,
           settings: ScanSettings) -> _Scan:
    """Check the directions, prepare the data once (the evaluator) and record the scan's metadata."""
    ev = Evaluator(model, objective, data)  # checks the weights first: else NaN weights blame "direction 1"
    dirs = [check_direction(d, ev.space, f"direction {i + 1}") for i, d in enumerate(dirs_in)]
    ctx = util.dist_context() if settings.distributed in (None, True) else util.DistContext()
    path = settings.path
    save_to = None if path is None else (_part_path(path, ctx.rank) if ctx.active else path)
    identity = {
        "model_weights": util.weights_fingerprint(model),
        "model_buffers": tensors_fingerprint(dict(model.named_buffers())),
        "model_fingerprint": util.model_fingerprint(model), "directions": [tensors_fingerprint(d) for d in dirs],
        "data": data_fingerprint(ev.prepared), "objective": objective.describe(), "metrics": list(result.metrics),
    }
    model_meta = {"class": type(model).__name__, "fingerprint": identity["model_fingerprint"],
                  "weights": identity["model_weights"]}  # result_meta(model) would hash the weights again
    result.meta.update({"model": model_meta, **result_meta(
        None, settings.describe(), identity=identity, directions=[dict(getattr(d, "meta", {}) or {}) for d in dirs_in],
        n_examples=ev.n_examples, n_terms=ev.n_terms, world_size=ctx.world_size,
        setting="theta0 + sum_i c_i d_i from a saved theta0 (foreach copy + add)")})
    return _Scan(ev, dirs, ctx, save_to, CompiledForward(ev, settings.compile))


def _resume(result: _GridResult, path: Path, ctx: util.DistContext) -> None:
    """Merge the points of ``path`` and of any per-rank partial files (each checked to match)."""
    for f in ([path] if path.is_file() else []) + _part_files(path):
        old = _GridResult.load(f)
        _check_resumable(old, result, f)
        result._merge_from(old)
        result.meta.setdefault("resumed_from", []).append({"file": f.name, "points": old.n_done})
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()  # every rank has read the files before anyone rewrites them


def _evaluate_chunk(scan: _Scan, result: _GridResult, points: np.ndarray, chunk: np.ndarray, batched: bool) -> None:
    """Evaluate the grid points ``chunk`` (one at a time, or all through ``vmap``) into ``result``."""
    t0 = time.perf_counter()
    metrics = cast(tuple[Metric, ...], result.metrics)  # checked by _check_metrics
    if batched:
        outs = scan.ev.metrics_batched(scan.dirs, points[chunk], metrics)
    else:
        def one(k: int) -> dict[str, float]:
            scan.ev.set(points[k], scan.dirs)
            return scan.ev.metrics(metrics)

        outs = [scan.forward.run(lambda: one(int(k))) for k in chunk]
    scan.t_eval += time.perf_counter() - t0
    for k, o in zip(chunk, outs):
        result._set_flat(int(k), o)
    scan.computed += len(chunk)


def _evaluate_points(scan: _Scan, result: _GridResult, settings: ScanSettings) -> None:
    """This rank's share of the missing points, saved every ``save_every`` seconds (call inside
    ``scan.ev.evaluating()``)."""
    from tqdm.auto import tqdm

    ctx = scan.ctx
    mine = np.flatnonzero(~result.done.ravel())[ctx.rank :: ctx.world_size]
    points = result.points()
    bar = tqdm(total=len(mine), desc=f"{result.kind} scan" + (f" rank {ctx.rank}" if ctx.active else ""),
               disable=not settings.progress or not ctx.is_main, leave=False)
    try:
        per_call, start = (1, 0) if settings.batch_points == "auto" else (int(settings.batch_points), 0)
        if settings.compile:
            result.meta["batch_calibration"] = {"calibrated": False, "reason": "compile"}
        elif settings.batch_points == "auto":
            per_call, start, result.meta["batch_calibration"] = _calibrate(scan, points, mine, result)
            bar.update(start)
        result.meta["batch_points"] = int(per_call)
        last_save = time.time()
        for first in range(start, len(mine), per_call):
            chunk = mine[first : first + per_call]
            _evaluate_chunk(scan, result, points, chunk, batched=per_call > 1)
            bar.update(len(chunk))
            if scan.save_to is not None and time.time() - last_save >= settings.save_every:
                result.save(scan.save_to)
                last_save = time.time()
    finally:
        bar.close()


def _finish(scan: _Scan, result: _GridResult, path: Path | None) -> _GridResult:
    """Gather every rank's points, write ``path`` on rank 0 and remove the partial files."""
    ctx = scan.ctx
    result.meta["n_evaluated_here"] = scan.computed
    if ctx.active:
        result = _gather(result, ctx)
    result.meta["nonfinite_points"] = int(result.nonfinite.sum())
    if path is not None and ctx.is_main:
        result.save(path)
        for f in _part_files(path):
            f.unlink(missing_ok=True)
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()
    return result


def _run(model: nn.Module, objective: Objective, data: Iterable[Any], dirs_in: Sequence[Any], result: _GridResult,
         settings: ScanSettings) -> _GridResult:
    """The stages of a scan: start, resume, evaluate (weights and mode restored however it ends), finish."""
    scan = _start(model, objective, data, dirs_in, result, settings)
    if settings.path is not None and settings.resume:
        _resume(result, settings.path, scan.ctx)
    elif scan.ctx.active:
        import torch.distributed as dist

        dist.barrier()
    try:
        with scan.ev.evaluating(), scan.forward:
            _evaluate_points(scan, result, settings)
    finally:
        result.meta.update(scan.forward.describe())
        result.meta["timing"] = {"points_computed": scan.computed, "seconds_eval": scan.t_eval,
                                 "seconds_total": time.time() - scan.t_start}
        if scan.save_to is not None and scan.computed:
            result.save(scan.save_to)  # keeps finished points, also when the scan raised
    return _finish(scan, result, settings.path)


def _calibrate(scan: _Scan, points: np.ndarray, mine: np.ndarray,
               result: _GridResult) -> tuple[int, int, dict[str, Any]]:
    """Pick the points per call for ``batch_points="auto"`` by timing real grid points (kept as results).

    One point at a time on 3 points (the first a warm-up) against ``vmap`` over k points on two
    calls (the first a warm-up); k = ``AUTO_MAX_BATCH`` capped so that k stacked copies of the moved
    weights (x3, for the sums) take at most a quarter of the free memory. Batching is chosen when it
    costs at most ``AUTO_GAIN`` of the one-at-a-time time per point. Scans with fewer than
    ``AUTO_MIN_POINTS`` points on a rank skip the calibration (one at a time). Under ``torchrun`` the
    ranks agree (slowest rank's times). Returns (k, points already computed, metadata record).
    """
    from landscape.curvature.products import available_memory

    ctx = scan.ctx
    moved = sum(t.numel() * t.element_size() for n, t in zip(scan.ev.names, scan.ev.theta0)
                if any(n in d for d in scan.dirs))
    k = int(min(AUTO_MAX_BATCH, available_memory(util.model_device(scan.ev.model)) // max(4 * 3 * moved, 1)))
    n_min = torch.tensor([float(len(mine))])
    if ctx.active:
        import torch.distributed as dist

        dist.all_reduce(n_min, op=dist.ReduceOp.MIN)
    if float(n_min) < AUTO_MIN_POINTS or k < 2:
        return 1, 0, {"calibrated": False, "reason": "memory" if k < 2 else f"fewer than {AUTO_MIN_POINTS} points"}
    done, single, batched = 0, [], []
    for _ in range(3):
        t0 = time.perf_counter()
        _evaluate_chunk(scan, result, points, mine[done : done + 1], batched=False)
        single.append(time.perf_counter() - t0)
        done += 1
    for _ in range(2):
        chunk = mine[done : done + k]
        t0 = time.perf_counter()
        _evaluate_chunk(scan, result, points, chunk, batched=True)
        batched.append((time.perf_counter() - t0) / len(chunk))
        done += len(chunk)
    times = torch.tensor([float(np.mean(single[1:])), batched[1]], dtype=torch.float64)
    if ctx.active:
        import torch.distributed as dist

        dist.all_reduce(times, op=dist.ReduceOp.MAX)
    pick = k if float(times[1]) <= AUTO_GAIN * float(times[0]) else 1
    return pick, done, {"calibrated": True, "seconds_per_point_single": float(times[0]),
                        "seconds_per_point_batched": float(times[1]), "k_tried": k, "picked": pick}


def _gather(result: _GridResult, ctx: util.DistContext) -> _GridResult:
    """All ranks receive every rank's finished points (one collective at the end of the scan)."""
    import torch.distributed as dist

    mine = {"done": result.done, "nonfinite": result.nonfinite, "values": result.values,
            "computed": result.meta.get("timing", {}).get("points_computed", 0)}
    parts: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(parts, mine)
    per_rank = []
    for part in parts:
        other = type(result).__new__(type(result))
        other.shape, other.done = result.shape, part["done"]
        other.nonfinite, other.values = part["nonfinite"], part["values"]
        result._merge_from(other)
        per_rank.append(int(part["computed"]))
    result.meta["points_per_rank"] = per_rank
    return result


def scan_1d(model: nn.Module, objective: Objective, data: Iterable[Any], d: Mapping[str, Tensor],  # noqa: PLR0913
            alphas: Sequence[float] | np.ndarray, *, path: str | Path | None = None, resume: bool = False,
            metrics: Sequence[Metric] = ("loss",), progress: bool = True, batch_points: int | Literal["auto"] = "auto",
            save_every: float = 5.0, distributed: bool | None = None, compile: bool = False) -> Curve:
    """L(θ₀ + α·d) for each α in ``alphas`` → :class:`Curve` (``values[m] [n]``).

    Args:
        model, objective, data: the model (its weights are θ₀), the loss, a re-iterable of batches.
        d: a direction (dict over the model's parameters, e.g. ``directions.random(model)``).
        alphas: 1-D finite coefficients.
        metrics: ``("loss",)`` or ``("loss", "accuracy")`` (accuracy over the labelled terms).
        path: ``.npz`` file saved atomically every ``save_every`` s and at the end.
        resume: compute only the points missing from ``path`` (checked to match).
        batch_points: evaluate this many points per call through ``vmap`` (pays on small models), or
            ``"auto"``: time both on the scan's own first points and keep the faster (see
            :func:`_calibrate`; recorded in ``meta["batch_points"]`` and ``meta["batch_calibration"]``).
            Batched and single points agree to rounding (~1e-7 relative in float32), not bit for bit.
        distributed: ``None`` shards across ``torchrun`` ranks when present; ``False`` never.
        compile: evaluate through ``torch.compile(model)`` (one point per call; falls back to eager
            with one warning where compiling fails; ``meta["compile"]`` says which ran). See
            :mod:`landscape.scans.compiled`.
    """
    settings = ScanSettings(None if path is None else Path(path), resume, progress, batch_points, save_every,
                            distributed, compile)
    res = Curve(_check_grid(alphas, "alphas"), metrics=_check_metrics(metrics))
    _run(model, objective, data, [d], res, settings)
    return res


def scan_2d(model: nn.Module, objective: Objective, data: Iterable[Any], d1: Mapping[str, Tensor],  # noqa: PLR0913
            d2: Mapping[str, Tensor], xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, *,
            path: str | Path | None = None, resume: bool = False, metrics: Sequence[Metric] = ("loss",),
            progress: bool = True, batch_points: int | Literal["auto"] = "auto", save_every: float = 5.0,
            distributed: bool | None = None, compile: bool = False) -> Surface:
    """L(θ₀ + x·d1 + y·d2) over the grid → :class:`Surface` with ``values[m][iy, ix]`` at
    ``(xs[ix], ys[iy])`` (``np.meshgrid(xs, ys)`` layout). Arguments as :func:`scan_1d`."""
    settings = ScanSettings(None if path is None else Path(path), resume, progress, batch_points, save_every,
                            distributed, compile)
    res = Surface(_check_grid(xs, "xs"), _check_grid(ys, "ys"), metrics=_check_metrics(metrics))
    _run(model, objective, data, [d1, d2], res, settings)
    return res
