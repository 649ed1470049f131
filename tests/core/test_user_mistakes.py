"""Silent wrong results the core must not give (issue 13, items 1-3): an MLM loss that depends on
batching, a mask of another model accepted, NaN weights turned into NaN results."""

from __future__ import annotations

import copy

import pytest
import torch

from conftest import make_mlp, make_tiny_bert, mlm_objective
from landscape import fisher, curvature, objectives, scans, sharpness
from landscape.scans import directions
from landscape.params import ParamMask, ParamSpace
from saved_models import make_tokenizer, tiny_texts


def _mixed_texts(n: int = 8) -> list[str]:
    words = " ".join(tiny_texts(40, seed=3)).split()
    return [" ".join(words[3 * i : 3 * i + 4 + 4 * (i % 6)]) for i in range(n)]  # 4 to 24 words


def _batches(tok, texts, batch_size):
    from landscape.models.checkpoints import texts_to_batches

    return texts_to_batches(tok, texts, max_length=32, batch_size=batch_size)


def test_mlm_loss_is_the_same_at_batch_sizes_1_3_and_8():
    """Defect (item 1): MaskedLM drew its random numbers over the padded batch length, so an
    example's mask changed with its batch-mates (5.6003 at batch size 8 against 5.6110 at 1)."""
    model = make_tiny_bert().eval()
    tok = make_tokenizer()
    obj = objectives.MaskedLM(mask_prob=0.3, seed=0, tokenizer=tok)
    texts = _mixed_texts()
    masks = {}
    for bs in (1, 3, 8):
        rows = []
        for b in _batches(tok, texts, bs):
            ids, labels = obj.mask_batch(b["input_ids"], b["attention_mask"], model)
            for i in range(ids.shape[0]):
                n = int(b["attention_mask"][i].sum())
                rows.append((ids[i, :n].tolist(), labels[i, :n].tolist()))
        masks[bs] = rows
    assert masks[1] == masks[3] == masks[8]
    losses = [obj.evaluate(model, _batches(tok, texts, bs)) for bs in (1, 3, 8)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-6) and losses[0] == pytest.approx(losses[2], rel=1e-6)


@pytest.fixture
def two_berts(mlm_batches):
    model = make_tiny_bert().eval()
    return model, copy.deepcopy(model), mlm_batches


@pytest.mark.parametrize("entry", ["average", "worst_case", "keskar", "hessian", "directions", "fisher"])
def test_every_entry_point_refuses_a_mask_of_another_model(two_berts, entry):
    """Defect (item 2): average_sharpness (and the worst-case variant) accepted a ParamMask built on
    a same-architecture copy and returned 0."""
    model, copy_, data = two_berts
    obj = mlm_objective()
    space = ParamSpace(copy_)
    mask = ParamMask.from_tensor_names(space, space.names[:3])
    call = {
        "average": lambda: sharpness.average_sharpness(model, obj, data, rho=0.01, num_samples=2, params=mask, progress=False),
        "worst_case": lambda: sharpness.worst_case_sharpness(model, obj, data, rho=0.01, steps=1, params=mask, progress=False),
        "keskar": lambda: sharpness.keskar_sharpness(model, obj, data, steps=1, params=mask, progress=False),
        "hessian": lambda: curvature.HessianOperator(model, obj, data, params=mask),
        "directions": lambda: directions.random(model, params=mask),
        "fisher": lambda: fisher.diagonal(model, obj, data, params=space, progress=False),
    }[entry]
    with pytest.raises(ValueError, match="another model"):
        call()


def _poison(model, name: str) -> None:
    with torch.no_grad():
        dict(model.named_parameters())[name][0].fill_(float("nan"))


NAN_TENSOR = "bert.encoder.layer.1.output.dense.weight"


@pytest.mark.parametrize("entry", ["fisher", "hessian", "directions", "scan", "average", "worst_case"])
def test_nan_weights_are_refused_naming_the_tensor(mlm_batches, entry):
    """Defect (item 3): fisher wrote all-NaN scores and exited 0; scan refused but blamed
    "direction 1". Every entry point checks the weights once and names the bad tensors."""
    model = make_tiny_bert().eval()
    obj = mlm_objective()
    d = directions.random(model, seed=0)  # made before the damage: the scan must blame the weights
    _poison(model, NAN_TENSOR)
    call = {
        "fisher": lambda: fisher.diagonal(model, obj, mlm_batches, progress=False),
        "hessian": lambda: curvature.HessianOperator(model, obj, mlm_batches),
        "directions": lambda: directions.random(model, seed=0),
        "scan": lambda: scans.scan_1d(model, obj, mlm_batches, d, [-1.0, 0.0, 1.0], progress=False),
        "average": lambda: sharpness.average_sharpness(model, obj, mlm_batches, rho=0.01, num_samples=2, progress=False),
        "worst_case": lambda: sharpness.worst_case_sharpness(model, obj, mlm_batches, rho=0.01, steps=1, progress=False),
    }[entry]
    with pytest.raises(ValueError, match="NaN or infinite weights.*" + NAN_TENSOR.replace(".", r"\.")):
        call()


def test_a_nan_loss_at_theta0_is_refused_by_fisher_and_sharpness():
    """Item 3, second half: finite weights but a non-finite loss at θ₀ (a NaN input) is refused
    before any estimate is made, instead of NaN scores."""
    model = make_mlp()
    x = torch.randn(4, 4, dtype=torch.float64)
    x[0, 0] = float("nan")
    data = [(x, torch.tensor([0, 1, 2, 0]))]
    obj = objectives.Criterion()
    with pytest.raises(ValueError, match="loss on the first batch is nan"):
        fisher.diagonal(model, obj, data, progress=False)
    with pytest.raises(ValueError, match="loss is nan"):
        sharpness.average_sharpness(model, obj, data, rho=0.01, num_samples=2, progress=False)
