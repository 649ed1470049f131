"""Guided dropout (Sharma et al., 2024): dropout rates set from Fisher scores, for Hugging Face models.

The method: score each dropout site by the mean of the tensor means of the (MLM-pretraining)
Fisher diagonal of the sub-layer whose output it drops, rank the sites, and set
p = p_max − (p_max − p_min)·r/(n−1), r = 0 for the lowest score (p_max = 0.1, p_min = 0 in the
paper), fixed for the whole of fine-tuning; the classifier's dropout stays at its default.

Public API::

    from landscape import dropout, fisher, objectives

    F = fisher.diagonal(mlm_model, objectives.MaskedLM(seed=0), heldout_batches)
    rates = dropout.guided_rates(mlm_model, F)            # DropoutRates: site id -> p
    rates.save("rates.json"); dropout.DropoutRates.load("rates.json", model=clf_model)
    with dropout.apply(clf_model, rates):                 # restores the originals on exit
        trainer.train()
    dropout.measure_rates(clf_model, batches)             # realized rate per site, train mode

* :mod:`~landscape.dropout.sites`: :func:`find_sites`, sites by module name and role;
* :mod:`~landscape.dropout.rates`: site scores, rank-linear and log-linear maps, controls, unit rates;
* :mod:`~landscape.dropout.guided`: :func:`guided_rates`, :class:`DropoutRates` (JSON with the
  Fisher fingerprint and the model class);
* :mod:`~landscape.dropout.apply`: :func:`apply` / :func:`set_rates` (Bernoulli or Gaussian noise,
  site or unit granularity);
* :mod:`~landscape.dropout.measure`: :func:`measure_rates`, the binomial check.
"""

from __future__ import annotations

from landscape.dropout.apply import GRANULARITIES, NOISES, Applied, apply, current_rates, set_rates
from landscape.dropout.guided import DropoutRates, fisher_fingerprint, guided_rates
from landscape.dropout.measure import SiteMeasurement, eager_attention, measure_rates
from landscape.dropout.rates import (
    MAPPINGS,
    SCORE_METHODS,
    log_linear,
    map_scores,
    permuted_rates,
    rank_linear,
    reversed_rates,
    site_scores,
    uniform_rates,
    unit_rates,
    unit_scores,
)
from landscape.dropout.sites import ROLES, DropoutSite, SiteMap, find_sites, get_rate, set_rate

__all__ = [
    "GRANULARITIES",
    "MAPPINGS",
    "NOISES",
    "ROLES",
    "SCORE_METHODS",
    "Applied",
    "DropoutRates",
    "DropoutSite",
    "SiteMap",
    "SiteMeasurement",
    "apply",
    "current_rates",
    "eager_attention",
    "find_sites",
    "fisher_fingerprint",
    "get_rate",
    "guided_rates",
    "log_linear",
    "map_scores",
    "measure_rates",
    "permuted_rates",
    "rank_linear",
    "reversed_rates",
    "set_rate",
    "set_rates",
    "site_scores",
    "uniform_rates",
    "unit_rates",
    "unit_scores",
]
