"""Plain-words verdicts from intervals, never from votes.

Each endpoint is a contrast of top-Fisher against a control with a 95 % hierarchical bootstrap
interval (:func:`analyses.fisher_sharpness.hierarchy.endpoint`). The verdict reads the interval,
whatever it says (and, in a Holm-corrected family, whether the corrected test rejects):

* the whole interval above 0 (log-ratio or difference): top-Fisher is *sharper*;
* the whole interval below 0: top-Fisher is *flatter*;
* 0 inside the interval, or not rejected after Holm: *no clear difference* at this precision,
  with the minimum detectable effect at 80 % power.

Secondary metrics are compared with :func:`compare_values`, shown beside the endpoints and never
counted. A single value without an uncertainty (one Hessian eigenvalue per mask) is never called
different; a value with a standard error needs its gap beyond the 97.5 % quantile of Student's t
with the values' degrees of freedom (Welch–Satterthwaite; 1.96 without them) times the combined
standard error; a censored value (a basin wider than the searched range) is a lower bound and is compared as one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054

#: metric -> True when larger values mean a sharper loss
SHARPER_WHEN_LARGER: dict[str, bool] = {
    "curvature": True, "curvature_per_norm2": True, "loss_rise": True, "basin_width": False,
    "top_eigenvalue": True, "trace": True,
}


def p_text(p: float, n_boot: int) -> str:
    """A bootstrap p-value in words: "0.012", or "< 0.001" when no replicate crossed (p < 2/B)."""
    return f"< {2 / n_boot:.2g}" if p <= 0 else f"= {p:.2g}"


def call_interval(lo: float, hi: float) -> str:
    """"sharper" (interval above 0), "flatter" (below 0) or "unclear" (0 inside, or undefined)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "unclear"
    if lo > 0:
        return "sharper"
    if hi < 0:
        return "flatter"
    return "unclear"


def _effect(endpoint: Mapping[str, Any]) -> str:
    lo, hi = endpoint["interval"]
    if endpoint["scale"] == "log_ratio":
        return f"×{math.exp(endpoint['estimate']):.3g} [95% CI ×{math.exp(lo):.3g} to ×{math.exp(hi):.3g}]"
    text = f"difference {endpoint['estimate']:+.3g} [95% CI {lo:+.3g} to {hi:+.3g}]"
    ratio, riv = endpoint.get("ratio"), endpoint.get("ratio_interval")
    if ratio is not None and math.isfinite(ratio) and endpoint.get("control", 0) > 0 and ratio > 0:
        text += f", ratio ×{ratio:.3g}" + (f" [×{riv[0]:.3g} to ×{riv[1]:.3g}]" if riv else
                                          " (no interval: the control's dᵀHd is not positive in every replicate)")
    return text


def endpoint_verdict(endpoint: Mapping[str, Any], *, quantity: str, top: str, control: str,
                     rejected: bool | None = None) -> dict[str, Any]:
    """The verdict of one contrast, in words: ``{"outcome", "sentence"}``.

    ``endpoint``: a :func:`~analyses.fisher_sharpness.hierarchy.endpoint` dict (``scale``,
    ``estimate``, ``interval``, optionally ``ratio``, ``mde80``); ``quantity``: what was compared;
    ``rejected``: the Holm-corrected decision of a family member (False makes it "unclear").
    """
    lo, hi = endpoint["interval"]
    outcome = call_interval(lo, hi)
    if rejected is False:
        outcome = "unclear"
    effect = _effect(endpoint)
    if outcome == "sharper":
        text = f"{top} is sharper than {control}: {quantity} {effect}, the whole interval above parity."
    elif outcome == "flatter":
        text = f"{top} is flatter than {control}: {quantity} {effect}, the whole interval below parity."
    else:
        text = (f"no clear difference between {top} and {control}: {quantity} {effect}, an interval that includes "
                "parity" + (" or a test not rejected after Holm" if rejected is False else "") + ".")
        mde = endpoint.get("mde80")
        if mde is not None and math.isfinite(mde):
            text += f" The smallest difference this design detects with 80% power is ±{mde:.3g}."
    return {"outcome": outcome, "sentence": text[0].upper() + text[1:]}


