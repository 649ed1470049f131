"""The audit's curvature numbers of one Hessian block with their uncertainty: λ₁ (Lanczos) and a
Hutch++ trace that adds products until its standard error is small (on :func:`landscape.curvature.trace`).

Round r runs an independent Hutch++ estimate with m·2ʳ products (fresh probes: the seeds of
round r start after every probe of the earlier rounds). It stops after the first round whose
standard error is at most ``rel_tol``·|estimate|, or before a round that would push the products
spent past ``max_matvecs``; the last (largest) round is the answer, and ``noisy`` says the cap
stopped it. Earlier rounds are spent, not pooled: a Hutch++ estimate with 2m products has about
half the error of two with m each when the spectrum decays (error ∝ 1/m, not 1/√m).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

from landscape import curvature
from landscape.curvature.base import CurvatureOperator

__all__ = ["AdaptiveTrace", "adaptive_trace", "block_curvature", "precise_enough"]


@dataclass
class AdaptiveTrace:
    """tr(H) ≈ ``estimate`` ± ``stderr`` from the last round; ``n_matvecs`` counts every round.

    ``rounds``: per round ``{"num_matvecs", "estimate", "stderr"}``. ``noisy``: the cap was reached
    before stderr ≤ ``rel_tol``·|estimate| (or no error estimate exists: fewer than 6 products).
    """

    estimate: float
    stderr: float
    n_matvecs: int
    noisy: bool
    rel_tol: float
    max_matvecs: int
    rounds: list[dict[str, Any]] = field(default_factory=list)


def precise_enough(estimate: float, stderr: float, rel_tol: float) -> bool:
    """Whether stderr ≤ rel_tol·|estimate| with a finite stderr (an estimate without error is never precise)."""
    return math.isfinite(stderr) and stderr <= rel_tol * abs(estimate)


def adaptive_trace(op: CurvatureOperator, *, num_matvecs: int, max_matvecs: int, rel_tol: float = 0.1,
                   seed: int = 0) -> AdaptiveTrace:
    """Hutch++ rounds of ``num_matvecs``·2ʳ products until stderr ≤ ``rel_tol``·|tr| or ``max_matvecs``.

    ``max_matvecs`` caps the products spent on all rounds together; the first round always runs
    (a cap below ``num_matvecs`` means one round). Raises ``ValueError`` for ``num_matvecs < 3``
    or ``rel_tol ≤ 0``.
    """
    if num_matvecs < 3:
        raise ValueError(f"num_matvecs must be at least 3 (Hutch++ needs 3 per probe), got {num_matvecs}.")
    if not rel_tol > 0:
        raise ValueError(f"rel_tol must be positive, got {rel_tol}.")
    rounds: list[dict[str, Any]] = []
    spent, m = 0, num_matvecs
    while True:
        tr = curvature.trace(op, num_matvecs=m, method="hutch++", seed=seed + spent, progress=False)
        spent += tr.n_matvecs
        rounds.append({"num_matvecs": tr.n_matvecs, "estimate": float(tr.estimate), "stderr": float(tr.stderr)})
        if precise_enough(tr.estimate, tr.stderr, rel_tol):
            return AdaptiveTrace(float(tr.estimate), float(tr.stderr), spent, False, rel_tol, max_matvecs, rounds)
        if spent + 2 * m > max_matvecs:
            return AdaptiveTrace(float(tr.estimate), float(tr.stderr), spent, True, rel_tol, max_matvecs, rounds)
        m *= 2


def block_curvature(op: CurvatureOperator, *, eig_tol: float, eig_max_iter: int, num_matvecs: int,
                    max_matvecs: int, rel_tol: float, seed: int) -> dict[str, Any]:
    """λ₁ (Lanczos, at most ``eig_max_iter`` products) and the adaptive trace of ``op``, as audit fields:
    ``top_eigenvalue``, ``eig_converged``, ``trace``, ``trace_stderr`` (None without an error estimate),
    ``trace_noisy``, ``trace_matvecs``, ``trace_per_param`` (tr/dim), ``n_matvecs``."""
    with warnings.catch_warnings():  # a capped Lanczos run is expected; eig_converged records it
        warnings.filterwarnings("ignore", message="Lanczos did not reach")
        eig = curvature.top_eigenvalues(op, k=1, tol=eig_tol, max_iter=min(eig_max_iter, op.dim), seed=seed,
                                        progress=False)
    tr = adaptive_trace(op, num_matvecs=num_matvecs, max_matvecs=max_matvecs, rel_tol=rel_tol, seed=seed)
    return {"top_eigenvalue": float(eig.values[0]), "eig_converged": bool(eig.converged), "trace": tr.estimate,
            "trace_stderr": tr.stderr if math.isfinite(tr.stderr) else None, "trace_noisy": tr.noisy,
            "trace_matvecs": tr.n_matvecs, "trace_per_param": tr.estimate / op.dim,
            "n_matvecs": int(eig.n_matvecs + tr.n_matvecs)}
