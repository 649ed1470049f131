"""Site scores, the rank-linear and log-linear maps, the controls, unit rates, and the rates file."""

from __future__ import annotations

import json
import math

import pytest
import torch
from dropout_helpers import make_model, token_batches

from landscape import dropout, fisher, objectives


def test_rank_linear_is_the_papers_formula():
    scores = {"a": 3.0, "b": 1.0, "c": 5.0, "d": 2.0, "e": 4.0}
    got = dropout.rank_linear(scores, p_max=0.1, p_min=0.0)
    # r = 0 for the lowest score: p = 0.1 - 0.1 * r / 4
    assert got == pytest.approx({"b": 0.1, "d": 0.075, "a": 0.05, "e": 0.025, "c": 0.0}, abs=1e-15)
    got2 = dropout.rank_linear(scores, p_max=0.3, p_min=0.1)
    assert got2["b"] == pytest.approx(0.3) and got2["c"] == pytest.approx(0.1) and got2["a"] == pytest.approx(0.2)


def test_rank_linear_ties_share_a_rate_and_one_site_gets_p_max():
    got = dropout.rank_linear({"a": 1.0, "b": 1.0, "c": 2.0}, 0.1, 0.0)
    assert got["a"] == got["b"] == pytest.approx(0.075) and got["c"] == 0.0
    assert dropout.rank_linear({"x": 7.0}, 0.1, 0.0) == {"x": 0.1}


def test_log_linear_keeps_score_distances():
    got = dropout.log_linear({"a": 1e-6, "b": 1e-4, "c": 1e-2}, 0.1, 0.0)
    assert got["a"] == pytest.approx(0.1) and got["b"] == pytest.approx(0.05) and got["c"] == pytest.approx(0.0)
    got = dropout.log_linear({"a": 1e-6, "b": 1e-3, "c": 1e-2}, 0.1, 0.0)
    assert got["b"] == pytest.approx(0.1 - 0.1 * 3 / 4)  # not the rank-linear 0.05


def test_controls_keep_the_multiset_and_reverse_or_shuffle_the_order():
    scores = {f"s{i}": float(s) for i, s in enumerate([4, 1, 3, 7, 2, 6, 5])}
    guided = dropout.rank_linear(scores)
    rev = dropout.reversed_rates(guided, scores)
    assert sorted(rev.values()) == pytest.approx(sorted(guided.values()))
    hi, lo = max(scores, key=scores.get), min(scores, key=scores.get)
    assert rev[hi] == pytest.approx(0.1) and rev[lo] == pytest.approx(0.0)  # high Fisher gets high rate
    assert rev == pytest.approx(dropout.rank_linear({k: -v for k, v in scores.items()}))
    perms = [dropout.permuted_rates(guided, seed=s) for s in range(4)]
    assert all(sorted(p.values()) == pytest.approx(sorted(guided.values())) for p in perms)
    assert perms[0] == dropout.permuted_rates(guided, seed=0)
    assert len({tuple(p.values()) for p in perms}) > 1


def fake_fisher(model, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.rand(p.shape, generator=g) * (i + 1) for i, (n, p) in enumerate(model.named_parameters())}


def test_site_scores_mean_of_means_and_element_mean_by_hand():
    model = make_model("bert")
    F = fake_fisher(model)
    sites = dropout.find_sites(model)
    mom = dropout.site_scores(sites, F, "mean_of_means")
    em = dropout.site_scores(sites, F, "element_mean")
    s = sites["layer.0.attention_output"]
    assert mom[s.id] == pytest.approx(sum(float(F[p].double().mean()) for p in s.params) / len(s.params))
    assert em[s.id] == pytest.approx(sum(float(F[p].double().sum()) for p in s.params) / sum(F[p].numel() for p in s.params))
    assert mom[s.id] != pytest.approx(em[s.id])
    mx = dropout.site_scores(sites, F, "max_mean")
    assert mx[s.id] == pytest.approx(max(float(F[p].double().mean()) for p in s.params))


