"""How much of guided dropout's site order is Fisher-sample noise: site ranks from two disjoint halves.

The held-out batches are split into two halves that share no sequence (batches 0, 2, 4, … and
1, 3, 5, …, so both halves span the corpus; a single batch is split by rows); each half gets its
own empirical Fisher and site scores. Reported: the Spearman rank correlation ρ of the two halves'
site scores, the share of site pairs whose order flips between halves (discordant pairs / all
pairs: the part of the order that is noise), and how many sites' rank-linear rates change (and by
how much at most).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from landscape import dropout, fisher

__all__ = ["disjoint_halves", "split_half_stability"]


def disjoint_halves(batches: Sequence[Any]) -> tuple[list[Any], list[Any], list[list[int]]]:
    """The two halves: batches at even and at odd positions (with a single batch of tensors, its even
    and odd rows). Returns both halves and the indices (of batches, or of rows) each holds."""
    batches = list(batches)
    if len(batches) >= 2:
        idx = list(range(len(batches)))
        first, second = idx[0::2], idx[1::2]
        return [batches[i] for i in first], [batches[i] for i in second], [first, second]
    if len(batches) == 1 and isinstance(batches[0], Mapping):
        rows = {int(v.shape[0]) for v in batches[0].values() if hasattr(v, "shape") and v.dim() > 0}
        if len(rows) == 1 and next(iter(rows)) >= 2:
            n = next(iter(rows))
            half = [{k: v[i::2] if hasattr(v, "shape") and v.dim() > 0 else v for k, v in batches[0].items()}
                    for i in (0, 1)]
            return [half[0]], [half[1]], [list(range(0, n, 2)), list(range(1, n, 2))]
    raise ValueError("the split-half check needs at least two Fisher examples in two batches (or one batch of "
                     "tensors); give more --fisher-examples.")


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

    Returns ``halves`` (the batch or row indices of each), ``split``, ``n_examples`` per half,
    ``spearman``, ``flipped_pairs``, ``pairs``, ``noise_share`` (flipped/pairs), ``rates_changed``
    (sites whose rate differs), ``max_rate_change`` and each half's ``scores``."""
    from scipy.stats import spearmanr

    first, second, index = disjoint_halves(data)
    sites = dropout.find_sites(model)
    scores, counts = [], []
    for half in (first, second):
        F = fisher.diagonal(model, objective, half, estimator="empirical", seed=seed, progress=False,
                            convergence=False)
        scores.append(dropout.site_scores(sites, F.scores, method))
        counts.append(int(F.meta.get("n_examples", 0)))
    a, b = scores
    ra, rb = dropout.rank_linear(a, p_max, p_min), dropout.rank_linear(b, p_max, p_min)
    rho = float(spearmanr([a[k] for k in a], [b[k] for k in a]).statistic) if len(a) > 2 else None
    flipped, pairs = _flipped_pairs(a, b)
    changes = [abs(ra[k] - rb[k]) for k in ra]
    return {"halves": index, "split": "batches" if len(index[0]) + len(index[1]) == len(list(data)) else "rows",
            "n_examples": counts, "spearman": rho, "flipped_pairs": flipped,
            "pairs": pairs, "noise_share": flipped / pairs if pairs else None,
            "rates_changed": sum(1 for c in changes if c > 1e-12), "n_sites": len(changes),
            "max_rate_change": max(changes) if changes else 0.0, "scores": [a, b]}
