"""fisher.diagonal's params= (ParamMask), distributed=, its one way to count examples, and restrict."""

from __future__ import annotations

import pytest
import torch
from conftest import make_classification_data, make_mlp
from torch import nn

from landscape import fisher, objectives
from landscape.params import ParamMask, ParamSpace
from references import mean_sq, per_example_grads


def _element_mask(model: nn.Module) -> ParamMask:
    """Every other element of the first weight and the whole last bias (tensor 1 untouched)."""
    space = ParamSpace(model)
    w0, b_last = space.names[0], space.names[-1]
    m0 = torch.zeros(space.params[w0].numel(), dtype=torch.bool)
    m0[::2] = True
    return ParamMask(space, {w0: m0.view(space.params[w0].shape),
                             b_last: torch.ones_like(space.params[b_last], dtype=torch.bool)})


def test_mask_scores_equal_one_at_a_time_gradients_on_the_mask_and_zero_elsewhere():
    model, obj, data = make_mlp(), objectives.Criterion(nn.CrossEntropyLoss()), make_classification_data()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    mask = _element_mask(model)
    F = fisher.diagonal(model, obj, data, params=mask, progress=False)
    ref = mean_sq(per_example_grads(model, obj, data))  # float64, all tensors
    assert F.names == mask.names and F.space is not None and F.space.names == mask.names
    for n in mask.names:
        m = mask.masks[n]
        torch.testing.assert_close(F.scores[n][m], ref[n][m], rtol=1e-10, atol=1e-14)
        assert bool((F.scores[n][~m] == 0).all())
    assert F.meta["mask"]["n_selected"] == mask.count() and F.meta["mask"]["granularity"] == "element"
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_mask_of_another_model_is_refused():
    model, other = make_mlp(), make_mlp()
    with pytest.raises(ValueError, match="another model"):
        fisher.diagonal(model, objectives.Criterion(), make_classification_data(), params=_element_mask(other),
                        progress=False)


def test_distributed_false_ignores_a_torchrun_environment(monkeypatch):
    model, obj, data = make_mlp(), objectives.Criterion(), make_classification_data()
    ref = fisher.diagonal(model, obj, data, progress=False)
    monkeypatch.setenv("WORLD_SIZE", "2")  # as under torchrun, but no process group to join
    F = fisher.diagonal(model, obj, data, distributed=False, progress=False)
    assert F.meta["world_size"] == 1 and F.meta["n_examples"] == ref.meta["n_examples"]
    assert all(torch.equal(F.scores[n], ref.scores[n]) for n in ref.names)


class _CountingCriterion(objectives.Criterion):
    """Records what ``count`` answered, so the test sees the Fisher use it."""

    def __init__(self) -> None:
        super().__init__(nn.CrossEntropyLoss())
        self.answers: list[int] = []

    def count(self, prepared):
        n, terms = super().count(prepared)
        self.answers.append(n)
        return n, terms


def test_examples_are_counted_by_objective_count():
    model, obj = make_mlp(), _CountingCriterion()
    data = make_classification_data(n_batches=3, batch_size=4)
    F = fisher.diagonal(model, obj, data, max_examples=10, progress=False)
    assert obj.answers[:3] == [4, 4, 4]  # one answer per batch read (then the 4-D mask check's)
    assert F.meta["n_examples_read"] == 10 and F.meta["n_examples"] == 10


def test_restrict_keeps_the_scores_of_the_chosen_tensors():
    model, obj, data = make_mlp(), objectives.Criterion(), make_classification_data()
    F = fisher.diagonal(model, obj, data, progress=False)
    space = ParamSpace.from_names(model, [n for n, p in model.named_parameters() if p.ndim >= 2])
    R = F.restrict(space)
    assert R.names == space.names and R.space is space and R.convergence is None
    assert all(torch.equal(R.scores[n], F.scores[n]) for n in R.names)
    assert R.meta["restricted"] == {"names": space.names, "n_scored": len(F.names)}
    assert R.meta["estimator"] == F.meta["estimator"] and "restricted" not in F.meta
    top = R.mask(0.5)
    assert top.names and set(top.names) <= set(space.names) and top.count() == round(0.5 * space.dim)
    by_name = F.restrict(space.names)
    assert by_name.names == space.names and all(torch.equal(by_name.scores[n], R.scores[n]) for n in R.names)


def test_restrict_refuses_tensors_that_were_not_scored():
    model, obj, data = make_mlp(), objectives.Criterion(), make_classification_data()
    names = [n for n, _ in model.named_parameters()]
    F = fisher.diagonal(model, obj, data, params=names[:2], progress=False)
    with pytest.raises(ValueError, match="not scored.*params="):
        F.restrict(names)
    with pytest.raises(ValueError, match="another model"):
        F.restrict(ParamSpace(make_mlp()))
