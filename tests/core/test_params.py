"""Parameter spaces, masks, vector arithmetic and exact perturbation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import make_mlp, mlm_objective
from landscape import vectors
from landscape.params import ParamMask, ParamSpace
from landscape.perturb import Perturbation, perturbed


def test_tied_decoder_weight_appears_once(tiny_bert):
    space = ParamSpace(tiny_bert)
    assert "bert.embeddings.word_embeddings.weight" in space
    assert "cls.predictions.decoder.weight" not in space.names
    assert "cls.predictions.decoder.weight" in space.aliases["bert.embeddings.word_embeddings.weight"]
    assert space.dim == sum(p.numel() for p in tiny_bert.parameters())  # parameters() dedupes too


def test_selection_by_glob_alias_and_type(tiny_bert):
    enc = ParamSpace(tiny_bert, include="bert.encoder.*")
    assert enc.names and all(n.startswith("bert.encoder.") for n in enc.names)
    no_ln = ParamSpace(tiny_bert, include="bert.encoder.*", exclude="*LayerNorm*")
    assert len(no_ln) < len(enc) and not any("LayerNorm" in n for n in no_ln.names)
    via_alias = ParamSpace(tiny_bert, include="cls.predictions.decoder.weight")
    assert via_alias.names == ["bert.embeddings.word_embeddings.weight"]
    linear = ParamSpace(tiny_bert, module_types=(nn.Linear,))
    assert all(isinstance(linear.owners[n], nn.Linear) for n in linear.names)
    assert "bert.embeddings.word_embeddings.weight" not in linear


def test_bad_selections_are_refused(tiny_bert):
    with pytest.raises(ValueError, match="matches nothing"):
        ParamSpace(tiny_bert, include="no.such.*")
    frozen = make_mlp()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        ParamSpace(frozen)


def test_frozen_parameters_are_left_out():
    model = make_mlp()
    model[0].bias.requires_grad_(False)
    assert "0.bias" not in ParamSpace(model).names


def test_vector_arithmetic_matches_flat():
    model = make_mlp()
    space = ParamSpace(model)
    a, b = space.randn(0), space.randn(1)
    fa, fb = vectors.to_flat(a), vectors.to_flat(b)
    assert torch.allclose(vectors.dot(a, b), fa @ fb)
    assert torch.allclose(vectors.norm(a), fa.norm())
    assert torch.allclose(vectors.to_flat(vectors.add(a, b, alpha=2.0)), fa + 2 * fb)
    y = vectors.clone(b)
    vectors.axpy(0.5, a, y)
    assert torch.allclose(vectors.to_flat(y), fb + 0.5 * fa)
    assert torch.equal(vectors.to_flat(vectors.from_flat(fa, a)), fa)
    assert torch.equal(vectors.to_flat(space.randn(0)), fa)  # reproducible from the seed
    r = space.rademacher(0)
    assert set(vectors.to_flat(r).unique().tolist()) == {-1.0, 1.0}
    with pytest.raises(ValueError, match="different parameters"):
        vectors.dot(a, {"x": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        space.check_vector({**a, "0.weight": torch.zeros(2)})


def test_mask_apply_and_counts():
    model = make_mlp()
    space = ParamSpace(model)
    m = {"0.weight": torch.zeros_like(model[0].weight, dtype=torch.bool)}
    m["0.weight"][0, :2] = True
    mask = ParamMask(space, m)
    assert mask.count() == 2 and mask.names == ["0.weight"]
    v = mask.apply(space.randn(0))
    assert list(v) == ["0.weight"] and int((v["0.weight"] != 0).sum()) == 2
    full = ParamMask.full(space)
    assert full.count() == space.dim and full.fraction == 1.0
    with pytest.raises(ValueError, match="bool tensor"):
        ParamMask(space, {"0.weight": torch.zeros(2, dtype=torch.bool)})


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _bit_identical(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k].view(torch.uint8) if a[k].is_floating_point() else a[k], b[k].view(torch.uint8) if b[k].is_floating_point() else b[k]) for k in a)


def test_perturbed_restores_bit_for_bit_after_exception(tiny_bert, mlm_batches):
    before = _state(tiny_bert)
    space = ParamSpace(tiny_bert)
    delta = vectors.scale(space.randn(5), 1e-3)  # tiny steps: float round-off would show
    obj = mlm_objective()
    base = obj.evaluate(tiny_bert, mlm_batches)
    with pytest.raises(RuntimeError, match="boom"):
        with perturbed(tiny_bert, delta):
            assert obj.evaluate(tiny_bert, mlm_batches) != base
            raise RuntimeError("boom")
    assert _bit_identical(before, _state(tiny_bert))
    assert tiny_bert.training


def test_perturbed_restores_after_keyboard_interrupt(tiny_bert):
    before = _state(tiny_bert)
    delta = {"cls.predictions.decoder.weight": torch.ones_like(tiny_bert.cls.predictions.decoder.weight)}  # an alias
    with pytest.raises(KeyboardInterrupt):
        with perturbed(tiny_bert, delta):
            assert not torch.equal(tiny_bert.bert.embeddings.word_embeddings.weight, before["bert.embeddings.word_embeddings.weight"])
            raise KeyboardInterrupt
    assert _bit_identical(before, _state(tiny_bert))


def test_perturbed_sets_theta0_plus_delta_and_rejects_bad_names():
    model = make_mlp()
    w0 = model[0].weight.detach().clone()
    d = torch.full_like(w0, 0.25)
    with perturbed(model, {"0.weight": d}):
        assert torch.equal(model[0].weight, w0 + d)
    with pytest.raises(KeyError, match="not a parameter"):
        with perturbed(model, {"nope": d}):
            pass
    with pytest.raises(ValueError, match="shape"):
        with perturbed(model, {"0.weight": torch.zeros(3)}):
            pass


def test_snapshot_offsets_from_theta0_without_drift():
    model = make_mlp(dtype=torch.float32)
    space = ParamSpace(model)
    snap = Perturbation(space.params)
    d = space.randn(0)
    for alpha in torch.linspace(-1, 1, 101).tolist():
        snap.set_terms([(alpha, d)])
    snap.set_terms([(0.0, d)])
    assert snap.is_restored() and all(torch.equal(t0, p) for t0, p in zip(snap.theta0, space.params.values()))
