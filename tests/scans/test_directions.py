"""Directions: filter normalization per module type, one-dim policies, masks, builders, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import make_mlp, make_tiny_bert
from references import dense_objective_hessian
from landscape import vectors
from landscape.scans import directions
from landscape.scans.directions import filter_axis, filter_norms
from landscape.params import ParamMask, ParamSpace


def tiny_gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=1, n_head=2))


def conv_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _check_filter_norms(model, d, space):
    checked = 0
    for name, p in space.params.items():
        axis = filter_axis(space, name)
        if axis is None:
            continue
        torch.testing.assert_close(filter_norms(d[name], axis), filter_norms(p, axis), rtol=1e-5, atol=1e-7)
        checked += 1
    assert checked > 0


@pytest.mark.parametrize("build", [make_mlp, conv_net, make_tiny_bert, tiny_gpt2], ids=["linear", "conv2d", "bert", "gpt2"])
def test_filter_slices_have_weight_slice_norms(build):
    model = build()
    space = ParamSpace(model)
    d = directions.random(model, seed=3)
    _check_filter_norms(model, d, space)
    assert set(d) == set(space.names)
    for name, p in space.params.items():
        if p.ndim <= 1:
            assert torch.count_nonzero(d[name]) == 0  # one_dim="zero"


def test_module_specific_axes():
    gpt = tiny_gpt2()
    space = ParamSpace(gpt)
    attn = "transformer.h.0.attn.c_attn.weight"  # HF Conv1D, stored [in, out]
    assert type(space.owners[attn]).__name__ == "Conv1D" and filter_axis(space, attn) == 1
    d = directions.random(gpt, seed=0)
    w = space.params[attn]
    torch.testing.assert_close(d[attn].norm(dim=0), w.detach().norm(dim=0), rtol=1e-5, atol=1e-7)  # columns
    assert not torch.allclose(d[attn].norm(dim=1), w.detach().norm(dim=1), rtol=1e-3)  # rows differ
    bert = make_tiny_bert()
    bspace = ParamSpace(bert)
    emb = "bert.embeddings.word_embeddings.weight"
    assert isinstance(bspace.owners[emb], nn.Embedding) and filter_axis(bspace, emb) == 0
    assert "cls.predictions.decoder.weight" not in bspace.params  # tied: perturbed once


def test_one_dim_policies_and_other_normalizations():
    model = make_mlp()
    space = ParamSpace(model)
    radial = directions.random(model, seed=0, one_dim="radial")
    one = directions.random(model, seed=0, one_dim="filter")
    for name, p in space.params.items():
        if p.ndim == 1:
            assert torch.equal(radial[name], p.detach())  # Li et al.: d.copy_(w)
            torch.testing.assert_close(one[name].norm(), p.detach().norm())
    tensor = directions.random(model, seed=0, normalization="tensor")
    for name, p in space.params.items():
        if p.ndim > 1:
            torch.testing.assert_close(tensor[name].norm(), p.detach().norm())
    whole = directions.random(model, seed=0, normalization="model", one_dim="filter")
    torch.testing.assert_close(vectors.norm(whole), vectors.norm(space.values()).detach())
    raw = directions.random(model, seed=0, normalization="none", one_dim="filter")
    assert all(torch.equal(raw[k], v) for k, v in vectors.randn_like(space.params, 0).items())
    assert radial.meta["one_dim"] == "radial" and tensor.meta["normalization"] == "tensor" and raw.meta["seed"] == 0
    a, b = directions.random(model, seed=5), directions.random(model, seed=5)
    assert all(torch.equal(a[k], b[k]) for k in a) and a.fingerprint() == b.fingerprint()


def _element_mask(space, seed=0, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return ParamMask(space, {n: torch.rand(t.shape, generator=g) < p for n, t in space.params.items() if t.ndim > 1})


def test_masked_direction_is_zero_outside_and_scaled_on_masked_filters():
    model = make_tiny_bert()
    space = ParamSpace(model)
    mask = _element_mask(space)
    d = directions.random(model, seed=1, params=mask)
    for name, p in space.params.items():
        m = mask.masks.get(name, torch.zeros_like(p, dtype=torch.bool))
        assert torch.count_nonzero(d[name][~m]) == 0
        axis = filter_axis(space, name)
        if name in mask.masks and axis is not None:
            w_m = torch.where(m, p.detach(), torch.zeros(()))
            torch.testing.assert_close(filter_norms(d[name], axis), filter_norms(w_m, axis), rtol=1e-5, atol=1e-6)
    full = directions.random(model, seed=1)
    matched = directions.random(model, seed=1, params=mask, mask_scaling="match_full_norm")
    torch.testing.assert_close(vectors.norm(matched), vectors.norm(full), rtol=1e-6, atol=0)
    for name, m in mask.masks.items():  # same pattern as the full direction, rescaled
        nz = m & (full[name] != 0)  # rows of all-zero weights (padding embedding) stay zero
        ratio = matched[name][nz] / full[name][nz]
        torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])), rtol=1e-5, atol=0)
    assert matched.meta["mask"]["count"] == mask.count()
    tmask = ParamMask.from_tensor_names(space, ["bert.encoder.layer.0.attention.self.query.weight"])
    dt = directions.random(model, seed=1, params=tmask)
    assert [n for n in dt if torch.count_nonzero(dt[n])] == ["bert.encoder.layer.0.attention.self.query.weight"]


def test_orthogonalize_and_between():
    model = make_mlp()
    d1, d2 = directions.random(model, seed=0), directions.random(model, seed=1)
    e = directions.orthogonalize(d1, d2)
    assert abs(float(vectors.dot(d1, e))) < 1e-10 * float(vectors.norm(d1) * vectors.norm(e))
    assert abs(e.norm() - d2.norm()) < 1e-10
    other = make_mlp(seed=1)
    b = directions.between(model, other)
    for name, p in ParamSpace(model).params.items():
        assert torch.equal(b[name], dict(other.named_parameters())[name].detach() - p.detach())
    assert directions.between(model, other.state_dict()).fingerprint() == b.fingerprint()
    with pytest.raises(ValueError, match="identical weights"):
        directions.between(model, model)
    with pytest.raises(ValueError, match="parallel"):
        directions.orthogonalize(d1, vectors.scale(d1, 2.0))


def test_pca_recovers_the_plane_of_a_trajectory():
    final = make_mlp()
    space = ParamSpace(final)
    u = vectors.randn_like(space.params, 10)
    v = vectors.randn_like(space.params, 11)
    coeffs = [(3.0, 0.5), (2.0, -1.0), (1.5, 0.7), (0.5, -0.2), (0.0, 0.0)]
    checkpoints = []
    for a, b in coeffs:
        m = make_mlp()
        with torch.no_grad():
            for name, p in m.named_parameters():
                p.add_(a * u[name] + b * v[name])
        checkpoints.append(m.state_dict())
    res = directions.pca(checkpoints, model=final)
    basis = torch.stack([vectors.to_flat(res.directions[0]), vectors.to_flat(res.directions[1])])
    for w in (u, v):  # u and v lie in the span of the two PCA directions
        wf = vectors.to_flat(w)
        resid = wf - basis.T @ (basis @ wf)
        assert float(resid.norm() / wf.norm()) < 1e-8
    assert res.projections.shape == (5, 2) and np.allclose(res.projections[-1], 0)
    assert res.explained_variance_ratio.sum() == pytest.approx(1.0)
    assert res.directions[0].meta["kind"] == "pca"


def test_eigenvectors_match_the_dense_hessian(cls_data):
    from landscape import objectives

    model = make_mlp()
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    dirs = directions.eigenvectors(model, obj, cls_data, k=1, tol=1e-8)
    space = ParamSpace(model)
    names = space.names
    dense = dense_objective_hessian(model, obj, cls_data)
    top = float(torch.linalg.eigvalsh(dense)[-1])
    assert dirs[0].meta["eigenvalue"] == pytest.approx(top, rel=1e-5)
    assert dirs[0].norm() == pytest.approx(1.0, rel=1e-6) and set(dirs[0]) <= set(names)


def test_bad_inputs():
    model = make_mlp()
    space = ParamSpace(model)
    with pytest.raises(ValueError, match="normalization"):
        directions.random(model, normalization="filterwise")
    with pytest.raises(ValueError, match="one_dim"):
        directions.random(model, one_dim="ignore")
    empty = ParamMask(space, {})
    with pytest.raises(ValueError, match="selects no coordinate"):
        directions.random(model, params=empty)
    bias_only = ParamMask.from_tensor_names(space, ["0.bias"])
    with pytest.raises(ValueError, match="zero"):
        directions.random(model, params=bias_only, mask_scaling="match_full_norm")
    other = make_mlp(hidden=7)
    with pytest.raises(ValueError, match="different model"):
        directions.check_direction(directions.random(other), space)
    with pytest.raises(ValueError, match="zero everywhere"):
        directions.check_direction(directions.random(model, params=bias_only), space)
    with pytest.raises(ValueError, match="not a trainable parameter"):
        directions.check_direction({"nope.weight": torch.zeros(3)}, space)
