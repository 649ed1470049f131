"""What only the first cell (model 0, Fisher sample 0, mask draw 0) computes.

* arm P's 2D surfaces (top, bottom, all), beside the paper's published ones;
* per main-fraction arm E mask (filter construction, first seed's mask): the Hutchinson trace, the
  restricted top eigenvalue and the check of the finite-difference dᵀHd against the exact
  dᵀ(Hd) on the run's own model (:func:`landscape.sharpness.fd_curvature_error`, one extra
  Hessian-vector product per mask);
* the other per-example Fisher loss (``sum`` when the run uses ``mean``, and back): the top
  masks' Jaccard overlap |A∩B|/|A∪B| and top vs stratified under the other Fisher's masks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from analyses.common import split_examples
from analyses.fisher_sharpness import arms, cells, measure
from landscape import scans, sharpness
from landscape.fisher import FisherDiagonal
from landscape.params import ParamSpace


def _surfaces(r: Any, cell: dict[str, Any]) -> dict[str, Any]:
    """Arm P's 2D surfaces on the first ``surface_examples`` pool sequences."""
    cfg, mem = r.cfg, r.members[0]
    model, space = mem.target.model, ParamSpace(mem.target.model)
    data = split_examples(mem.eval, min(cfg.surface_examples, int(mem.groups.size)), 0, cfg.batch_size)[0]
    grid = scans.coefficients(-cfg.range_2d, cfg.range_2d, cfg.grid_2d)
    centre = int(np.argmin(np.abs(grid)))
    out: dict[str, Any] = {}
    s = cfg.seeds[0]
    for half, entry in cell["P"].items():
        if "skipped" in entry:
            continue
        names = cell["halves"].get(half)
        surf = scans.scan_2d(model, mem.objective(0), data, arms.arm_p_direction(model, space, names, s),
                             arms.arm_p_direction(model, space, names, s + arms.SECOND_DIRECTION), grid, grid,
                             path=r.out / "arrays" / f"P-{half}_2d.npz", resume=cfg.resume, progress=False,
                             distributed=False)
        out[half] = {"surface": f"arrays/P-{half}_2d.npz", "surface_loss0": float(surf.values["loss"][centre, centre])}
    return out


def _mask_checks(r: Any, F: FisherDiagonal) -> dict[str, Any]:
    """Trace, top eigenvalue and FD check of each main-fraction mask (filter construction)."""
    cfg, mem = r.cfg, r.members[0]
    model, obj = mem.target.model, mem.objective(0)
    eig_data = split_examples(mem.eval, min(cfg.eig_examples, int(mem.groups.size)), 0, cfg.batch_size)[0]
    masks = arms.arm_e_masks(F.restrict(arms.matrix_space(model)), cfg.fraction)
    out: dict[str, Any] = {}
    s = cfg.seeds[0]
    for which in arms.ARM_E_MASKS:
        m0 = masks.mask(which, s)
        t0 = time.perf_counter()
        d = cells.arm_e_direction(model, m0, s, "filter")
        err = sharpness.fd_curvature_error(model, obj, eig_data, d, cfg.fd_step)
        out[cells.mask_key(cfg.fraction, which, "filter")] = {
            "trace": measure.masked_trace(model, obj, mem.eval, m0, probes=cfg.trace_matvecs, seed=cfg.seed),
            "top_eigenvalue": measure.masked_top_eigenvalue(model, obj, eig_data, m0, max_iter=cfg.eig_iters,
                                                            tol=cfg.eig_tol, seed=cfg.seed),
            "fd_check": {"relative_error": float(err), "h": cfg.fd_step, "n_sequences": int(
                sum(int(b["input_ids"].shape[0]) for b in eig_data))}}
        r.timed("mask_checks_s", t0)
    return out


def extras(r: Any, cell: dict[str, Any], F: FisherDiagonal) -> dict[str, Any]:
    """The first cell's surfaces and mask checks (a resumable part)."""
    done = r.parts.get("extras")
    if done is None:
        r.bar.set_postfix_str("surfaces and checks")
        t0 = time.perf_counter()
        done = {"surfaces": _surfaces(r, cell)}
        r.timed("surfaces_s", t0)
        done["masks"] = _mask_checks(r, F)
        r.parts.put("extras", done)
    return done


def other_fisher_loss(r: Any, F: FisherDiagonal, fisher_of: Callable[[str], FisherDiagonal]) -> dict[str, Any]:
    """The other per-example loss's Fisher on the first sample: Jaccard of the top masks, and top vs
    stratified (both constructions) under its masks, on the first cell's data (a resumable part)."""
    done = r.parts.get("fisher-loss")
    if done is not None:
        return dict(done)
    cfg, mem = r.cfg, r.members[0]
    r.bar.set_postfix_str("the other Fisher loss")
    other = "sum" if cfg.fisher_loss == "mean" else "mean"
    F_other = fisher_of(other)
    mspace = arms.matrix_space(mem.target.model)
    top = F.restrict(mspace).mask(cfg.fraction, which="top", granularity="element")
    top_other = F_other.restrict(mspace).mask(cfg.fraction, which="top", granularity="element")
    done = {"loss": cfg.fisher_loss, "other": other, "fraction": cfg.fraction, "jaccard": cells.jaccard(top, top_other),
            **cells.primary_only(cfg, mem.target.model, mem.objective(0), mem.eval, F_other, mspace)}
    r.parts.put("fisher-loss", done)
    return done
