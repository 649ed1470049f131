"""Fisher estimators against exact references on tiny float64 models."""

from __future__ import annotations

import pytest
import torch
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective
from torch import nn

from landscape import fisher, objectives, util, vectors
from references import dense_true_fisher, mean_sq, per_example_grads


def _assert_close(a, b, tol):
    assert a.keys() == b.keys()
    for n in a:
        err = (a[n] - b[n]).abs().max().item()
        scale = max(b[n].abs().max().item(), 1.0)
        assert err <= tol * scale, (n, err)


CASES = {
    "mlp": lambda: (make_mlp(), objectives.Criterion(nn.CrossEntropyLoss()), make_classification_data()),
    "bert": lambda: (make_tiny_bert(dtype=torch.float64), mlm_objective(), make_mlm_batches()),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("per_example", ["auto", "loop"])
def test_empirical_equals_one_at_a_time_autograd(case, per_example):
    model, obj, data = CASES[case]()
    F = fisher.diagonal(model, obj, data, estimator="empirical", chunk_size=4, per_example=per_example, progress=False)
    ref = mean_sq(per_example_grads(model, obj, data))
    _assert_close(F.scores, ref, 1e-10)
    assert F.meta["per_example"] == ("vmap" if per_example == "auto" else "loop")
    assert F.meta["n_examples"] == sum(len(b[0]) if isinstance(b, tuple) else len(b["input_ids"]) for b in data)


def test_bert_vmap_uses_4d_mask_and_tied_weight_once():
    model, obj, data = CASES["bert"]()
    F = fisher.diagonal(model, obj, data, progress=False)
    assert F.meta["hf_4d_mask"] is True and F.meta["per_example"] == "vmap"
    assert "cls.predictions.decoder.weight" not in F.scores
    assert F.meta["aliases"]["bert.embeddings.word_embeddings.weight"] == ["cls.predictions.decoder.weight"]


def test_batch_differs_from_empirical_exactly_as_formula():
    model, obj, data = CASES["bert"]()
    Fb = fisher.diagonal(model, obj, data, estimator="batch", progress=False)
    grads = per_example_grads(model, obj, data)
    # per batch: (Σ_i g_i)² / n_b, summed over batches, divided by N
    per_batch, i = [], 0
    with util.deterministic_eval(model):
        for batch in data:
            n_b = int((obj.term_counts(obj.prepare(batch, model)) > 0).sum())
            per_batch.append(grads[i : i + n_b])
            i += n_b
    N = len(grads)
    ref = {n: sum(sum(g[n] for g in gb) ** 2 / len(gb) for gb in per_batch) / N for n in grads[0]}
    _assert_close(Fb.scores, ref, 1e-10)
    Fe = fisher.diagonal(model, obj, data, estimator="empirical", progress=False)
    cross = {n: sum(sum(g[n] * h[n] for a, g in enumerate(gb) for b, h in enumerate(gb) if a != b) / len(gb)
                    - (1 - 1 / len(gb)) * sum(g[n] ** 2 for g in gb) for gb in per_batch) / N for n in grads[0]}
    _assert_close({n: Fb.scores[n] - Fe.scores[n] for n in cross}, cross, 1e-10)
    assert Fb.meta["biased"] is True and Fe.meta["biased"] is False


def test_exact_equalsdense_true_fisher():
    model, obj, data = CASES["mlp"]()
    F = fisher.diagonal(model, obj, data, estimator="exact", chunk_size=2, progress=False)
    _assert_close(F.scores, dense_true_fisher(model, data), 1e-10)
    F_loop = fisher.diagonal(model, obj, data, estimator="exact", per_example="loop", progress=False)
    _assert_close(F_loop.scores, F.scores, 1e-10)


def test_mc_converges_to_exact():
    """Relative L2 error of mc vs exact: below 5% with 4000 draws, and far below a 4-draw estimate."""
    model, obj, data = CASES["mlp"]()
    ex = vectors.to_flat(fisher.diagonal(model, obj, data, estimator="exact", progress=False).scores)

    def err(k):
        mc = fisher.diagonal(model, obj, data, estimator="mc", mc_samples=k, seed=1, chunk_size=12, progress=False)
        assert mc.meta["mc_samples"] == k
        return float((vectors.to_flat(mc.scores) - ex).norm() / ex.norm())

    e_small, e_big = err(4), err(4000)
    assert e_big < 0.05
    assert e_big < e_small / 4


def test_mc_loop_equals_vmap_and_is_seeded():
    model, obj, data = CASES["bert"]()
    a = fisher.diagonal(model, obj, data, estimator="mc", mc_samples=2, seed=3, progress=False)
    b = fisher.diagonal(model, obj, data, estimator="mc", mc_samples=2, seed=3, per_example="loop", progress=False)
    c = fisher.diagonal(model, obj, data, estimator="mc", mc_samples=2, seed=4, progress=False)
    _assert_close(a.scores, b.scores, 1e-10)
    assert not torch.allclose(vectors.to_flat(a.scores), vectors.to_flat(c.scores))


def test_all_ignored_example_contributes_zero_and_is_not_counted():
    model = make_tiny_bert(dtype=torch.float64)
    obj = objectives.HFLoss()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 40, (3, 10), generator=g)
    labels = torch.full_like(ids, -100)
    labels[0, [2, 5]] = ids[0, [2, 5]]
    labels[2, 7] = ids[2, 7]  # example 1: all -100
    full = [{"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": labels}]
    keep = torch.tensor([0, 2])
    reduced = [{k: v[keep] for k, v in full[0].items()}]
    F = fisher.diagonal(model, obj, full, progress=False)
    R = fisher.diagonal(model, obj, reduced, progress=False)
    assert F.meta["n_examples"] == 2 and F.meta["n_examples_read"] == 3 and F.meta["n_examples_empty"] == 1
    _assert_close(F.scores, R.scores, 1e-10)
    # masked tokens: the example's loss is the *sum* over its labelled tokens
    ref = mean_sq(per_example_grads(model, obj, full))
    _assert_close(F.scores, ref, 1e-10)


