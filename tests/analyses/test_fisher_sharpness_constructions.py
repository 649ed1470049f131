"""Arm E's two direction constructions: isotropic in the mask vs filter-normalized then masked, and the
mask-size sweep figure."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from analyses.fisher_sharpness.cells import arm_e_direction, jaccard
from landscape.params import ParamMask, ParamSpace
from landscape.scans.constructions import isotropic_in_mask


def _model():
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(40, 60), torch.nn.Linear(60, 50))
    with torch.no_grad():
        m[0].weight.mul_(10.0)  # rows of the first layer ~10× the norm of the second's
    return m


def _half_mask(model, seed=0):
    space = ParamSpace.from_names(model, ["0.weight", "1.weight"])
    g = torch.Generator().manual_seed(seed)
    masks = {n: torch.rand(p.shape, generator=g) < 0.5 for n, p in space.params.items()}
    return ParamMask(space, masks, "element", {})


def test_isotropic_in_mask_has_the_norm_and_lives_on_the_mask():
    model = _model()
    mask = _half_mask(model)
    d = isotropic_in_mask(model, mask, norm=3.5, seed=4)
    assert d.norm() == pytest.approx(3.5, rel=1e-6)
    for n, t in d.items():
        assert torch.all(t[~mask.masks[n]] == 0) and torch.count_nonzero(t) == int(mask.masks[n].sum())
    assert torch.equal(isotropic_in_mask(model, mask, norm=3.5, seed=4)["0.weight"], d["0.weight"])
    assert not torch.equal(isotropic_in_mask(model, mask, norm=3.5, seed=5)["0.weight"], d["0.weight"])
    with pytest.raises(ValueError, match="positive norm"):
        isotropic_in_mask(model, mask, norm=0.0)
    empty = ParamMask(mask.space, {n: torch.zeros_like(m) for n, m in mask.masks.items()}, "element", {})
    with pytest.raises(ValueError, match="non-empty mask"):
        isotropic_in_mask(model, empty, norm=1.0)


def test_isotropic_spreads_the_norm_evenly_where_filter_follows_the_weights():
    """Per-element RMS on the mask: equal across tensors for isotropic, ∝ row weight norm for filter."""
    model = _model()
    mask = _half_mask(model)

    def rms(d):
        return {n: float(t[mask.masks[n]].pow(2).mean().sqrt()) for n, t in d.items()}

    filt = arm_e_direction(model, mask, 3, "filter")
    iso = arm_e_direction(model, mask, 3, "isotropic")
    assert iso.norm() == pytest.approx(filt.norm(), rel=1e-6)
    r_f, r_i = rms(filt), rms(iso)
    assert r_f["0.weight"] / r_f["1.weight"] > 5.0  # the heavy rows carry the filter direction
    assert r_i["0.weight"] / r_i["1.weight"] == pytest.approx(1.0, abs=0.1)
    with pytest.raises(ValueError, match="construction"):
        arm_e_direction(model, mask, 3, "radial")


def test_jaccard_of_masks():
    model = _model()
    a, b = _half_mask(model, 0), _half_mask(model, 1)
    assert jaccard(a, a) == 1.0
    inter = sum(int((a.masks[n] & b.masks[n]).sum()) for n in a.masks)
    union = sum(int((a.masks[n] | b.masks[n]).sum()) for n in a.masks)
    assert jaccard(a, b) == pytest.approx(inter / union)


def test_sweep_figure_is_a_real_png(tmp_path):
    from figures import plot_mask_sweep
    from saved_models import png_size

    rows = [{"fraction": f, "construction": c, "ratio": r, "ratio_interval": None if f == 0.25 else (r - 0.2, r + 0.3),
             "estimate": r - 1, "interval": (r - 1.3, r - 0.7)}
            for f, r0 in ((0.01, 2.0), (0.03, 1.8), (0.1, 1.5), (0.25, 1.2)) for c, r in (("filter", r0),
                                                                                           ("isotropic", r0 * 0.8))]
    fig = plot_mask_sweep(rows, title="sweep", save=tmp_path / "sweep.png")
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    w, h = png_size(tmp_path / "sweep.png")
    assert w > 600 and h > 200
    import matplotlib.image as mpimg

    assert np.ptp(mpimg.imread(tmp_path / "sweep.png")) > 0
    negative = [r | {"control": -1.0, "ratio": -r["ratio"], "ratio_interval": None} for r in rows]
    plot_mask_sweep(negative, save=tmp_path / "negative.png")  # no positive ratio: the left panel says so
    assert png_size(tmp_path / "negative.png")[0] > 600
    with pytest.raises(ValueError, match="no sweep rows"):
        plot_mask_sweep([])
