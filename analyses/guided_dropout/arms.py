"""The study's arms: one definition each (:data:`ARM_DEFINITIONS`, printed in the report), and the
rates every arm uses on one classifier.

The arms separate the *amount* of dropout from its *placement*: ``uniform`` spreads guided's mean
rate evenly (same amount, no placement), ``permuted`` and ``reversed`` hand out guided's exact
multiset of rates in another order (same amount and spread, other placement), and ``pretrain`` is
the paper's baseline, the checkpoint's own rates (0.1 everywhere for BERT), which guided lowers
where the Fisher is high.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from landscape import dropout

__all__ = ["ARMS", "ARM_DEFINITIONS", "DEFAULT_ARMS", "Arm", "arm_for", "mean_rate", "seed_rates"]

#: arm name -> one-line definition (the report prints this table).
ARM_DEFINITIONS = {
    "none": "no dropout at any site (a reference, off by default)",
    "pretrain": "the checkpoint's own rates (BERT: 0.1 at every site), the paper's baseline",
    "uniform": "one rate at every site, equal to guided's mean rate: the same amount, no placement",
    "guided": "the paper's rates: rank-linear in the MLM Fisher site score, p_max at the lowest score, p_min at the "
              "highest",
    "reversed": "guided's rates handed out in reverse score order (high Fisher gets a high rate)",
    "permuted": "guided's rates in a random order, a new permutation per seed (the same multiset)",
    "gaussian": "multiplicative Gaussian noise, variance p/(1−p), at the pretrain rates; off in eval mode (the paper's "
                "Gaussian baseline)",
    "fisher_l2": "the pretrain rates plus the Fisher-weighted L2 pull λ/2·Σ (F_i/F̄)(θ_i − θ0_i)²",
    "unit": "guided, with per-unit rates inside each hidden-state site (0 to 2·p_site by the unit's Fisher rank; mean "
            "p_site)",
}
ARMS = tuple(ARM_DEFINITIONS)
DEFAULT_ARMS = tuple(a for a in ARMS if a != "none")


@dataclass(frozen=True)
class Arm:
    """How one arm regularizes: site rates, noise and granularity for :func:`landscape.dropout.apply`,
    and an optional Fisher-weighted L2 pull toward the pretrained weights."""

    name: str
    rates: Any  # DropoutRates or {site: p}
    noise: str = "bernoulli"
    granularity: str = "site"
    l2: float = 0.0


def mean_rate(rates: Mapping[str, float]) -> float:
    """The mean rate over sites, (1/S) Σ_s p_s."""
    return sum(rates.values()) / max(1, len(rates))


def seed_rates(clf: Any, guided: Any, pretrain_rate: float, seeds: Sequence[int]) -> dict[str, Any]:
    """The rates of every fixed-rate arm on classifier ``clf`` and their record.

    ``pretrain`` reads the classifier's own rates (the checkpoint's); where they are all 0 (a model
    pretrained without dropout) it is ``pretrain_rate`` everywhere, and the record says so."""
    sites = dropout.find_sites(clf)
    own = dropout.current_rates(clf, sites)
    pretrain = own if any(own.values()) else dropout.uniform_rates(sites, pretrain_rate)
    mean = mean_rate(guided.rates)
    return {
        "none": dropout.uniform_rates(sites, 0.0), "pretrain": pretrain, "uniform": dropout.uniform_rates(sites, mean),
        "guided": guided.rates, "reversed": dropout.reversed_rates(guided.rates, guided.scores),
        "permuted": {str(s): dropout.permuted_rates(guided.rates, seed=10_000 + s) for s in seeds},
        "pretrain_source": "checkpoint" if pretrain is own else "pretrain_rate", "checkpoint_rates": own,
        "guided_mean": mean, "scores": guided.scores, "sites": guided.meta["sites"], "head_dropouts": sites.head,
        "unit_rates_range": {k: [float(v.min()), float(v.max())] for k, v in guided.unit_rates.items()},
    }


def arm_for(name: str, seed: int, rates: Mapping[str, Any], guided: Any, l2: float) -> Arm:
    """Arm ``name`` for ``seed`` from :func:`seed_rates`' record (``guided``: DropoutRates with unit rates)."""
    if name in ("none", "pretrain", "uniform", "reversed"):
        return Arm(name, rates[name])
    if name == "guided":
        return Arm(name, guided.rates)
    if name == "permuted":
        return Arm(name, dropout.permuted_rates(guided.rates, seed=10_000 + seed))
    if name == "gaussian":
        return Arm(name, rates["pretrain"], noise="gaussian")
    if name == "fisher_l2":
        return Arm(name, rates["pretrain"], l2=l2)
    if name == "unit":
        return Arm(name, guided, granularity="unit")
    raise ValueError(f"unknown arm {name!r}; choose from {ARMS}.")
