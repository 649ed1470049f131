"""Censoring-aware statistics of the Fisher-sharpness study (the bootstrap itself is :mod:`.hierarchy`).

A basin width is right-censored when the loss never reaches L(θ₀) + δ within the searched line:
only a lower bound is known, and :func:`censored_median` keeps it as one. Pure numpy.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np


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
