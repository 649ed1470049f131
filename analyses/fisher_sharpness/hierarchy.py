"""The hierarchical bootstrap of the Fisher-sharpness study, and its variance components.

Every arm-E quantity q (a directional curvature dᵀHd per masked token) is a ratio estimator over
five levels that a replication would change:

    q = Σ_{m,k,r,j,i} num[m,k,r,j,i] / Σ_{m,k,r,j,i} n[m,r,i]

with ``num [M, K, R, S, N]``: models m, disjoint Fisher samples k (each with its own masks, so
nested in m), MLM mask draws r, direction seeds j and evaluation sequences i; ``n [M, R, N]`` the
masked tokens of sequence i under draw r. Sequences belong to documents (``groups [N]``, a
docstring or module of the default corpus, a line of a ``--texts`` file): documents, not rows,
are the resampled units, since neighbouring rows of one document are correlated.

**Bootstrap** (a multi-way "pigeonhole" bootstrap for crossed random effects, Owen 2007, with
the Fisher level nested in the model level): each replicate b draws multinomial weights for
every level, uᵦ[m] over the M models, vᵦ[m, k] over the K Fisher samples *within* each model,
ρᵦ[r] over mask draws, σᵦ[j] over seeds and ωᵦ[g] over documents (a sequence takes its
document's weight), and computes

    qᵦ = Σ uᵦ[m] vᵦ[m,k] ρᵦ[r] σᵦ[j] ωᵦ[g(i)] num[m,k,r,j,i] / Σ (the same weights) n[m,r,i].

The same weights serve every quantity, so contrasts (top vs a control) are paired. A level with
one unit (e.g. one model) contributes nothing and is reported as fixed: the interval is then
conditional on it.

**Variance components**: for a linear statistic of an additive random-effects model
y = μ + a_m + b_{k(m)} + c_r + d_j + e_g + ε, the bootstrap's variance is close to
Σ_L s²_L / n_L (one term per level L with n_L units and realized effect variance s²_L). Resampling
level L alone (every other weight 1) estimates its term V_L, and the table reports each level's
share V_L / Σ_L' V_L' of the endpoint's variance. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

LEVELS = ("model", "fisher", "draw", "seed", "document")
LEVEL_NAMES = {"model": "pretrained models", "fisher": "Fisher samples (masks)", "draw": "MLM mask draws",
               "seed": "direction seeds", "document": "evaluation documents"}
CONFIDENCE = 0.95
Z_POWER80 = 0.8416212335729143  # z at 80 % power
Z_975 = 1.959963984540054


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([20240607, int(seed)]))


def _multinomial(n: int, size: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    """``[*size, n]`` resampling counts (each row sums to n)."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=size).astype(np.float64)


@dataclass(frozen=True)
class Design:
    """The shape of the design: ``M`` models × ``K`` Fisher samples × ``R`` draws × ``S`` seeds × ``N``
    sequences; ``groups [N]``: each sequence's document, any integer labels."""

    M: int
    K: int
    R: int
    S: int
    groups: np.ndarray

    @property
    def N(self) -> int:  # noqa: N802 - the design's letter
        return int(self.groups.size)

    @property
    def n_documents(self) -> int:
        return int(np.unique(self.groups).size)

    def units(self) -> dict[str, int]:
        """Units per level (Fisher: per model)."""
        return {"model": self.M, "fisher": self.K, "draw": self.R, "seed": self.S, "document": self.n_documents}

    @classmethod
    def of(cls, num: np.ndarray, groups: Iterable[int] | None = None) -> Design:
        """The design of a ``[M, K, R, S, N]`` array; ``groups`` None: every sequence its own document."""
        if num.ndim != 5:
            raise ValueError("expected a [models, fisher samples, draws, seeds, sequences] array, got shape "
                             f"{num.shape}.")
        g = np.arange(num.shape[4]) if groups is None else np.asarray(list(groups))
        if g.shape != (num.shape[4],):
            raise ValueError(f"groups has {g.size} entries for {num.shape[4]} sequences; give one document id per "
                             "evaluation sequence.")
        M, K, R, S = (int(x) for x in num.shape[:4])
        return cls(M, K, R, S, g)


