"""One cell of the design: model m, Fisher sample k, MLM mask draw r (:mod:`.hierarchy`).

A cell recomputes the masks from its Fisher sample and measures, for every direction seed and
evaluation sequence, the directional curvature dᵀHd (:func:`.measure.per_seed`, two forward
passes per direction, sharing the cell's L(θ₀) pass) of:

* arm P: the top and bottom tensor halves of the paper's protocol ("all" in the first cell);
* arm E at every mask fraction (the sweep's other fractions in the first mask draw only): ``top``
  and ``stratified`` under both direction constructions (:data:`CONSTRUCTIONS`); at the main
  fraction also ``random`` and ``bottom`` (filter only: descriptive rows).

Direction constructions for arm E, at the same ‖d‖ for every mask and seed:

* ``filter``: a filter-normalized full direction, masked and scaled back to its full norm
  (``match_full_norm``): each element's step scales with its row's weight norm;
* ``isotropic``: Gaussian on the mask's elements at that same norm
  (:func:`landscape.scans.constructions.isotropic_in_mask`): every element alike.

The first cell (m = k = r = 0) also keeps the 1D curves, loss rise and basin width of the first
``curve_seeds`` seeds (arm P and the main fraction's filter masks).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from analyses.fisher_sharpness import arms, measure
from landscape.fisher import FisherDiagonal
from landscape.params import ParamMask
from landscape.scans.constructions import isotropic_in_mask
from landscape.scans.direction import Direction
from landscape.scans.points import ExampleLosses

CONSTRUCTIONS = ("filter", "isotropic")
ISOTROPIC_SEED = 31337  # isotropic draws use seed + this, a stream of their own
DESCRIPTIVE = ("random", "bottom")


def arm_e_direction(model: Any, mask: ParamMask, seed: int, construction: str) -> Direction:
    """Arm E's direction on ``mask`` under ``construction``; both at the norm of the full filter direction."""
    filt = arms.arm_e_direction(model, mask, seed)
    if construction == "filter":
        return filt
    if construction != "isotropic":
        raise ValueError(f"unknown direction construction {construction!r}; use one of {CONSTRUCTIONS}.")
    return isotropic_in_mask(model, mask, norm=filt.norm(), seed=seed + ISOTROPIC_SEED)


def mask_key(fraction: float, which: str, construction: str) -> str:
    """``E-0.1-top-filter``: the arm E mask of a fraction under a construction."""
    return f"E-{fraction:g}-{which}-{construction}"


def arm_e_keys(fractions: tuple[float, ...], main: float, draw: int = 0) -> list[tuple[float, str, str]]:
    """(fraction, which, construction) of every arm E measurement in a cell; the sweep's other
    fractions only in the first mask draw (``draw`` 0), to keep the main job's budget."""
    keys = [(f, w, c) for f in fractions if draw == 0 or f == main for w in ("top", "stratified")
            for c in CONSTRUCTIONS]
    return keys + [(main, w, "filter") for w in DESCRIPTIVE]


def measure_cell(cfg: Any, model: Any, objective: Any, data: list, F: FisherDiagonal, mspace: Any, *,
                 first: bool, draw: int = 0) -> dict[str, Any]:
    """The cell's per-seed, per-sequence numbers: ``{"counts", "sums0", "P": {half: ...}, "E": {key: ...}}``."""
    ev = ExampleLosses(model, objective, data)
    s0 = ev.origin()
    alphas = measure.curve_alphas(cfg.range_1d, cfg.points_1d, cfg.loss_rise_step)
    common = dict(fd_step=cfg.fd_step, alphas=alphas, rise_step=cfg.loss_rise_step, basin_delta=cfg.basin_delta,
                  basin_max_alpha=cfg.basin_max_alpha)
    seeds = list(cfg.seeds)

    def run(make: Callable[[int], Any], curves: bool) -> dict[str, Any]:
        return measure.per_seed(ev, s0, make, seeds, curve_seeds=cfg.curve_seeds if curves and first else 0,
                                **common)

    from landscape.params import ParamSpace

    space = ParamSpace(model)
    halves = arms.tensor_halves(F)
    out: dict[str, Any] = {"counts": ev.counts.tolist(), "sums0": s0.tolist(), "P": {}, "E": {},
                           "halves": halves}
    for half in ("top", "bottom", "all") if first else ("top", "bottom"):
        names = halves.get(half)
        info = arms.half_summary(space, names if names is not None else space.names)
        if info["n_moving_tensors"] == 0:
            out["P"][half] = {"summary": info, "skipped": "only 1-D tensors, which get a zero direction"}
            continue
        def make_p(s: int, n: list[str] | None = names) -> Direction:
            return arms.arm_p_direction(model, space, n, s)

        out["P"][half] = {"summary": info} | run(make_p, True)
    F_matrix = F.restrict(mspace)
    masks = {f: arms.arm_e_masks(F_matrix, f) for f in cfg.fractions}
    for fraction, which, construction in arm_e_keys(cfg.fractions, cfg.fraction, draw):
        m = masks[fraction]
        make = lambda s, m=m, w=which, c=construction: arm_e_direction(model, m.mask(w, s), s, c)  # noqa: E731
        entry = run(make, fraction == cfg.fraction and construction == "filter")
        m0 = m.mask(which, seeds[0])
        out["E"][mask_key(fraction, which, construction)] = entry | {"count": m0.count(), "n_tensors": len(m0.names)}
    out["n_forward"] = ev.n_forward
    return out


def primary_only(cfg: Any, model: Any, objective: Any, data: list, F: FisherDiagonal, mspace: Any) -> dict[str, Any]:
    """Top vs stratified at the main fraction under both constructions, for another Fisher's masks."""
    ev = ExampleLosses(model, objective, data)
    s0 = ev.origin()
    alphas = measure.curve_alphas(cfg.range_1d, cfg.points_1d, cfg.loss_rise_step)
    masks = arms.arm_e_masks(F.restrict(mspace), cfg.fraction)
    out: dict[str, Any] = {"counts": ev.counts.tolist(), "E": {}}
    for which in ("top", "stratified"):
        for c in CONSTRUCTIONS:
            make = lambda s, w=which, c=c: arm_e_direction(model, masks.mask(w, s), s, c)  # noqa: E731
            out["E"][mask_key(cfg.fraction, which, c)] = measure.per_seed(
                ev, s0, make, list(cfg.seeds), fd_step=cfg.fd_step, curve_seeds=0, alphas=alphas,
                rise_step=cfg.loss_rise_step, basin_delta=cfg.basin_delta, basin_max_alpha=cfg.basin_max_alpha)
    return out


def jaccard(a: ParamMask, b: ParamMask) -> float:
    """|A ∩ B| / |A ∪ B| of two element masks over the same space."""
    inter = union = 0
    for n in set(a.masks) | set(b.masks):
        x, y = a.masks.get(n), b.masks.get(n)
        if x is None or y is None:
            union += int((x if x is not None else y).sum())  # type: ignore[union-attr]
            continue
        inter += int((x & y).sum())
        union += int((x | y).sum())
    return inter / union if union else 1.0
