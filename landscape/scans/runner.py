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
it, so the result equals a single-process scan. (At about 400 lines: the evaluator, the resume
checks and the torchrun merge are one protocol.)
"""

from __future__ import annotations

import glob
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape import util
from landscape.objectives import Objective
from landscape.params import ParamSpace
from landscape.perturb import Perturbation
from landscape.scans.directions import check_direction
from landscape.scans.results import Curve, Surface, _GridResult
from landscape.util import data_fingerprint, tensors_fingerprint
from landscape.util.checks import check_finite_weights

__all__ = ["scan_1d", "scan_2d", "coefficients", "Curve", "Surface", "PointEvaluator"]

METRICS = ("loss", "accuracy")
#: ``batch_points="auto"``: calibrate only on scans with at least this many points (this rank's share),
#: batch at most this many points per call, and only if batching is this much faster per point.
AUTO_MIN_POINTS, AUTO_MAX_BATCH, AUTO_GAIN = 64, 16, 0.8


# ----------------------------------------------------------------------------- evaluation core


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


class PointEvaluator:
    """Sets θ₀ + Σ cᵢdᵢ and evaluates the metrics on prepared data.

    Holds θ₀ (detached copies of the moved tensors) and a snapshot of every parameter for an exact
    restore. ``set(coeffs)`` costs one foreach copy plus one foreach add per nonzero coefficient.
    """

    def __init__(self, model: nn.Module, objective: Objective, prepared: list[dict[str, Any]],
                 dirs: Sequence[dict[str, Tensor]], space: ParamSpace, metrics: Sequence[str]) -> None:
        self.model, self.objective, self.prepared, self.metrics = model, objective, prepared, tuple(metrics)
        self.names = [n for n in space.names if any(n in d for d in dirs)]
        self.perturbation = Perturbation({n: space.params[n] for n in self.names},
                                         [{n: d[n] for n in self.names if n in d} for d in dirs])
        self.params, self.theta0 = self.perturbation.tensors, self.perturbation.theta0
        self.n_evaluations = 0

    def set(self, coeffs: Sequence[float]) -> None:
        """θ ← θ₀ + Σ cᵢdᵢ for the moved tensors (from θ₀, never stepped)."""
        self.perturbation.set(coeffs)

    def restore(self) -> None:
        self.perturbation.restore()

    @torch.no_grad()
    def evaluate(self, params: Mapping[str, Tensor] | None = None) -> dict[str, float]:
        """Metrics at the current weights (or ``params`` through ``functional_call``)."""
        self.n_evaluations += 1
        obj, dev = self.objective, util.model_device(self.model)
        s_tot = torch.zeros((), dtype=torch.float64, device=dev)
        n_tot = torch.zeros((), dtype=torch.int64, device=dev)
        correct = torch.zeros((), dtype=torch.int64, device=dev)
        for p in self.prepared:
            out = obj.forward(self.model, p, params)
            s, n = obj.loss_terms(out, p)
            s_tot += s.sum(dtype=torch.float64)
            n_tot += n.sum()
            if "accuracy" in self.metrics:
                logits, targets = obj.logits_and_targets(out, p)
                correct += ((logits.argmax(-1) == targets) & (targets != -100)).sum()
        stats = torch.stack([s_tot, n_tot.double(), correct.double()]).cpu().tolist()
        out_m = {"loss": stats[0] / stats[1] if stats[1] > 0 else float("nan")}
        if "accuracy" in self.metrics:
            out_m["accuracy"] = stats[2] / stats[1] if stats[1] > 0 else float("nan")
        return out_m

    def evaluate_batched(self, coeffs: np.ndarray) -> list[dict[str, float]]:
        """Metrics at k points at once: θ₀ + Σ cᵢdᵢ stacked ``[k, ...]`` through ``vmap`` of
        ``functional_call``. ``coeffs``: ``[k, n_dirs]``."""
        self.n_evaluations += len(coeffs)
        obj, dev = self.objective, util.model_device(self.model)
        c = torch.as_tensor(coeffs, dtype=self.theta0[0].dtype, device=dev)
        stacked = {}
        for i, n in enumerate(self.names):
            t = self.theta0[i].unsqueeze(0).expand(len(coeffs), *self.theta0[i].shape)
            for j, d in enumerate(self.perturbation.directions):
                t = t + c[:, j].view(-1, *([1] * d[i].ndim)) * d[i]
            stacked[n] = t
        want_acc = "accuracy" in self.metrics

        def one(p: dict[str, Tensor], batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor]:
            out = obj.forward(self.model, batch, p)
            s, n = obj.loss_terms(out, batch)
            if want_acc:
                logits, targets = obj.logits_and_targets(out, batch)
                acc = ((logits.argmax(-1) == targets) & (targets != -100)).sum()
            else:
                acc = torch.zeros((), dtype=torch.int64, device=s.device)
            return s.sum(dtype=torch.float64), n.sum(), acc

        s_tot = torch.zeros(len(coeffs), dtype=torch.float64, device=dev)
        n_tot = torch.zeros(len(coeffs), dtype=torch.float64, device=dev)
        a_tot = torch.zeros(len(coeffs), dtype=torch.float64, device=dev)
        with torch.no_grad():
            for batch in self.prepared:
                s_b, n_b, a_b = torch.func.vmap(one, in_dims=(0, None))(stacked, batch)
                s_tot += s_b
                n_tot += n_b.double()
                a_tot += a_b.double()
        rows = torch.stack([s_tot, n_tot, a_tot], 1).cpu().tolist()
        res = []
        for s, n, a in rows:
            m = {"loss": s / n if n > 0 else float("nan")}
            if want_acc:
                m["accuracy"] = a / n if n > 0 else float("nan")
            res.append(m)
        return res


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
    labels = {"model_weights": "model (weights)", "model_buffers": "model (buffers, e.g. BatchNorm statistics)", "model_fingerprint": "model (architecture)", "directions": "directions",
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


def _run(model: nn.Module, objective: Objective, data: Iterable[Any], dirs_in: Sequence[Any], result: _GridResult,
         path: str | Path | None, resume: bool, progress: bool, batch_points: int | str, save_every: float,
         distributed: bool | None) -> _GridResult:
    if batch_points != "auto" and (isinstance(batch_points, str) or int(batch_points) < 1):
        raise ValueError(f"batch_points must be 'auto' or at least 1, got {batch_points!r}.")
    space = ParamSpace(model)
    check_finite_weights(model)  # else NaN weights are blamed on "direction 1"
    dirs = [check_direction(d, space, f"direction {i + 1}") for i, d in enumerate(dirs_in)]
    prepared = objective.prepare_data(model, data)
    if sum(int(objective.term_counts(p).sum()) for p in prepared) == 0:
        raise ValueError("data holds no loss term (every label is -100 / no example).")
    ctx = util.dist_context() if distributed in (None, True) else util.DistContext()
    path = Path(path) if path is not None else None
    t_start = time.time()
    result.meta.update(
        identity={
            "model_weights": util.weights_fingerprint(model), "model_buffers": tensors_fingerprint(dict(model.named_buffers())),
            "model_fingerprint": util.model_fingerprint(model),
            "directions": [tensors_fingerprint(d) for d in dirs], "data": data_fingerprint(prepared),
            "objective": objective.describe(), "metrics": list(result.metrics),
        },
        directions=[dict(getattr(d, "meta", {}) or {}) for d in dirs_in],
        n_examples=sum(int(objective.count(p)[0]) for p in prepared),
        n_terms=sum(int(objective.count(p)[1]) for p in prepared),
        model_class=type(model).__name__, versions=util.versions(), batch_points_requested=batch_points,
        world_size=ctx.world_size, setting="theta0 + sum_i c_i d_i from a saved theta0 (foreach copy + add)",
    )
    # resume: merge the file and any per-rank partial files
    if path is not None and resume:
        for f in ([path] if path.is_file() else []) + _part_files(path):
            old = _GridResult.load(f)
            _check_resumable(old, result, f)
            result._merge_from(old)
            result.meta.setdefault("resumed_from", []).append({"file": f.name, "points": old.n_done})
    if ctx.active:
        import torch.distributed as dist

        dist.barrier()  # every rank has read the files before anyone rewrites them
    pending = np.flatnonzero(~result.done.ravel())
    mine = pending[ctx.rank :: ctx.world_size]
    points = result.points()
    evaluator = PointEvaluator(model, objective, prepared, dirs, space, result.metrics)
    save_to = None if path is None else (_part_path(path, ctx.rank) if ctx.active else path)
    computed = 0
    last_save = time.time()
    t_eval = 0.0
    snapshot = Perturbation(space.params)
    from tqdm.auto import tqdm

    bar = tqdm(total=len(mine), desc=f"{result.kind} scan" + (f" rank {ctx.rank}" if ctx.active else ""),
               disable=not progress or not ctx.is_main, leave=False)
    try:
        with util.deterministic_eval(model):
            per_call, start = (batch_points if isinstance(batch_points, int) else 1), 0
            if batch_points == "auto":
                per_call, start, calib = _calibrate(evaluator, points, mine, result, ctx)
                computed += start
                result.meta["batch_calibration"] = calib
                bar.update(start)
            result.meta["batch_points"] = int(per_call)
            for start in range(start, len(mine), per_call):
                chunk = mine[start : start + per_call]
                t0 = time.perf_counter()
                if per_call == 1:
                    evaluator.set(points[chunk[0]])
                    outs = [evaluator.evaluate()]
                else:
                    evaluator.restore()
                    outs = evaluator.evaluate_batched(points[chunk])
                t_eval += time.perf_counter() - t0
                for k, o in zip(chunk, outs):
                    result._set_flat(int(k), o)
                computed += len(chunk)
                bar.update(len(chunk))
                if save_to is not None and time.time() - last_save >= save_every:
                    result.save(save_to)
                    last_save = time.time()
    finally:
        bar.close()
        snapshot.restore()
        result.meta["timing"] = {"points_computed": computed, "seconds_eval": t_eval, "seconds_total": time.time() - t_start}
        if save_to is not None and computed:
            result.save(save_to)  # keeps finished points, also when the scan raised
    result.meta["n_evaluated_here"] = computed
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


def _calibrate(evaluator: PointEvaluator, points: np.ndarray, mine: np.ndarray, result: _GridResult,
               ctx: util.DistContext) -> tuple[int, int, dict[str, Any]]:
    """Pick the points per call for ``batch_points="auto"`` by timing real grid points (kept as results).

    One point at a time on 3 points (the first a warm-up) against ``vmap`` over k points on two
    calls (the first a warm-up); k = ``AUTO_MAX_BATCH`` capped so that k stacked copies of the moved
    weights (x3, for the sums) take at most a quarter of the free memory. Batching is chosen when it
    costs at most ``AUTO_GAIN`` of the one-at-a-time time per point. Scans with fewer than
    ``AUTO_MIN_POINTS`` points on a rank skip the calibration (one at a time). Under ``torchrun`` the
    ranks agree (slowest rank's times). Returns (k, points already computed, metadata record).
    """
    from landscape.curvature.products import available_memory

    moved = sum(t.numel() * t.element_size() for t in evaluator.theta0)
    k = int(min(AUTO_MAX_BATCH, available_memory(util.model_device(evaluator.model)) // max(4 * 3 * moved, 1)))
    n_min = torch.tensor([float(len(mine))])
    if ctx.active:
        import torch.distributed as dist

        dist.all_reduce(n_min, op=dist.ReduceOp.MIN)
    if float(n_min) < AUTO_MIN_POINTS or k < 2:
        return 1, 0, {"calibrated": False, "reason": "memory" if k < 2 else f"fewer than {AUTO_MIN_POINTS} points"}
    done, single, batched = 0, [], []
    for _ in range(3):
        t0 = time.perf_counter()
        evaluator.set(points[mine[done]])
        result._set_flat(int(mine[done]), evaluator.evaluate())
        single.append(time.perf_counter() - t0)
        done += 1
    evaluator.restore()
    for _ in range(2):
        chunk = mine[done : done + k]
        t0 = time.perf_counter()
        for idx, o in zip(chunk, evaluator.evaluate_batched(points[chunk])):
            result._set_flat(int(idx), o)
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
        other.shape, other.done, other.nonfinite, other.values = result.shape, part["done"], part["nonfinite"], part["values"]
        result._merge_from(other)
        per_rank.append(int(part["computed"]))
    result.meta["points_per_rank"] = per_rank
    return result


def scan_1d(model: nn.Module, objective: Objective, data: Iterable[Any], d: Mapping[str, Tensor], alphas: Sequence[float] | np.ndarray,
            *, path: str | Path | None = None, resume: bool = False, metrics: Sequence[str] = ("loss",),
            progress: bool = True, batch_points: int | str = "auto", save_every: float = 5.0, distributed: bool | None = None) -> Curve:
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
    """
    res = Curve(_check_grid(alphas, "alphas"), metrics=_check_metrics(metrics))
    _run(model, objective, data, [d], res, path, resume, progress, batch_points, save_every, distributed)
    return res


def scan_2d(model: nn.Module, objective: Objective, data: Iterable[Any], d1: Mapping[str, Tensor], d2: Mapping[str, Tensor],
            xs: Sequence[float] | np.ndarray, ys: Sequence[float] | np.ndarray, *, path: str | Path | None = None, resume: bool = False,
            metrics: Sequence[str] = ("loss",), progress: bool = True, batch_points: int | str = "auto", save_every: float = 5.0,
            distributed: bool | None = None) -> Surface:
    """L(θ₀ + x·d1 + y·d2) over the grid → :class:`Surface` with ``values[m][iy, ix]`` at
    ``(xs[ix], ys[iy])`` (``np.meshgrid(xs, ys)`` layout). Arguments as :func:`scan_1d`."""
    res = Surface(_check_grid(xs, "xs"), _check_grid(ys, "ys"), metrics=_check_metrics(metrics))
    _run(model, objective, data, [d1, d2], res, path, resume, progress, batch_points, save_every, distributed)
    return res
