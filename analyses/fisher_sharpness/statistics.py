"""Statistics of the Fisher-sharpness study: bootstrap intervals, data vs seed variance, censoring.

Every per-mask quantity q (a directional curvature dᵀHd, a loss rise) is a ratio estimator over
the evaluation sequences i and the direction seeds j:

    q = (1/S) Σⱼ Σᵢ numᵢⱼ / Σᵢ nᵢ,      num [S, N] per seed and sequence, n [N] loss terms per sequence.

Two sources of variance, kept apart:

* data: which N sequences were evaluated. Bootstrap over sequences (multinomial weights on the
  columns, the same for every mask, so comparisons are paired), and the spread of q over disjoint
  blocks of sequences;
* direction seeds: which S random directions (and random masks, redrawn per seed) were drawn.
  Bootstrap over seeds (the same seed draw for every mask of an arm), and the SD over seeds.

The primary endpoints get a *joint* bootstrap (sequences and seeds resampled together) and the
95 % percentile interval; the data-only and seed-only bootstraps say where the width comes from.
Pure numpy; no model here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

LEVEL = 0.95


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([20240607, int(seed)]))


def weights(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, n]`` multinomial resampling counts (each row sums to n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def replicates(nums: Mapping[str, np.ndarray], counts: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
               data: bool = True, seeds: bool = True) -> dict[str, np.ndarray]:
    """Bootstrap replicates ``[n_boot]`` of q for each key of ``nums`` (each ``[S, N]``).

    ``data``: resample sequences; ``seeds``: resample seeds. The same draws serve every key, so
    differences and ratios between keys are paired. With neither, every replicate equals q.
    """
    arrays = {k: np.atleast_2d(np.asarray(v, np.float64)) for k, v in nums.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"every quantity needs the same [seeds, sequences] shape, got {sorted(shapes)}.")
    s, n = shapes.pop()
    counts = np.asarray(counts, np.float64)
    if counts.shape != (n,):
        raise ValueError(f"counts has shape {counts.shape}, expected ({n},).")
    rng = _rng(seed)
    w = weights(n, n_boot, rng) if data else np.ones((n_boot, n))
    v = weights(s, n_boot, rng) if seeds else np.ones((n_boot, s))
    denom = w @ counts  # [B]
    out = {}
    for k, a in arrays.items():
        per_seed = w @ a.T  # [B, S]: Σᵢ wᵢ numᵢⱼ
        out[k] = (v * per_seed).sum(1) / s / denom
    return out


def estimate(num: np.ndarray, counts: np.ndarray) -> float:
    """Q itself: the seed mean of Σᵢ numᵢⱼ / Σᵢ nᵢ."""
    a = np.atleast_2d(np.asarray(num, np.float64))
    return float(a.sum(1).mean() / np.asarray(counts, np.float64).sum())


def percentile_interval(reps: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
    """The (1−level)/2 and (1+level)/2 quantiles of the finite replicates."""
    r = np.asarray(reps, np.float64)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def contrast(top: np.ndarray, control: np.ndarray, counts: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
             level: float = LEVEL) -> dict[str, Any]:
    """Top against a control: log(q_top / q_control) with its bootstrap intervals.

    Falls back to the difference q_top − q_control (``kind="difference"``) when either q is not
    positive in every replicate (a log-ratio of a curvature that can be ≤ 0 is meaningless).
    Returns ``estimate``, ``interval`` (joint), ``interval_data`` (sequences only),
    ``interval_seeds`` (seeds only), ``sd_data``, ``sd_seeds``, ``ratio`` (log-ratio only), ``kind``.
    """
    nums = {"top": top, "control": control}
    q = {k: estimate(v, counts) for k, v in nums.items()}
    reps = {name: replicates(nums, counts, n_boot=n_boot, seed=seed, data=d, seeds=s)
            for name, d, s in (("joint", True, True), ("data", True, False), ("seeds", False, True))}
    positive = q["top"] > 0 and q["control"] > 0 and all((r[k] > 0).all() for r in reps.values() for k in r)
    if positive:
        kind, est = "log_ratio", math.log(q["top"] / q["control"])
        f = {name: np.log(r["top"] / r["control"]) for name, r in reps.items()}
    else:
        kind, est = "difference", q["top"] - q["control"]
        f = {name: r["top"] - r["control"] for name, r in reps.items()}
    out: dict[str, Any] = {"kind": kind, "estimate": est, "level": level, "n_boot": n_boot, "top": q["top"],
                           "control": q["control"],
           "interval": percentile_interval(f["joint"], level), "interval_data": percentile_interval(f["data"], level),
           "interval_seeds": percentile_interval(f["seeds"], level),
           "sd_data": float(np.std(f["data"], ddof=1)), "sd_seeds": float(np.std(f["seeds"], ddof=1))}
    if kind == "log_ratio":
        out["ratio"] = math.exp(est)
        out["ratio_interval"] = tuple(math.exp(x) for x in out["interval"])
    return out


def variance_split(num: np.ndarray, counts: np.ndarray, *, n_blocks: int = 8, n_boot: int = 2000,
                   seed: int = 0) -> dict[str, Any]:
    """Where the uncertainty of q comes from.

    * ``seed_sd``: SD over seeds of the per-seed q on all sequences; ``seed_se`` = seed_sd / √S;
    * ``data_se``: bootstrap SD of q over sequences (seeds fixed);
    * ``block_sd``: SD of q over ``n_blocks`` disjoint blocks of consecutive sequences (each block
      ``block_size`` sequences), i.e. how much a study on one small slice would vary;
      ``block_values`` the per-block q.
    """
    a = np.atleast_2d(np.asarray(num, np.float64))
    counts = np.asarray(counts, np.float64)
    s, n = a.shape
    per_seed = a.sum(1) / counts.sum()
    data_reps = replicates({"q": a}, counts, n_boot=n_boot, seed=seed, seeds=False)["q"]
    n_blocks = max(1, min(n_blocks, n // 2))
    edges = np.linspace(0, n, n_blocks + 1).astype(int)
    blocks = [float(a[:, lo:hi].sum(1).mean() / counts[lo:hi].sum()) for lo, hi in zip(edges[:-1], edges[1:])]
    return {"estimate": estimate(a, counts), "n_seeds": s, "n_sequences": n,
            "seed_values": per_seed.tolist(), "seed_sd": float(per_seed.std(ddof=1)) if s > 1 else math.nan,
            "seed_se": float(per_seed.std(ddof=1) / math.sqrt(s)) if s > 1 else math.nan,
            "data_se": float(np.std(data_reps, ddof=1)),
            "block_size": int(edges[1] - edges[0]), "block_values": blocks,
            "block_sd": float(np.std(blocks, ddof=1)) if len(blocks) > 1 else math.nan}


def mean_interval(num: np.ndarray, counts: np.ndarray, *, n_boot: int = 2000, seed: int = 0,
                  level: float = LEVEL) -> dict[str, Any]:
    """Q with its joint (sequences × seeds) bootstrap interval."""
    reps = replicates({"q": num}, counts, n_boot=n_boot, seed=seed)["q"]
    return {"estimate": estimate(num, counts), "interval": percentile_interval(reps, level),
            "sd": float(np.std(reps, ddof=1))}


def censored_median(values: Sequence[float], censored: Sequence[bool]) -> dict[str, Any]:
    """Median of right-censored values (a censored value is only known to be ≥ its entry).

    The median is exact when its rank falls on an observed value no larger than every censored
    bound; otherwise only a lower bound is known and ``text`` reads "> bound". Nothing is dropped.
    """
    v = np.asarray(values, np.float64)
    c = np.asarray(censored, bool)
    if v.shape != c.shape or v.size == 0:
        raise ValueError("values and censored flags must be non-empty and of equal length.")
    order = np.argsort(v, kind="stable")
    v, c = v[order], c[order]
    k = (v.size - 1) / 2
    lo_i, hi_i = int(math.floor(k)), int(math.ceil(k))
    exact = not c[: hi_i + 1].any()
    med = float(0.5 * (v[lo_i] + v[hi_i]))
    return {"median": med if exact else None, "lower_bound": None if exact else med, "n": int(v.size),
            "n_censored": int(c.sum()), "text": f"{med:.3g}" if exact else f"> {med:.3g}",
            "values": v.tolist(), "censored": c.tolist()}