def draw_weights(design: Design, n_boot: int, seed: int, levels: Iterable[str] = LEVELS) -> dict[str, np.ndarray]:
    """Bootstrap weights per level, ones for levels not in ``levels``: ``model [B, M]``, ``fisher [B, M, K]``,
    ``draw [B, R]``, ``seed [B, S]``, ``sequence [B, N]`` (each sequence its document's weight)."""
    levels = set(levels)
    unknown = levels - set(LEVELS)
    if unknown:
        raise ValueError(f"unknown levels {sorted(unknown)}; use some of {LEVELS}.")
    rng = _rng(seed)
    B, d = n_boot, design
    _, doc = np.unique(d.groups, return_inverse=True)
    w_doc = _multinomial(d.n_documents, (B,), rng) if "document" in levels else np.ones((B, d.n_documents))
    return {"model": _multinomial(d.M, (B,), rng) if "model" in levels else np.ones((B, d.M)),
            "fisher": _multinomial(d.K, (B, d.M), rng) if "fisher" in levels else np.ones((B, d.M, d.K)),
            "draw": _multinomial(d.R, (B,), rng) if "draw" in levels else np.ones((B, d.R)),
            "seed": _multinomial(d.S, (B,), rng) if "seed" in levels else np.ones((B, d.S)),
            "sequence": w_doc[:, doc]}


def weighted_ratio(num: np.ndarray, counts: np.ndarray, w: Mapping[str, np.ndarray]) -> np.ndarray:
    """qᵦ = Σ W·num / Σ W·n for each replicate b (see the module docstring); ``[B]``."""
    M, K, R, S, N = num.shape
    B = w["sequence"].shape[0]
    per_seq = (num.reshape(-1, N) @ w["sequence"].T).reshape(M, K, R, S, B)
    top = np.einsum("mkrsb,bs,br,bmk,bm->b", per_seq, w["seed"], w["draw"], w["fisher"], w["model"], optimize=True)
    c = (np.broadcast_to(counts, (M, R, N)).reshape(-1, N) @ w["sequence"].T).reshape(M, R, B)
    den = np.einsum("mrb,br,bmk,bm->b", c, w["draw"], w["fisher"], w["model"], optimize=True) * w["seed"].sum(1)
    return top / den


def estimate(num: np.ndarray, counts: np.ndarray) -> float:
    """Q itself, all weights one."""
    M, K, R, S, N = num.shape
    return float(num.sum() / (np.broadcast_to(counts, (M, R, N)).sum() * K * S))


def replicates(nums: Mapping[str, np.ndarray], counts: np.ndarray, groups: Iterable[int] | None = None, *,
               n_boot: int = 2000, seed: int = 0, levels: Iterable[str] = LEVELS) -> dict[str, np.ndarray]:
    """Paired replicates ``[n_boot]`` of q for every key of ``nums`` (each ``[M, K, R, S, N]``)."""
    arrays = {k: np.asarray(v, np.float64) for k, v in nums.items()}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1:
        raise ValueError(f"every quantity needs the same [M, K, R, S, N] shape, got {sorted(shapes)}.")
    design = Design.of(next(iter(arrays.values())), groups)
    w = draw_weights(design, n_boot, seed, levels)
    return {k: weighted_ratio(a, np.asarray(counts, np.float64), w) for k, a in arrays.items()}


