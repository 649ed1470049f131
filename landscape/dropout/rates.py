"""Site scores from a Fisher diagonal, and the maps from scores to dropout rates.

Scores (``site_scores``), for a site guarding tensors T₁…T_k with Fisher diagonals F_j:

* ``"mean_of_means"`` (the paper's): s = (1/k) Σ_j mean(F_j);
* ``"element_mean"``: s = Σ_j sum(F_j) / Σ_j numel(F_j), every guarded element weighted equally
  (a big weight matrix outweighs its LayerNorm, unlike the paper's mean);
* ``"max_mean"``: s = max_j mean(F_j).

Maps (``rank_linear``, ``log_linear``) turn n scores into rates in [p_min, p_max]:

* rank-linear (the paper's): p = p_max − (p_max − p_min)·r/(n−1), r = 0 for the lowest score, so
  the least informative site gets p_max. Tied scores share their mean rank;
* log-linear: p = p_max − (p_max − p_min)·(log s − log s_min)/(log s_max − log s_min), which keeps
  how far apart the scores are, not only their order.

Controls with the same multiset of rates: :func:`reversed_rates` (high Fisher gets high rate) and
:func:`permuted_rates`.

Unit granularity (an extension beyond the paper): each hidden unit u of a site's output gets a score
from the Fisher of the weights that feed it (row u of a Linear weight, column u of a GPT-2 Conv1D or
an embedding table, element u of a bias or LayerNorm), and, with rank r_u among the site's n units,
p_u = p_site · 2·(1 − r_u/(n−1)): rates from 0 to 2·p_site whose mean is the site's rate.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from landscape.dropout.sites import DropoutSite, SiteMap

__all__ = [
    "MAPPINGS",
    "SCORE_METHODS",
    "check_fisher",
    "check_rates",
    "log_linear",
    "map_scores",
    "permuted_rates",
    "rank_linear",
    "reversed_rates",
    "site_scores",
    "uniform_rates",
    "unit_rates",
    "unit_scores",
]

SCORE_METHODS = ("mean_of_means", "element_mean", "max_mean")
MAPPINGS = ("rank_linear", "log_linear")


def check_fisher(sites: SiteMap | Sequence[DropoutSite], scores: Mapping[str, Tensor],
                 where: str = "the Fisher scores") -> None:
    """Refuse Fisher scores that lack a guarded tensor or have another shape (one line)."""
    sites = list(sites)
    missing = [p for s in sites for p in s.params if p not in scores]
    if missing:
        raise ValueError(f"{where} come from another model: they lack {len(missing)} tensors the dropout sites guard "
                         f"(e.g. {missing[0]!r}); compute the Fisher on this checkpoint.")
    for s in sites:
        for p in s.params:
            if scores[p].dim() == 0 or scores[p].numel() == 0:
                raise ValueError(f"{where}: tensor {p!r} is empty.")


def _check_shapes(model: nn.Module | None, sites: Sequence[DropoutSite], scores: Mapping[str, Tensor],
                  where: str) -> None:
    if model is None:
        return
    params = dict(model.named_parameters())
    for s in sites:
        for p in s.params:
            if p in params and tuple(params[p].shape) != tuple(scores[p].shape):
                raise ValueError(f"{where} come from another model: {p!r} has shape {tuple(scores[p].shape)} there, "
                                 f"{tuple(params[p].shape)} in this model.")


def site_scores(sites: SiteMap | Sequence[DropoutSite], fisher_scores: Mapping[str, Tensor],
                method: str = "mean_of_means",
                model: nn.Module | None = None) -> dict[str, float]:
    """One score per site from per-tensor Fisher diagonals (``FisherDiagonal.scores``); see the module doc.

    Raises:
        ValueError: unknown method, or scores that come from another model.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"score method must be one of {SCORE_METHODS}, got {method!r}.")
    sites = list(sites)
    check_fisher(sites, fisher_scores)
    _check_shapes(model, sites, fisher_scores, "the Fisher scores")
    out: dict[str, float] = {}
    for s in sites:
        ts = [fisher_scores[p].detach().double() for p in s.params]
        if method == "mean_of_means":
            out[s.id] = float(sum(float(t.mean()) for t in ts) / len(ts))
        elif method == "element_mean":
            out[s.id] = float(sum(float(t.sum()) for t in ts) / sum(t.numel() for t in ts))
        else:
            out[s.id] = float(max(float(t.mean()) for t in ts))
    return out


