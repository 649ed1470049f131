"""The Fisher of the summed vs the mean token loss per example, against one-at-a-time float64
gradients on a tiny BERT MLM whose examples have 1, several and no labelled tokens."""

from __future__ import annotations

import pytest
import torch
from conftest import make_tiny_bert

from landscape import fisher, objectives, util
from landscape.params import ParamSpace

#: Labelled positions per example: 1, 4, 2, none (not counted) and 3; two batches.
LABELLED = [[3], [1, 2, 5, 7], [4, 6], [], [2, 3, 8]]


def _data(batch_sizes=(3, 2), seq_len: int = 10) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 40, (len(LABELLED), seq_len), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    attn = torch.ones_like(ids)
    attn[2, 8:] = 0  # one padded example
    ids[2, 8:] = 0
    labels = torch.full_like(ids, -100)
    for i, pos in enumerate(LABELLED):
        labels[i, pos] = ids[i, pos]
        ids[i, pos] = 4  # [MASK]
    out, start = [], 0
    for b in batch_sizes:
        rows = slice(start, start + b)
        out.append({"input_ids": ids[rows], "attention_mask": attn[rows], "labels": labels[rows]})
        start += b
    return out


def _reference(model, obj, data, example_loss: str) -> dict[str, torch.Tensor]:
    """(1/N) Σᵢ (∇ℓᵢ)² by plain autograd, one example at a time (ℓᵢ = sᵢ or sᵢ/nᵢ)."""
    space = ParamSpace(model)
    acc = {n: torch.zeros_like(p) for n, p in space.params.items()}
    n_ex = 0
    with util.deterministic_eval(model):
        for batch in data:
            for i in range(batch["input_ids"].shape[0]):
                ex = obj.prepare({k: v[i:i + 1] for k, v in batch.items()}, model)
                s, n = obj.loss_terms(obj.forward(model, ex), ex)
                if int(n[0]) == 0:
                    continue
                loss = s[0] if example_loss == "sum" else s[0] / n[0]
                for name, g in zip(space.names, torch.autograd.grad(loss, list(space.params.values()))):
                    acc[name] += g * g
                n_ex += 1
    return {k: v / n_ex for k, v in acc.items()}


def _close(a, b, tol=1e-10):
    assert a.keys() == b.keys()
    for n in a:
        scale = max(float(b[n].abs().max()), 1e-30)
        assert float((a[n] - b[n]).abs().max()) <= tol * scale, n


@pytest.fixture(scope="module")
def setup():
    return make_tiny_bert(dtype=torch.float64), objectives.HFLoss(), _data()


@pytest.mark.parametrize("per_example", ["vmap", "loop"])
@pytest.mark.parametrize("example_loss", ["sum", "mean"])
def test_empirical_matches_one_at_a_time_gradients(setup, example_loss, per_example):
    model, obj, data = setup
    F = fisher.diagonal(model, obj, data, per_example=per_example, example_loss=example_loss, chunk_size=2,
                        progress=False)
    _close(F.scores, _reference(model, obj, data, example_loss))
    assert F.meta["example_loss"] == example_loss and F.meta["settings"]["example_loss"] == example_loss
    assert F.meta["n_examples"] == 4 and F.meta["n_examples_empty"] == 1
    assert F.meta["per_example"] == per_example


def test_sum_and_mean_differ_by_more_than_a_constant(setup):
    model, obj, data = setup
    s = fisher.diagonal(model, obj, data, progress=False).scores
    m = fisher.diagonal(model, obj, data, example_loss="mean", progress=False).scores
    ratios = torch.cat([(s[n] / m[n]).flatten() for n in s if (m[n] > 0).all()])
    assert float(ratios.min()) >= 1.0 - 1e-9  # every nᵢ ≥ 1: the sum weights each example at least as much
    assert float(ratios.max() / ratios.min()) > 1.5  # weights nᵢ² ∈ {1, 4, 9, 16}: not one rescaling


def test_batch_estimator_uses_the_mean_loss(setup):
    model, obj, data = setup
    Fb = fisher.diagonal(model, obj, data, estimator="batch", example_loss="mean", progress=False)
    space = ParamSpace(model)
    acc = {n: torch.zeros_like(p) for n, p in space.params.items()}
    with util.deterministic_eval(model):
        for batch in data:
            prepared = obj.prepare(batch, model)
            s, n = obj.loss_terms(obj.forward(model, prepared), prepared)
            total = (s / n.clamp_min(1)).sum()
            n_b = int((n > 0).sum())
            for name, g in zip(space.names, torch.autograd.grad(total, list(space.params.values()))):
                acc[name] += g * g / n_b
    _close(Fb.scores, {k: v / 4 for k, v in acc.items()})


@pytest.mark.parametrize("estimator", ["mc", "exact"])
def test_mc_and_exact_mean_divide_each_example_by_its_count_squared(estimator):
    model = make_tiny_bert(dtype=torch.float64, hidden=8, layers=1)
    obj = objectives.HFLoss()
    rows = [{k: v[i:i + 1] for k, v in _data((5,))[0].items()} for i in (1, 4)]  # 4 and 3 labelled tokens
    kw = {"estimator": estimator, "mc_samples": 3, "progress": False, "convergence": False}
    # one example: the mean-loss Fisher is the summed-loss one over n² (mc: the same seeded label draws)
    for row, n in zip(rows, (4, 3)):
        one_sum = fisher.diagonal(model, obj, [row], **kw).scores
        _close(fisher.diagonal(model, obj, [row], example_loss="mean", **kw).scores,
               {k: v / n**2 for k, v in one_sum.items()}, 1e-9)
    if estimator == "exact":  # two examples in one batch: the average of the two weighted contributions
        both = [{k: torch.cat([r[k] for r in rows]) for k in rows[0]}]
        parts = [fisher.diagonal(model, obj, [r], **kw).scores for r in rows]
        _close(fisher.diagonal(model, obj, both, example_loss="mean", **kw).scores,
               {k: (parts[0][k] / 16 + parts[1][k] / 9) / 2 for k in parts[0]}, 1e-9)


def test_unknown_example_loss_is_refused(setup):
    model, obj, data = setup
    with pytest.raises(ValueError, match="example_loss must be 'sum'"):
        fisher.diagonal(model, obj, data, example_loss="token", progress=False)  # type: ignore[arg-type]