@dataclass
class Value:
    """One secondary metric of one mask: ``value`` with an optional ``stderr`` or ``interval``;
    ``censored``: the value is only a lower bound (e.g. a basin wider than the searched range)."""

    value: float
    stderr: float | None = None
    interval: tuple[float, float] | None = None
    censored: bool = False
    dof: int | None = None

    @property
    def has_uncertainty(self) -> bool:
        return self.interval is not None or (self.stderr is not None and math.isfinite(self.stderr))


def compare_values(metric: str, top: Value, base: Value) -> dict[str, Any]:
    """Compare a secondary metric of top-Fisher with a control's; ``outcome`` as :func:`call_interval`.

    Rules: censored lower bounds are compared as bounds (top ≥ b > control's finite value means
    top is larger; two censored values cannot be ordered); a single value without uncertainty on
    either side is never called different; otherwise intervals that do not overlap, or a gap beyond
    1.96 combined standard errors, decide.
    """
    larger = SHARPER_WHEN_LARGER.get(metric, True)
    t, b = top.value, base.value
    if not (math.isfinite(t) and math.isfinite(b)):
        return {"metric": metric, "outcome": "unclear", "reason": "a value is missing"}
    if top.censored and base.censored:
        return {"metric": metric, "outcome": "unclear", "reason": "both values are beyond the searched range"}
    if top.censored or base.censored:
        # the censored side is at least its value; it is larger only if that bound already exceeds the other
        top_larger = top.censored and t > b
        base_larger = base.censored and b > t
        if not (top_larger or base_larger):
            return {"metric": metric, "outcome": "unclear", "reason": "a lower bound that does not reach the other "
                                                                      "value"}
        outcome = "sharper" if top_larger == larger else "flatter"
        return {"metric": metric, "outcome": outcome, "reason": "decided by a censored lower bound"}
    if not (top.has_uncertainty and base.has_uncertainty):
        return {"metric": metric, "outcome": "unclear", "reason": "single values without an uncertainty"}
    if top.interval is not None and base.interval is not None:
        if top.interval[0] > base.interval[1]:
            diff_sign = 1
        elif top.interval[1] < base.interval[0]:
            diff_sign = -1
        else:
            return {"metric": metric, "outcome": "unclear", "reason": "the intervals overlap"}
    else:
        se = math.hypot(_se(top), _se(base))
        q = _quantile(top, base)
        if not abs(t - b) > q * se:
            return {"metric": metric, "outcome": "unclear",
                    "reason": f"the gap is within {q:.3g} combined standard errors"}
        diff_sign = 1 if t > b else -1
    outcome = "sharper" if (diff_sign > 0) == larger else "flatter"
    return {"metric": metric, "outcome": outcome, "reason": "the gap exceeds the uncertainty"}


def _quantile(a: Value, b: Value) -> float:
    """The two-sided 95 % quantile: Student's t with Welch–Satterthwaite degrees of freedom when both
    values give theirs (e.g. 4 Hutchinson probes: 3 each), else the normal 1.96."""
    if a.dof is None or b.dof is None or a.stderr is None or b.stderr is None:
        return Z95
    from scipy.stats import t

    va, vb = a.stderr**2, b.stderr**2
    den = (va**2 / a.dof if a.dof > 0 else math.inf) + (vb**2 / b.dof if b.dof > 0 else math.inf)
    dof = (va + vb) ** 2 / den if den > 0 else float(min(a.dof, b.dof))
    return float(t.ppf(0.975, max(dof, 1.0)))


def _se(v: Value) -> float:
    if v.stderr is not None and math.isfinite(v.stderr):
        return float(v.stderr)
    lo, hi = v.interval  # type: ignore[misc]
    return (hi - lo) / (2 * Z95)


def value_from_dict(d: Mapping[str, Any]) -> Value:
    """A :class:`Value` from its ``asdict`` form (as stored in result.json)."""
    iv = d.get("interval")
    return Value(float(d["value"]), d.get("stderr"), None if iv is None else (float(iv[0]), float(iv[1])),
                 bool(d.get("censored", False)), d.get("dof"))


def value_to_dict(v: Value) -> dict[str, Any]:
    """A :class:`Value` as JSON-able fields."""
    return asdict(v)