def check_rates(rates: Mapping[str, float], what: str = "rates") -> None:
    """Every rate must be a finite float in [0, 1)."""
    for k, p in rates.items():
        if not isinstance(p, (int, float)) or not math.isfinite(float(p)) or not 0.0 <= float(p) < 1.0:
            raise ValueError(f"{what}: rate {p!r} for {k!r} is outside [0, 1); dropout rates must satisfy 0 <= p < 1.")


def _check_range(p_max: float, p_min: float) -> None:
    check_rates({"p_max": p_max, "p_min": p_min}, "mapping")
    if p_min > p_max:
        raise ValueError(f"p_min ({p_min}) must not exceed p_max ({p_max}).")


def _clip(p: float, lo: float, hi: float) -> float:
    return float(min(max(p, lo), hi))


def _mean_ranks(values: Sequence[float]) -> list[float]:
    """Ranks 0..n-1 (0 = smallest); ties get the mean of their ranks."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2.0
        i = j + 1
    return ranks


def rank_linear(scores: Mapping[str, float], p_max: float = 0.1, p_min: float = 0.0) -> dict[str, float]:
    """P = p_max − (p_max − p_min)·r/(n−1), r = 0 for the lowest score (the paper's map).

    One site gets p_max. Ties share their mean rank, hence one rate.
    """
    _check_range(p_max, p_min)
    keys = list(scores)
    if len(keys) == 1:
        return {keys[0]: float(p_max)}
    ranks = _mean_ranks([float(scores[k]) for k in keys])
    n = len(keys)
    # the same formula, written so that r = n − 1 gives p_min exactly (no −1e-17 from rounding)
    return {k: _clip(p_min + (p_max - p_min) * ((n - 1) - r) / (n - 1), p_min, p_max) for k, r in zip(keys, ranks)}


def log_linear(scores: Mapping[str, float], p_max: float = 0.1, p_min: float = 0.0,
               eps: float = 1e-30) -> dict[str, float]:
    """P = p_max − (p_max − p_min)·(log s − log s_min)/(log s_max − log s_min); all equal → p_max."""
    _check_range(p_max, p_min)
    logs = {k: math.log(max(float(v), eps)) for k, v in scores.items()}
    lo, hi = min(logs.values()), max(logs.values())
    if hi - lo <= 0:
        return {k: float(p_max) for k in scores}
    return {k: _clip(p_min + (p_max - p_min) * (hi - v) / (hi - lo), p_min, p_max) for k, v in logs.items()}


def map_scores(scores: Mapping[str, float], mapping: str = "rank_linear", p_max: float = 0.1,
               p_min: float = 0.0) -> dict[str, float]:
    """Dispatch to :func:`rank_linear` or :func:`log_linear` by name."""
    if mapping == "rank_linear":
        return rank_linear(scores, p_max, p_min)
    if mapping == "log_linear":
        return log_linear(scores, p_max, p_min)
    raise ValueError(f"mapping must be one of {MAPPINGS}, got {mapping!r}.")


def reversed_rates(rates: Mapping[str, float], scores: Mapping[str, float]) -> dict[str, float]:
    """The same multiset of rates, handed out in reverse score order: the site with the k-th lowest
    score gets the rate that the k-th highest-score site had."""
    keys = sorted(rates, key=lambda k: (float(scores[k]), k))
    return {k: float(rates[r]) for k, r in zip(keys, reversed(keys))}


def permuted_rates(rates: Mapping[str, float], seed: int = 0) -> dict[str, float]:
    """The same multiset of rates in a random order (``torch.randperm`` with ``seed``)."""
    keys = list(rates)
    perm = torch.randperm(len(keys), generator=torch.Generator().manual_seed(int(seed))).tolist()
    return {k: float(rates[keys[i]]) for k, i in zip(keys, perm)}


def uniform_rates(sites: SiteMap | Sequence[DropoutSite], rate: float) -> dict[str, float]:
    """One rate at every site."""
    out = {s.id: float(rate) for s in sites}
    check_rates(out)
    return out


# --------------------------------------------------------------------------- unit granularity


def _unit_axis(module: nn.Module, param_name: str, width: int, shape: tuple[int, ...]) -> int | None:
    """The axis of a guarded tensor that indexes the site's output units, or None if it has none."""
    if len(shape) == 1:
        return 0 if shape[0] == width else None
    if type(module).__name__ == "Conv1D" or isinstance(module, nn.Embedding):
        axis = 1  # GPT-2 Conv1D stores [in, out]; embedding tables [rows, hidden]
    elif isinstance(module, (nn.Linear, nn.modules.conv._ConvNd)):
        axis = 0
    else:
        return None
    return axis if shape[axis] == width else None


def _site_width(model: nn.Module, site: DropoutSite) -> int | None:
    """The width of the tensor a hidden-state site drops: the output size of its guarded layers."""
    if site.role in ("attention_probs",):
        return None  # per-head attention probabilities run inside the kernel: no unit masks
    params = dict(model.named_parameters())
    for name in site.params:
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        if isinstance(mod, nn.LayerNorm) or type(mod).__name__.endswith("LayerNorm"):
            return int(params[name].shape[0])
    for name in site.params:
        mod = model.get_submodule(name.rsplit(".", 1)[0])
        shape = tuple(params[name].shape)
        if type(mod).__name__ == "Conv1D" or isinstance(mod, nn.Embedding):
            return int(shape[1]) if len(shape) == 2 else None
        if isinstance(mod, (nn.Linear, nn.modules.conv._ConvNd)) and len(shape) >= 2:
            return int(shape[0])
    return None


def unit_scores(model: nn.Module, sites: SiteMap | Sequence[DropoutSite],
                fisher_scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Per-unit scores ``[width]`` for each hidden-state site: the mean Fisher of the elements that
    feed unit u, over all guarded tensors that have a unit axis. Attention-probability sites are
    skipped (their dropout runs inside the attention kernel)."""
    sites = list(sites)
    check_fisher(sites, fisher_scores)
    out: dict[str, Tensor] = {}
    for s in sites:
        width = _site_width(model, s)
        if width is None:
            continue
        total = torch.zeros(width, dtype=torch.float64)
        count = torch.zeros(width, dtype=torch.float64)
        for name in s.params:
            f = fisher_scores[name].detach().double().cpu()
            axis = _unit_axis(model.get_submodule(name.rsplit(".", 1)[0]), name, width, tuple(f.shape))
            if axis is None:
                continue
            moved = f.movedim(axis, 0).reshape(width, -1)
            total += moved.sum(1)
            count += moved.shape[1]
        if bool((count > 0).all()):
            out[s.id] = total / count
    return out


def unit_rates(scores: Mapping[str, Tensor], site_rates: Mapping[str, float], cap: float = 0.9) -> dict[str, Tensor]:
    """p_u = p_site · 2·(1 − r_u/(n−1)) with r_u the unit's rank in its site (0 = lowest score),
    clipped to ``cap``; the mean over units is the site's rate (before clipping)."""
    out: dict[str, Tensor] = {}
    for sid, sc in scores.items():
        p = float(site_rates[sid])
        n = sc.numel()
        if n == 1 or p == 0.0:
            out[sid] = torch.full((n,), p, dtype=torch.float64)
            continue
        ranks = torch.tensor(_mean_ranks(sc.tolist()), dtype=torch.float64)
        out[sid] = (p * 2.0 * (1.0 - ranks / (n - 1))).clamp(0.0, cap)
    return out
