"""FisherDiagonal: masks, files, and the bad inputs of the Fisher entry points."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_classification_data, make_mlm_batches, make_mlp, make_tiny_bert, mlm_objective
from torch import nn

from landscape import fisher, objectives
from landscape.fisher.result import layer_group


@pytest.fixture(scope="module")
def bert_fisher():
    model = make_tiny_bert(dtype=torch.float64)
    return model, fisher.diagonal(model, mlm_objective(), make_mlm_batches(), progress=False)


@pytest.fixture(scope="module")
def mlp_fisher():
    model = make_mlp()
    return model, fisher.diagonal(model, objectives.Criterion(), make_classification_data(), progress=False)


@pytest.mark.parametrize("fraction", [1e-3, 0.1, 0.5, 1.0])
def test_element_masks_have_matched_sizes(bert_fisher, fraction):
    _, F = bert_fisher
    dim = sum(s.numel() for s in F.scores.values())
    k = max(1, round(fraction * dim))
    masks = {w: F.mask(fraction, which=w, seed=1) for w in ("top", "bottom", "random")}
    assert {w: m.count() for w, m in masks.items()} == {"top": k, "bottom": k, "random": k}
    flat = torch.cat([s.reshape(-1) for s in F.scores.values()])
    sel_top = torch.cat([masks["top"].masks.get(n, torch.zeros_like(s, dtype=torch.bool)).reshape(-1) for n, s in F.scores.items()])
    sel_bot = torch.cat([masks["bottom"].masks.get(n, torch.zeros_like(s, dtype=torch.bool)).reshape(-1) for n, s in F.scores.items()])
    if fraction < 1.0:
        assert flat[sel_top].min() >= flat[~sel_top].max()
        assert flat[sel_bot].max() <= flat[~sel_bot].min()
    assert masks["top"].meta["k"] == k and masks["top"].meta["which"] == "top"


def test_mask_ties_are_deterministic_and_exact_in_count(mlp_fisher):
    model, F = mlp_fisher
    flat = fisher.FisherDiagonal(scores={n: torch.zeros_like(s) for n, s in F.scores.items()}, meta=F.meta, space=F.space)
    m1, m2 = flat.mask(0.3), flat.mask(0.3)
    assert m1.count() == m2.count() == round(0.3 * sum(s.numel() for s in F.scores.values()))
    assert all(torch.equal(m1.masks[n], m2.masks[n]) for n in m1.masks)
    # ties go to the earliest elements
    assert m1.names[0] == "0.weight" and bool(m1.masks["0.weight"].reshape(-1)[0])


@pytest.mark.parametrize("fraction", [0.2, 0.5, 1.0])
def test_tensor_masks_have_matched_sizes(bert_fisher, fraction):
    _, F = bert_fisher
    k = max(1, round(fraction * len(F.scores)))
    masks = {w: F.mask(fraction, which=w, granularity="tensor", seed=2) for w in ("top", "bottom", "random")}
    assert all(len(m.names) == k and m.granularity == "tensor" for m in masks.values())
    means = F.per_tensor("mean")
    worst_top = min(means[n] for n in masks["top"].names)
    assert all(means[n] <= worst_top for n in means if n not in masks["top"].names)


@pytest.mark.parametrize("bad", [0, 0.0, -0.1, 1.5, float("nan")])
def test_fraction_outside_unit_interval_is_refused(mlp_fisher, bad):
    _, F = mlp_fisher
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        F.mask(bad)


def test_save_load_round_trips_bit_for_bit(bert_fisher, tmp_path):
    model, F = bert_fisher
    path = F.save(tmp_path / "scores")
    assert path.name == "scores.safetensors" and (tmp_path / "scores.json").is_file()
    G = fisher.FisherDiagonal.load(tmp_path / "scores", model=model)
    assert G.names == F.names
    assert all(torch.equal(G.scores[n], F.scores[n]) and G.scores[n].dtype == F.scores[n].dtype for n in F.names)
    assert G.meta == json.loads(json.dumps(F.meta))
    assert G.convergence == F.convergence
    assert G.mask(0.1).count() == F.mask(0.1).count()
    H = fisher.FisherDiagonal.load(path)  # without a model: scores, but no masks
    assert all(torch.equal(H.scores[n], F.scores[n]) for n in F.names)
    with pytest.raises(ValueError, match="without a model"):
        H.mask(0.1)
    meta = json.loads((tmp_path / "scores.json").read_text())["meta"]
    for key in ("estimator", "n_examples", "model_fingerprint", "versions", "settings", "model"):
        assert key in meta
    assert meta["settings"]["seed"] == 0 and meta["model"]["fingerprint"] == meta["model_fingerprint"]


def test_loading_scores_for_a_different_model_is_refused(bert_fisher, tmp_path):
    _, F = bert_fisher
    F.save(tmp_path / "scores")
    other = make_tiny_bert(dtype=torch.float64, hidden=8)
    with pytest.raises(ValueError, match="different model"):
        fisher.FisherDiagonal.load(tmp_path / "scores", model=other)
    with pytest.raises(FileNotFoundError, match="no Fisher scores"):
        fisher.FisherDiagonal.load(tmp_path / "missing")


def test_unknown_estimator_is_refused():
    with pytest.raises(ValueError, match="unknown Fisher estimator 'kfac'.*empirical, mc, exact, batch"):
        fisher.diagonal(make_mlp(), objectives.Criterion(), make_classification_data(), estimator="kfac")


def test_exact_refuses_huge_output_space():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5000)).double()
    data = [(torch.randn(2, 4, dtype=torch.float64), torch.tensor([1, 2]))]
    with pytest.raises(ValueError, match="exact.*5000.*exact_limit=4096.*'mc'"):
        fisher.diagonal(model, objectives.Criterion(), data, estimator="exact", progress=False)


def test_mc_needs_categorical_predictions():
    data = [(torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 3, dtype=torch.float64))]
    with pytest.raises(ValueError, match="categorical predictions"):
        fisher.diagonal(make_mlp(), objectives.Criterion(nn.MSELoss()), data, estimator="mc", progress=False)


def test_zero_examples_are_refused():
    model, obj = make_mlp(), objectives.Criterion()
    with pytest.raises(ValueError, match="max_examples must be at least 1"):
        fisher.diagonal(model, obj, make_classification_data(), max_examples=0)
    with pytest.raises(ValueError, match="empty"):
        fisher.diagonal(model, obj, [], progress=False)
    bert = make_tiny_bert(dtype=torch.float64)
    ids = torch.randint(5, 40, (2, 6))
    unlabelled = [{"input_ids": ids, "labels": torch.full_like(ids, -100)}]
    with pytest.raises(ValueError, match="no example with a labelled term"):
        fisher.diagonal(bert, objectives.HFLoss(), unlabelled, progress=False)


@pytest.mark.parametrize("kw,msg", [({"mc_samples": 0}, "mc_samples"), ({"chunk_size": 0}, "chunk_size"),
                                    ({"per_example": "fast"}, "per_example")])
def test_other_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        fisher.diagonal(make_mlp(), objectives.Criterion(), make_classification_data(), **kw)


def test_layer_groups():
    assert layer_group("bert.encoder.layer.3.attention.self.query.weight") == "layer.3"
    assert layer_group("transformer.h.11.mlp.c_fc.weight") == "layer.11"
    assert layer_group("bert.embeddings.word_embeddings.weight") == "embeddings"
    assert layer_group("transformer.wte.weight") == "embeddings"
    assert layer_group("cls.predictions.transform.dense.weight") == "head"
