"""The perturbation primitive: sparse directions move only their tensors, tied aliases resolve
without a ParamSpace, and the weights come back bit for bit."""

from __future__ import annotations

import pytest
import torch

from conftest import make_mlp, make_tiny_bert
from landscape import util
from landscape.perturb import Perturbation, perturbed


def test_a_direction_over_some_tensors_moves_only_those_and_restores_exactly():
    model = make_mlp()
    pert = Perturbation(dict(model.named_parameters()))
    d = {"2.bias": torch.ones(3, dtype=torch.float64)}
    with pert:
        pert.set_terms([(0.5, d)])
        assert torch.equal(model[2].bias.detach(), pert.theta0[3] + 0.5)
        assert torch.equal(model[0].weight.detach(), pert.theta0[0])
        with pytest.raises(KeyError, match="not being perturbed"):
            pert.set_terms([(1.0, {"nope": torch.ones(1)})])
    assert pert.is_restored()


def test_perturbed_resolves_a_tied_alias_to_the_shared_tensor():
    model = make_tiny_bert(hidden=16, layers=1)
    before = util.weights_fingerprint(model)
    emb = model.bert.embeddings.word_embeddings.weight
    assert model.cls.predictions.decoder.weight is emb  # tied
    with perturbed(model, {"cls.predictions.decoder.weight": torch.ones_like(emb)}):
        assert torch.equal(emb.detach(), model.cls.predictions.decoder.weight.detach())
        assert util.weights_fingerprint(model) != before
    assert util.weights_fingerprint(model) == before
    with pytest.raises(KeyError, match="not a parameter"):
        with perturbed(model, {"nope": torch.ones(1)}):
            pass
