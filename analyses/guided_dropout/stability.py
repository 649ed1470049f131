"""How much of guided dropout's site order is Fisher-sample noise: site ranks from two disjoint halves.

The held-out batches are split into two halves that share no sequence (batches 0, 2, 4, … and
1, 3, 5, …, so both halves span the corpus); each half gets its own empirical Fisher and site
scores. Reported: the Spearman rank correlation ρ of the two halves' site scores, the share of site
pairs whose order flips between halves (discordant pairs / all pairs, the part of the order that
is noise), and how many sites' rank-linear rates change (and by how much at most).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from landscape import dropout, fisher

__all__ = ["disjoint_halves", "split_half_stability"]


def disjoint_halves(n_batches: int) -> tuple[list[int], list[int]]:
    """Batch indices of the two halves: even and odd positions (disjoint, together all batches)."""
    if n_batches < 2:
        raise ValueError(f"the split-half check needs at least two Fisher batches, got {n_batches}; give more "
                         "--fisher-examples or a smaller --fisher-batch-size.")
    idx = list(range(n_batches))
    return idx[0::2], idx[1::2]


def _flipped_pairs(a: dict[str, float], b: dict[str, float]) -> tuple[int, int]:
    """(site pairs ordered differently by a and b, all pairs); a tie in one but not the other counts as half."""
    keys = list(a)
    flipped, total = 0.0, 0
    for i, x in enumerate(keys):
        for y in keys[i + 1:]:
            total += 1
            sa = (a[x] > a[y]) - (a[x] < a[y])
            sb = (b[x] > b[y]) - (b[x] < b[y])
            flipped += 1.0 if sa * sb < 0 else 0.5 if sa != sb else 0.0
    return int(round(flipped)), total


def split_half_stability(model: Any, objective: Any, data: Sequence[Any], method: str = "mean_of_means",
                         p_max: float = 0.1, p_min: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Site scores and rank-linear rates from each disjoint half of ``data`` (a list of batches), compared.

    Returns ``halves`` (batch indices), ``n_examples`` per half, ``spearman``, ``flipped_pairs``,
    ``pairs``, ``noise_share`` (flipped/pairs), ``rates_changed`` (sites whose rate differs),
    ``max_rate_change`` and each half's ``scores``."""
    from scipy.stats import spearmanr

    batches = list(data)
    first, second = disjoint_halves(len(batches))
    sites = dropout.find_sites(model)
    scores, counts = [], []
    for half in (first, second):
        F = fisher.diagonal(model, objective, [batches[i] for i in half], estimator="empirical", seed=seed,
                            progress=False, convergence=False)
        scores.append(dropout.site_scores(sites, F.scores, method))
        counts.append(int(F.meta.get("n_examples", 0)))
    a, b = scores
    ra, rb = dropout.rank_linear(a, p_max, p_min), dropout.rank_linear(b, p_max, p_min)
    rho = float(spearmanr([a[k] for k in a], [b[k] for k in a]).statistic) if len(a) > 2 else None
    flipped, pairs = _flipped_pairs(a, b)
    changes = [abs(ra[k] - rb[k]) for k in ra]
    return {"halves": [first, second], "n_examples": counts, "spearman": rho, "flipped_pairs": flipped,
            "pairs": pairs, "noise_share": flipped / pairs if pairs else None,
            "rates_changed": sum(1 for c in changes if c > 1e-12), "n_sites": len(changes),
            "max_rate_change": max(changes) if changes else 0.0, "scores": [a, b]}
