"""How a Fisher estimate settles as examples accumulate.

At checkpoints n (examples read), the per-tensor mean scores s(n) are compared with the final
s(N) in two ways:

* ``rel_change[k]`` = ‖s(n_k) − s(N)‖₂ / ‖s(N)‖₂ (0 at the end);
* ``spearman[k]``   = Spearman rank correlation of s(n_k) with s(N) (``scipy.stats.spearmanr``;
  ``None`` where undefined, e.g. while every score is still 0).

Both come from per-example per-tensor sums, so any checkpoint is exact, not interpolated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import Tensor


@dataclass
class Convergence:
    """Convergence curves: ``n`` examples read, ``n_counted`` examples with a labelled term."""

    n: list[int] = field(default_factory=list)
    n_counted: list[int] = field(default_factory=list)
    rel_change: list[float | None] = field(default_factory=list)
    spearman: list[float | None] = field(default_factory=list)

    def examples_to_reach(self, threshold: float = 0.95) -> int | None:
        """The smallest checkpoint n from which the Spearman correlation stays ≥ ``threshold``
        (``None`` if it never does before the last checkpoint, which is 1 by construction)."""
        best: int | None = None
        for n, rho in zip(reversed(self.n[:-1]), reversed(self.spearman[:-1])):
            if rho is None or rho < threshold:
                break
            best = n
        return best

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Convergence:
        return cls(**{k: list(d[k]) for k in ("n", "n_counted", "rel_change", "spearman")})


def default_checkpoints(n_total: int) -> list[int]:
    """1, 2, 4, 8, ... below ``n_total``, then ``n_total``."""
    out, n = [], 1
    while n < n_total:
        out.append(n)
        n *= 2
    out.append(n_total)
    return out


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _denoised(means: Tensor, rel: float = 1e-12) -> Any:
    """Per-tensor means with values under ``rel`` × max set to 0, as a numpy array.

    Some tensors have a Fisher score that is zero in exact arithmetic (an attention key bias: the
    softmax is invariant to it) and ~1e-40 in floating point; their ranks would be summation-order
    noise, so they are made exact ties before ranking.
    """
    floor = rel * float(means.abs().max())
    return torch.where(means.abs() < floor, torch.zeros_like(means), means).numpy()


def convergence_from_rows(names: Sequence[str], numels: Sequence[int], ends: Sequence[int],
                          weights: Sequence[int], rows: Tensor, checkpoints: Sequence[int]) -> Convergence:
    """Curves from unit rows.

    Args:
        names, numels: the tensors and their element counts (length T).
        ends: examples read after each unit (length U, nondecreasing).
        weights: examples counted in N per unit.
        rows: ``[U, T]`` per-unit sums of the score numerators per tensor.
        checkpoints: example counts n; a checkpoint includes every unit with end ≤ n.
    """
    from scipy.stats import spearmanr

    if not ends:
        return Convergence()
    numel = torch.tensor(list(numels), dtype=torch.float64)
    cum = torch.cumsum(rows.double(), dim=0)
    cum_w = torch.cumsum(torch.tensor(list(weights), dtype=torch.float64), dim=0)
    ends_t = torch.tensor(list(ends))
    total = ends[-1]
    pts = sorted({min(int(c), total) for c in checkpoints if int(c) >= 1} | {total})
    final = cum[-1] / numel / max(float(cum_w[-1]), 1.0)
    out = Convergence()
    for n in pts:
        k = int(torch.searchsorted(ends_t, torch.tensor(n), right=True)) - 1
        if k < 0:
            continue
        w = float(cum_w[k])
        s = cum[k] / numel / w if w > 0 else torch.zeros_like(final)
        norm = torch.linalg.vector_norm(final)
        rel = float(torch.linalg.vector_norm(s - final) / norm) if float(final.abs().sum()) > 0 else float("nan")
        if len(names) > 1 and float(s.std()) > 0 and float(final.std()) > 0:
            rho = float(spearmanr(_denoised(s), _denoised(final)).statistic)
        else:
            rho = float("nan")
        out.n.append(int(n))
        out.n_counted.append(int(w))
        out.rel_change.append(_finite(rel))
        out.spearman.append(_finite(rho))
    return out
