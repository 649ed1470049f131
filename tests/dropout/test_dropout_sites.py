"""Dropout sites by name and role on every supported architecture, checked by measuring the realized
drop rate of each site in a train-mode forward (eager attention, so kernel-internal dropout shows)."""

from __future__ import annotations

import pytest
import torch
from dropout_helpers import ARCHS, make_model, token_batches
from torch import nn

from landscape import dropout

EXPECTED_ROLES = {
    "bert": {"embedding", "attention_probs", "attention_output", "ffn_output"},
    "roberta": {"embedding", "attention_probs", "attention_output", "ffn_output"},
    "electra": {"embedding", "attention_probs", "attention_output", "ffn_output"},
    "deberta-v2": {"embedding", "attention_probs", "attention_output", "ffn_output", "relative_position", "conv"},
    "distilbert": {"embedding", "attention_probs", "ffn_output"},
    "albert": {"embedding", "attention_probs", "attention_output"},
    "gpt2": {"embedding", "attention_probs", "attention_output", "ffn_output"},
    "llama": {"attention_probs"},
    "qwen2": {"attention_probs"},
}


def distinct_rates(sites) -> dict[str, float]:
    """A different rate at every site (0.05, 0.13, ...), so a rate landing on the wrong site shows."""
    return {sid: round(0.05 + 0.08 * i, 4) for i, sid in enumerate(sites.ids)}


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("head", ["lm", "cls"])
def test_realized_rate_matches_assigned_rate_at_every_site(arch, head):
    model = make_model(arch, head=head)
    sites = dropout.find_sites(model)
    assert {s.role for s in sites} == EXPECTED_ROLES[arch]
    rates = distinct_rates(sites)
    torch.manual_seed(0)
    with dropout.apply(model, rates):
        got = dropout.measure_rates(model, token_batches(3))
    assert set(got) == set(sites.ids)
    for sid, m in got.items():
        assert m.calls > 0, f"{arch}: site {sid} never dropped anything"
        assert m.total > 500
        assert abs(m.rate - rates[sid]) <= m.tolerance(z=5.0, p=rates[sid]), (arch, sid, m.rate, rates[sid])


def test_sites_map_to_the_papers_tensors_for_bert():
    sites = dropout.find_sites(make_model("bert"))
    g = {s.id: set(s.params) for s in sites}
    assert g["embedding"] == {f"bert.embeddings.{n}" for n in (
        "word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight", "LayerNorm.weight", "LayerNorm.bias")}
    assert g["layer.1.attention_probs"] == {f"bert.encoder.layer.1.attention.self.{m}.{w}" for m in ("query", "key", "value")
                                            for w in ("weight", "bias")}
    assert g["layer.0.attention_output"] == {f"bert.encoder.layer.0.attention.output.{m}.{w}" for m in ("dense", "LayerNorm")
                                             for w in ("weight", "bias")}
    assert g["layer.0.ffn_output"] == {f"bert.encoder.layer.0.output.{m}.{w}" for m in ("dense", "LayerNorm")
                                       for w in ("weight", "bias")}
    assert len(sites) == 1 + 3 * 2


def test_site_ids_are_the_same_for_lm_and_classifier_heads_and_head_dropout_is_left_out():
    lm, clf = dropout.find_sites(make_model("bert")), dropout.find_sites(make_model("bert", head="cls"))
    assert lm.ids == clf.ids
    assert clf.head == ["dropout"] and lm.head == []


def test_albert_sites_serve_every_depth_and_its_dead_dropout_is_reported():
    model = make_model("albert")
    sites = dropout.find_sites(model)
    shared = [s for s in sites if s.role != "embedding"]
    assert shared and all(s.depths == (0, 1) and s.shared for s in shared)
    assert not sites["embedding"].shared
    assert [p for p, _ in sites.unmatched] == ["albert.encoder.albert_layer_groups.0.albert_layers.0.dropout"]
    with dropout.apply(model, distinct_rates(sites)):
        got = dropout.measure_rates(model, token_batches(1))
    assert all(got[s.id].calls == 2 for s in shared)  # one module, called at both depths


def test_llama_attention_rate_is_a_float_attribute_read_at_call_time():
    model = make_model("llama")
    sites = dropout.find_sites(model)
    assert all(s.kind == "attribute" and s.attr == "attention_dropout" for s in sites)
    with dropout.apply(model, {s: 0.4 for s in sites.ids}):
        assert model.model.layers[0].self_attn.attention_dropout == 0.4
        got = dropout.measure_rates(model, token_batches(2))
    assert model.model.layers[0].self_attn.attention_dropout == 0.1
    assert all(abs(m.rate - 0.4) <= m.tolerance(p=0.4) for m in got.values())


def test_index_based_selection_sets_rates_on_the_wrong_modules_and_the_measurement_catches_it():
    """The authors' code picks dropout modules by index in model.modules(). Indices taken from a
    module list without per-layer activation modules (older transformers) point elsewhere now."""
    model = make_model("bert")
    assert len(dropout.find_sites(model)) == 7
    old_list = [m for m in model.modules() if "Activation" not in type(m).__name__]
    old_idx = [i for i, m in enumerate(old_list) if isinstance(m, nn.Dropout)]
    mods = list(model.modules())
    for i in old_idx:
        mods[i].p = 0.5  # silently sets an attribute on whatever module sits there now
    got = dropout.measure_rates(model, token_batches(2))
    wrong = [sid for sid, m in got.items() if abs(m.rate - 0.5) > m.tolerance(p=0.5)]
    assert wrong, "index-based rates all landed on the right sites: the test no longer shows the failure"


def test_measurement_flags_a_rate_nobody_reads():
    model = make_model("bert")
    assert "layer.0.attention_probs" in dropout.find_sites(model).ids
    model.bert.embeddings.dropout = nn.Dropout(0.3)  # fresh module, used
    model.bert.encoder.layer[0].attention.self.dropout.p = 0.0
    got = dropout.measure_rates(model, token_batches(2))
    assert got["embedding"].ok() and abs(got["embedding"].rate - 0.3) < 0.05
    assert got["layer.0.attention_probs"].dropped == 0


def test_measure_restores_mode_and_attention_implementation():
    model = make_model("bert").eval()
    impl = model.config._attn_implementation
    f = torch.nn.functional.dropout
    dropout.measure_rates(model, token_batches(1))
    assert not model.training and model.config._attn_implementation == impl
    assert torch.nn.functional.dropout is f
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_a_model_without_dropout_sites_is_refused_in_one_line():
    from transformers import MambaConfig, MambaForCausalLM

    model = MambaForCausalLM(MambaConfig(vocab_size=48, hidden_size=16, state_size=4, num_hidden_layers=1))
    with pytest.raises(ValueError, match="has no dropout sites") as exc:
        dropout.find_sites(model)
    assert "\n" not in str(exc.value)


@pytest.mark.parametrize("arch", ["bert", "gpt2", "qwen2"])
def test_sdpa_kernel_receives_each_attention_sites_rate(arch, monkeypatch):
    """On the default (SDPA) path no hook can see the attention dropout: check the dropout_p the kernel gets."""
    model = make_model(arch).train()
    assert model.config._attn_implementation == "sdpa"
    sites = dropout.find_sites(model)
    rates = distinct_rates(sites)
    seen: list[float] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kw):
        seen.append(float(kw.get("dropout_p", 0.0)))
        return real(*args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    with dropout.apply(model, rates), torch.no_grad():
        model(**token_batches(1)[0])
    want = [rates[s.id] for s in sites if s.role == "attention_probs"]
    assert seen == pytest.approx(want)
