"""apply/undo: exact restore (also after an exception), Gaussian noise in training only, unit masks."""

from __future__ import annotations

import math

import pytest
import torch
from dropout_helpers import make_model, token_batches

from landscape import dropout


def snapshot(model) -> dict:
    """Everything apply could touch: weights and buffers (bytes), every float attribute, hooks, modes."""
    state = {k: v.detach().clone().contiguous().view(torch.uint8) for k, v in model.state_dict().items()}
    floats = {(n, a): v for n, m in model.named_modules() for a, v in vars(m).items() if isinstance(v, float)}
    ids = {(n, a): id(v) for (n, a), v in floats.items()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())
    modes = [m.training for m in model.modules()]
    return {"state": state, "floats": floats, "ids": ids, "hooks": hooks, "modes": modes}


def assert_same(a: dict, b: dict) -> None:
    assert a["state"].keys() == b["state"].keys()
    assert all(torch.equal(a["state"][k], b["state"][k]) for k in a["state"])
    assert a["floats"] == b["floats"] and a["ids"] == b["ids"]
    assert a["hooks"] == b["hooks"] and a["modes"] == b["modes"]


def train_logits(model, seed: int = 0) -> torch.Tensor:
    model.train()
    torch.manual_seed(seed)
    with torch.no_grad():
        return model(**token_batches(1)[0]).logits


@pytest.mark.parametrize("arch", ["bert", "gpt2", "llama"])
@pytest.mark.parametrize("variant", [dict(), dict(noise="gaussian"), dict(granularity="unit")])
def test_apply_restores_bit_for_bit_also_after_an_exception(arch, variant):
    model = make_model(arch)
    sites = dropout.find_sites(model)
    rates = dropout.DropoutRates({s: 0.3 for s in sites.ids},
                                 unit_rates={s.id: torch.full((16,), 0.3, dtype=torch.float64) for s in sites
                                             if s.role != "attention_probs"})
    before, y0 = snapshot(model), train_logits(model)
    with dropout.apply(model, rates, **variant):
        assert snapshot(model)["floats"] != before["floats"]
        y1 = train_logits(model)
    assert not torch.equal(y0, y1)
    assert_same(before, snapshot(model))
    assert torch.equal(train_logits(model), y0)
    with pytest.raises(RuntimeError, match="boom"), dropout.apply(model, rates, **variant):
        train_logits(model)
        raise RuntimeError("boom")
    assert_same(before, snapshot(model))
    assert torch.equal(train_logits(model), y0)


def test_a_failing_set_rates_leaves_the_model_untouched():
    model = make_model("bert")
    before = snapshot(model)
    bad = {s: 0.1 for s in dropout.find_sites(model).ids}
    bad["layer.1.ffn_output"] = 1.0
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        dropout.set_rates(model, bad)
    assert_same(before, snapshot(model))


def test_gaussian_dropout_is_off_in_eval_and_has_bernoulli_variance_in_training():
    model = make_model("bert")
    sites = dropout.find_sites(model)
    p = 0.2
    batch = token_batches(1)[0]
    model.eval()
    with torch.no_grad():
        ref = model(**batch).logits
        with dropout.apply(model, {s: p for s in sites.ids}, noise="gaussian") as applied:
            assert torch.equal(model(**batch).logits, ref)  # the published baseline's bug: noise at eval
            assert applied.fallbacks == [s.id for s in sites if s.role == "attention_probs"]
            mod = model.bert.encoder.layer[0].output.dropout
            mod.train()
            x = torch.ones(200, 100)
            y = mod(x)
            mod.eval()
            assert torch.equal(mod(x), x)
    assert float((y - 1).var()) == pytest.approx(p / (1 - p), rel=0.05)
    assert float(y.mean()) == pytest.approx(1.0, abs=0.01)


def test_unit_masks_drop_each_unit_at_its_own_rate():
    model = make_model("bert")
    sites = dropout.find_sites(model)
    per_unit = torch.linspace(0.0, 0.6, 16, dtype=torch.float64)
    hidden = [s.id for s in sites if s.role != "attention_probs"]
    rates = dropout.DropoutRates({s: 0.1 for s in sites.ids}, unit_rates={s: per_unit for s in hidden})
    torch.manual_seed(0)
    with dropout.apply(model, rates, granularity="unit"):
        got = dropout.measure_rates(model, token_batches(6, batch=16))
    for sid in hidden:
        m = got[sid]
        q = m.unit_dropped / m.unit_total
        tol = 5 * torch.sqrt(per_unit * (1 - per_unit) / m.unit_total) + 1 / m.unit_total
        assert bool(((q - per_unit).abs() <= tol).all()), (sid, q, per_unit)
        assert q[0] == 0 and q[-1] > 0.45
    for s in sites:  # the kernel-internal sites keep Bernoulli dropout at the site rate
        if s.role == "attention_probs":
            assert abs(got[s.id].rate - 0.1) <= got[s.id].tolerance(p=0.1)


def test_unit_granularity_without_unit_rates_is_refused():
    model = make_model("bert")
    with pytest.raises(ValueError, match="per-unit rates"):
        dropout.set_rates(model, {s: 0.1 for s in dropout.find_sites(model).ids}, granularity="unit")


@pytest.mark.parametrize("bad", [1.0, -0.01, float("nan"), 1.5])
def test_rates_outside_the_unit_interval_get_a_one_line_error(bad):
    model = make_model("bert")
    rates = {s: 0.1 for s in dropout.find_sites(model).ids}
    rates["embedding"] = bad
    with pytest.raises(ValueError, match=r"outside \[0, 1\)") as exc:
        dropout.set_rates(model, rates)
    assert "\n" not in str(exc.value)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        dropout.DropoutRates(rates)
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        dropout.rank_linear({"a": 1.0, "b": 2.0}, p_max=bad if not math.isnan(bad) else float("nan"))


def test_rates_for_unknown_or_missing_sites_are_refused():
    model = make_model("bert")
    ids = dropout.find_sites(model).ids
    with pytest.raises(ValueError, match="does not have"):
        dropout.set_rates(model, {**{s: 0.1 for s in ids}, "layer.9.ffn_output": 0.1})
    with pytest.raises(ValueError, match="no rate for sites"):
        dropout.set_rates(model, {ids[0]: 0.1})
    applied = dropout.set_rates(model, {ids[0]: 0.2}, strict=False)
    assert model.bert.embeddings.dropout.p == 0.2
    applied.restore()
    applied.restore()  # idempotent
    assert model.bert.embeddings.dropout.p == 0.1


def test_rates_from_a_path_a_dropout_rates_or_the_dict_of_rates_json(tmp_path):
    import json

    model = make_model("bert")
    sites = dropout.find_sites(model)
    rates = dropout.DropoutRates({s: 0.05 * (i + 1) for i, s in enumerate(sites.ids)})
    path = rates.save(tmp_path / "rates.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == "landscape.dropout-rates/1"  # the key that used to be read as a site's rate
    before = snapshot(model)
    for given in (rates, path, str(path), doc):
        with dropout.apply(model, given) as applied:
            assert dropout.current_rates(model) == pytest.approx(rates.rates)
            assert applied.rates == pytest.approx(rates.rates)
        assert_same(before, snapshot(model))
    with pytest.raises(ValueError, match="format 'other/1'"):
        dropout.set_rates(model, {**doc, "format": "other/1"})
    with pytest.raises(FileNotFoundError):
        dropout.set_rates(model, tmp_path / "missing.json")