def percentile_interval(reps: np.ndarray, level: float = CONFIDENCE) -> tuple[float, float]:
    """The (1−level)/2 and (1+level)/2 quantiles of the replicates (NaN when any is not finite)."""
    r = np.asarray(reps, np.float64)
    if r.size == 0 or not np.isfinite(r).all():
        return math.nan, math.nan
    lo, hi = np.quantile(r, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def bootstrap_p(reps: np.ndarray, null: float = 0.0) -> float:
    """Two-sided bootstrap p-value of "the endpoint equals ``null``": 2·min(P(rep ≤ null), P(rep ≥ null))."""
    r = np.asarray(reps, np.float64)
    return float(min(1.0, 2 * min(np.mean(r <= null), np.mean(r >= null))))


Scale = Literal["log_ratio", "difference"]


def _on_scale(top: np.ndarray | float, control: np.ndarray | float, scale: Scale) -> Any:
    if scale == "log_ratio":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(np.asarray(top, np.float64) / np.asarray(control, np.float64))
    return np.asarray(top, np.float64) - np.asarray(control, np.float64)


def endpoint(top: np.ndarray, control: np.ndarray, counts: np.ndarray, groups: Iterable[int] | None = None, *,
             scale: Scale, n_boot: int = 2000, seed: int = 0, level: float = CONFIDENCE) -> dict[str, Any]:
    """Top against a control on a scale fixed by the design, with the hierarchical interval.

    ``scale``: ``"log_ratio"`` only for quantities positive by construction (a non-positive
    replicate then has no log and the interval is NaN, "unclear"; the scale never changes),
    ``"difference"`` otherwise. Returns ``estimate``, ``interval``, ``sd``, ``p`` (bootstrap,
    two-sided), ``mde80`` (the minimum detectable effect at 80 % power, (z₀.₉₇₅ + z₀.₈)·sd),
    ``components`` (:func:`variance_components`), the two sides ``top``/``control`` and,
    descriptive, ``ratio`` = q_top/q_control with ``ratio_interval`` (None when the control's
    replicates are not all positive: a ratio over a denominator that crosses zero is unbounded).
    """
    groups = None if groups is None else np.asarray(list(groups))
    nums = {"top": top, "control": control}
    reps = replicates(nums, counts, groups, n_boot=n_boot, seed=seed)
    q = {k: estimate(np.asarray(v, np.float64), np.asarray(counts, np.float64)) for k, v in nums.items()}
    f = _on_scale(reps["top"], reps["control"], scale)
    est = float(_on_scale(q["top"], q["control"], scale))
    sd = float(np.std(f, ddof=1)) if np.isfinite(f).all() else math.nan
    positive = bool((reps["control"] > 0).all()) and q["control"] > 0
    ratio_reps = reps["top"] / reps["control"] if positive else None
    return {"scale": scale, "estimate": est, "interval": percentile_interval(f, level), "level": level,
            "n_boot": n_boot, "sd": sd, "p": bootstrap_p(f, 0.0) if np.isfinite(f).all() else 1.0,
            "mde80": (Z_975 + Z_POWER80) * sd, "top": q["top"], "control": q["control"],
            "n_nonpositive_control": int((reps["control"] <= 0).sum()),
            "ratio": q["top"] / q["control"] if q["control"] != 0 else math.nan,
            "ratio_interval": None if ratio_reps is None else percentile_interval(ratio_reps, level),
            "components": variance_components(nums, counts, groups, scale=scale, n_boot=n_boot, seed=seed)}


def variance_components(nums: Mapping[str, np.ndarray], counts: np.ndarray, groups: Iterable[int] | None = None, *,
                        scale: Scale | None = None, n_boot: int = 2000, seed: int = 0) -> dict[str, Any]:
    """Each level's variance term V_L (resampling that level alone) and share V_L / Σ V (module docstring).

    ``nums`` holds one quantity (its q) or ``top`` and ``control`` (their contrast on ``scale``).
    Returns ``{"levels": {L: {"units", "variance", "share", "fixed"}}, "sum": Σ V}``.
    """
    arrays = {k: np.asarray(v, np.float64) for k, v in nums.items()}
    design = Design.of(next(iter(arrays.values())), groups)
    units = design.units()
    rows: dict[str, dict[str, Any]] = {}
    for i, lv in enumerate(LEVELS):
        if units[lv] < 2:  # one unit: nothing to resample, the interval is conditional on it
            rows[lv] = {"units": units[lv], "variance": 0.0, "fixed": True}
            continue
        reps = replicates(arrays, counts, design.groups, n_boot=n_boot, seed=seed + 1 + i, levels=[lv])
        f = _on_scale(reps["top"], reps["control"], scale or "difference") if len(reps) == 2 else next(
            iter(reps.values()))
        var = float(np.var(f, ddof=1)) if np.isfinite(f).all() else math.nan
        rows[lv] = {"units": units[lv], "variance": var, "fixed": units[lv] < 2}
    total = sum(r["variance"] for r in rows.values() if math.isfinite(r["variance"]))
    for r in rows.values():
        r["share"] = r["variance"] / total if total > 0 and math.isfinite(r["variance"]) else math.nan
    return {"levels": rows, "sum": total}


def holm(ps: Mapping[str, float], alpha: float = 1 - CONFIDENCE) -> dict[str, dict[str, Any]]:
    """Holm's step-down correction of a family: per name the adjusted p and whether it is rejected at ``alpha``."""
    order = sorted(ps, key=lambda k: ps[k])
    m, running, out = len(order), 0.0, {}
    for i, k in enumerate(order):
        running = max(running, min(1.0, (m - i) * ps[k]))
        out[k] = {"p": ps[k], "p_holm": running, "rejected": running <= alpha}
    return out