def test_max_examples_caps_examples_read():
    model, obj, data = CASES["mlp"]()
    F = fisher.diagonal(model, obj, data, max_examples=5, progress=False)
    ref = mean_sq(per_example_grads(model, obj, [data[0], (data[1][0][:1], data[1][1][:1])]))
    _assert_close(F.scores, ref, 1e-10)
    assert F.meta["n_examples"] == 5


def test_model_bit_identical_and_mode_restored():
    model, obj, data = CASES["bert"]()
    model.train()
    model.bert.encoder.layer[0].eval()
    before = util.weights_fingerprint(model)
    flags = [m.training for m in model.modules()]
    for est in ("empirical", "mc", "batch"):
        fisher.diagonal(model, obj, data, estimator=est, progress=False)
    assert util.weights_fingerprint(model) == before
    assert [m.training for m in model.modules()] == flags


class _Exploding(objectives.Criterion):
    def __init__(self):
        super().__init__(nn.CrossEntropyLoss())
        self.calls = 0

    def loss_terms(self, output, prepared):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("boom in the middle of the pass")
        return super().loss_terms(output, prepared)


def test_model_restored_when_pass_raises_midway():
    model, _, data = CASES["mlp"]()
    model.train()
    before = util.weights_fingerprint(model)
    with pytest.raises(RuntimeError, match="boom"):
        fisher.diagonal(model, _Exploding(), data, chunk_size=2, progress=False)
    assert util.weights_fingerprint(model) == before
    assert all(m.training for m in model.modules())


def test_params_selection_and_per_layer_groups():
    model, obj, data = CASES["bert"]()
    F = fisher.diagonal(model, obj, data, params="bert.encoder.*", progress=False)
    assert all(n.startswith("bert.encoder.") for n in F.names)
    full = fisher.diagonal(model, obj, data, progress=False)
    _assert_close(F.scores, {n: full.scores[n] for n in F.names}, 1e-12)
    layers = full.per_layer()
    assert list(layers) == ["embeddings", "layer.0", "layer.1", "head"]
    pt_sum = full.per_tensor("sum")
    group_sum = full.per_layer("sum")
    assert abs(sum(pt_sum.values()) - sum(group_sum.values())) < 1e-9 * sum(pt_sum.values())
    assert full.per_tensor("max")["cls.predictions.bias"] == pytest.approx(full.scores["cls.predictions.bias"].max().item())


def test_convergence_curves():
    model, obj, data = CASES["mlp"]()
    data = make_classification_data(n_batches=5, batch_size=8)
    F = fisher.diagonal(model, obj, data, progress=False)
    c = F.convergence
    assert c.n == [1, 2, 4, 8, 16, 32, 40]
    assert c.spearman[-1] == pytest.approx(1.0) and c.rel_change[-1] == 0.0
    assert all(-1 <= r <= 1 for r in c.spearman if r is not None)
    # the checkpoint at n equals a fresh estimate on the first n examples
    first16 = fisher.diagonal(model, obj, data, max_examples=16, progress=False)
    final = torch.tensor(list(F.per_tensor().values()), dtype=torch.float64)
    s16 = torch.tensor(list(first16.per_tensor().values()), dtype=torch.float64)
    assert c.rel_change[4] == pytest.approx(float((s16 - final).norm() / final.norm()), rel=1e-9)
    n95 = c.examples_to_reach(0.95)
    assert n95 is None or all(r >= 0.95 for n, r in zip(c.n, c.spearman) if n >= n95)
    assert c.examples_to_reach(-1.0) == 1
    assert fisher.diagonal(model, obj, data, convergence=[3, 10], progress=False).convergence.n == [3, 10, 40]
    assert fisher.diagonal(model, obj, data, convergence=False, progress=False).convergence is None