def test_unit_rates_average_to_the_site_rate_and_fall_with_unit_fisher():
    model = make_model("bert")
    F = fake_fisher(model)
    sites = dropout.find_sites(model)
    us = dropout.unit_scores(model, sites, F)
    assert "layer.0.attention_probs" not in us and set(us) == {s.id for s in sites if s.role != "attention_probs"}
    w = F["bert.encoder.layer.0.output.dense.weight"].double()  # Linear [out, in]: rows feed the units
    b = F["bert.encoder.layer.0.output.dense.bias"].double()
    lw, lb = F["bert.encoder.layer.0.output.LayerNorm.weight"].double(), F["bert.encoder.layer.0.output.LayerNorm.bias"].double()
    want = (w.sum(1) + b + lw + lb) / (w.shape[1] + 3)
    assert torch.allclose(us["layer.0.ffn_output"], want)
    ur = dropout.unit_rates(us, {k: 0.1 for k in us})
    for sid, r in ur.items():
        assert float(r.mean()) == pytest.approx(0.1, abs=1e-12)
        order = torch.argsort(us[sid])
        assert bool((r[order][1:] <= r[order][:-1] + 1e-15).all())  # higher unit Fisher, lower rate


def test_gpt2_unit_scores_read_conv1d_columns():
    model = make_model("gpt2")
    F = fake_fisher(model)
    us = dropout.unit_scores(model, dropout.find_sites(model), F)
    w, b = F["transformer.h.0.mlp.c_proj.weight"].double(), F["transformer.h.0.mlp.c_proj.bias"].double()  # [in, out]
    assert torch.allclose(us["layer.0.ffn_output"], (w.sum(0) + b) / (w.shape[0] + 1))


@pytest.fixture(scope="module")
def bert_and_fisher():
    model = make_model("bert").eval()
    obj = objectives.MaskedLM(mask_prob=0.3, seed=0, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    F = fisher.diagonal(model, obj, token_batches(2, batch=4, seq=12), estimator="empirical", seed=0)
    return model, F


def test_guided_rates_from_a_real_fisher_pass(bert_and_fisher):
    model, F = bert_and_fisher
    r = dropout.guided_rates(model, F, units=True)
    assert sorted(r.rates.values()) == pytest.approx([0.1 * k / 6 for k in range(7)])
    lowest = min(r.scores, key=r.scores.get)
    assert r.rates[lowest] == pytest.approx(0.1)
    assert r.meta["model_class"] == "BertForMaskedLM" and r.meta["fisher_fingerprint"] == dropout.fisher_fingerprint(F.scores)
    assert r.meta["fisher_model_fingerprint"] == F.meta["model_fingerprint"]
    assert set(r.unit_rates) == {s for s in r.rates if "attention_probs" not in s}


def test_rates_file_round_trip_and_applies_to_a_classifier(tmp_path, bert_and_fisher):
    model, F = bert_and_fisher
    r = dropout.guided_rates(model, F, units=True)
    path = r.save(tmp_path / "rates.json")
    doc = json.loads(path.read_text())
    assert doc["meta"]["fisher_fingerprint"] == r.meta["fisher_fingerprint"] and doc["meta"]["model_class"] == "BertForMaskedLM"
    clf = make_model("bert", head="cls")
    back = dropout.DropoutRates.load(path, model=clf)
    assert back.rates == r.rates and back.scores == r.scores
    assert all(torch.allclose(back.unit_rates[k], r.unit_rates[k].double(), atol=1e-8) for k in r.unit_rates)
    with dropout.apply(clf, back):
        assert dropout.current_rates(clf) == pytest.approx(r.rates)
        assert clf.dropout.p == 0.1  # the classifier's dropout keeps its default


def test_fingerprint_changes_with_the_scores(bert_and_fisher):
    _, F = bert_and_fisher
    other = {k: v.clone() for k, v in F.scores.items()}
    k0 = next(iter(other))
    other[k0].view(-1)[0] += 1.0
    assert dropout.fisher_fingerprint(other) != dropout.fisher_fingerprint(F.scores)
    assert math.isfinite(sum(dropout.site_scores(dropout.find_sites(_), F.scores).values()))
