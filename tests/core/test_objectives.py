"""Objectives: determinism, weighting, batch formats, modes and -100 handling."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from conftest import MASK_ID, SPECIAL_IDS, make_mlm_batches, mlm_objective
from landscape import objectives


def test_masked_lm_same_loss_every_call_and_differs_by_seed(tiny_bert, mlm_batches):
    obj = mlm_objective(seed=0)
    a, b = obj.evaluate(tiny_bert, mlm_batches), obj.evaluate(tiny_bert, mlm_batches)
    assert a == b
    assert mlm_objective(seed=1).evaluate(tiny_bert, mlm_batches) != a


def test_masked_lm_masks_depend_on_example_not_batching(tiny_bert):
    batches = make_mlm_batches(n_batches=1, batch_size=4)
    obj = mlm_objective()
    whole = obj.prepare(batches[0], tiny_bert)
    single = [obj.prepare({k: v[i : i + 1] for k, v in batches[0].items()}, tiny_bert) for i in range(4)]
    assert torch.equal(whole["labels"], torch.cat([s["labels"] for s in single]))
    assert torch.equal(whole["input_ids"], torch.cat([s["input_ids"] for s in single]))
    # and the data loss does not depend on the batching
    split = [{k: v[:2] for k, v in batches[0].items()}, {k: v[2:] for k, v in batches[0].items()}]
    assert obj.evaluate(tiny_bert, batches) == pytest.approx(obj.evaluate(tiny_bert, split), rel=1e-6)


def test_masked_lm_never_masks_special_or_padding(tiny_bert):
    batch = make_mlm_batches(n_batches=1, batch_size=8, seq_len=16)[0]
    obj = objectives.MaskedLM(mask_prob=0.9, seed=3, mask_token_id=MASK_ID, special_token_ids=SPECIAL_IDS)
    p = obj.prepare(batch, tiny_bert)
    labelled = p["labels"] != -100
    assert labelled.any()
    assert not (labelled & (batch["attention_mask"] == 0)).any()
    assert not (labelled & torch.isin(batch["input_ids"], torch.tensor(SPECIAL_IDS))).any()
    # 80/10/10: most chosen positions become [MASK], some keep their token
    became_mask = (p["input_ids"] == MASK_ID) & labelled
    assert 0.6 < became_mask.sum() / labelled.sum() < 0.95


def test_mean_loss_is_token_weighted_like_hf(tiny_bert, mlm_batches):
    obj = mlm_objective()
    tiny_bert.eval()
    p = obj.prepare(mlm_batches[0], tiny_bert)
    hf = tiny_bert(**p).loss
    ours = obj.batch_loss(tiny_bert, mlm_batches[0])
    assert torch.allclose(hf, ours, rtol=1e-5)
    s = obj.per_example_losses(tiny_bert, mlm_batches[0])
    n = obj.term_counts(p)
    assert torch.allclose(s.sum() / n.sum(), ours, rtol=1e-5)


def test_all_ignored_example_carries_nothing(tiny_bert):
    batch = make_mlm_batches(n_batches=1, batch_size=2)[0]
    labels = batch["input_ids"].clone()
    labels[0] = -100
    obj = objectives.HFLoss()
    p = obj.prepare({**batch, "labels": labels}, tiny_bert)
    s, n = obj.loss_terms(tiny_bert(**{k: p[k] for k in ("input_ids", "attention_mask")}), p)
    assert s[0].item() == 0.0 and n[0].item() == 0
    assert n[1].item() == int((labels[1] != -100).sum())
    with pytest.raises(ValueError, match="no loss term"):
        obj.evaluate(tiny_bert, [{**batch, "labels": torch.full_like(labels, -100)}])


def test_evaluate_restores_mode_per_module(tiny_bert, mlm_batches):
    tiny_bert.train()
    tiny_bert.bert.embeddings.eval()  # a mixed state the caller chose
    mlm_objective().evaluate(tiny_bert, mlm_batches)
    assert tiny_bert.training and not tiny_bert.bert.embeddings.training
    assert tiny_bert.bert.encoder.training


def test_evaluate_is_deterministic_despite_dropout(tiny_bert, mlm_batches):
    tiny_bert.train()  # dropout 0.1 in the config
    obj = mlm_objective()
    assert obj.evaluate(tiny_bert, mlm_batches) == obj.evaluate(tiny_bert, mlm_batches)


def test_batch_formats_tuple_dict_batchencoding(tiny_bert, mlm_batches):
    from transformers import BatchEncoding

    obj = mlm_objective()
    b = mlm_batches[0]
    ref = obj.evaluate(tiny_bert, [b])
    assert obj.evaluate(tiny_bert, [BatchEncoding(b)]) == ref
    assert obj.evaluate(tiny_bert, [(b["input_ids"], b["attention_mask"])]) == ref


def test_one_shot_iterator_and_empty_data_refused(tiny_bert, mlm_batches):
    obj = mlm_objective()
    with pytest.raises(TypeError, match="one-shot iterator"):
        obj.evaluate(tiny_bert, iter(mlm_batches))
    with pytest.raises(TypeError, match="one-shot iterator"):
        obj.evaluate(tiny_bert, (b for b in mlm_batches))
    with pytest.raises(ValueError, match="empty"):
        obj.evaluate(tiny_bert, [])


def test_masked_lm_needs_mask_id(tiny_bert, mlm_batches):
    with pytest.raises(ValueError, match="MASK"):
        objectives.MaskedLM().evaluate(tiny_bert, mlm_batches)
    with pytest.raises(ValueError, match="mask_prob"):
        objectives.MaskedLM(mask_prob=1.5)


def test_criterion_matches_loss_fn_and_is_example_weighted(mlp, cls_data):
    obj = objectives.Criterion(nn.CrossEntropyLoss())
    x, y = cls_data[0]
    assert torch.allclose(obj.batch_loss(mlp, (x, y)), nn.functional.cross_entropy(mlp(x), y), rtol=1e-12)
    per = obj.per_example_losses(mlp, (x, y))
    ref = torch.stack([nn.functional.cross_entropy(mlp(x[i : i + 1]), y[i : i + 1]) for i in range(len(y))])
    assert torch.allclose(per, ref, rtol=1e-12)
    # a generic callable takes the one-example-at-a-time path and agrees
    generic = objectives.Criterion(lambda out, t: nn.functional.cross_entropy(out, t))
    assert torch.allclose(generic.per_example_losses(mlp, (x, y)), ref, rtol=1e-12)
    whole = torch.cat([b[0] for b in cls_data]), torch.cat([b[1] for b in cls_data])
    with torch.no_grad():
        ref_all = float(nn.functional.cross_entropy(mlp(whole[0]), whole[1]))
    assert obj.evaluate(mlp, cls_data) == pytest.approx(ref_all, rel=1e-12)


def test_criterion_follows_model_dtype(mlp):
    x = torch.randn(3, 4, dtype=torch.float32)
    y = torch.tensor([0, 1, 2])
    assert objectives.Criterion().prepare((x, y), mlp)["inputs"].dtype == torch.float64


def test_criterion_rejects_bad_batches(mlp):
    with pytest.raises(TypeError, match="inputs, targets"):
        objectives.Criterion().prepare({"x": 1}, mlp)


def test_causal_lm_shifts_like_hf():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()
    ids = torch.randint(0, 30, (2, 8))
    am = torch.ones_like(ids)
    am[1, 5:] = 0
    obj = objectives.CausalLM()
    labels = ids.clone()
    labels[am == 0] = -100
    hf = model(input_ids=ids, attention_mask=am, labels=labels).loss
    assert torch.allclose(obj.batch_loss(model, {"input_ids": ids, "attention_mask": am}), hf, rtol=1e-5)
    hf_obj = objectives.HFLoss()
    assert torch.allclose(hf_obj.batch_loss(model, {"input_ids": ids, "attention_mask": am, "labels": labels}), hf, rtol=1e-5)
    assert hf_obj.shifts(hf_obj.prepare({"input_ids": ids, "labels": labels}, model))


def test_hfloss_decides_the_shift_per_model_without_remembering_the_last_one(tiny_bert, mlm_batches):
    """Defect: HFLoss.prepare used to set self.shift_labels, so a causal model seen once made every
    later masked-LM batch shift its labels."""
    from transformers import GPT2Config, GPT2LMHeadModel

    obj = objectives.HFLoss()
    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=40, n_embd=16, n_layer=1, n_head=2, n_positions=16)).eval()
    ids = torch.randint(5, 40, (2, 8))
    assert obj.shifts(obj.prepare({"input_ids": ids, "labels": ids}, gpt))
    batch = mlm_objective().prepare(mlm_batches[0], tiny_bert)
    bert_batch = {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}
    prepared = obj.prepare(bert_batch, tiny_bert)
    assert not obj.shifts(prepared) and obj.shift_labels is None
    tiny_bert.eval()
    want = tiny_bert(**bert_batch).loss
    assert torch.allclose(obj.batch_loss(tiny_bert, bert_batch), want, rtol=1e-5)


def test_weighted_criterion_terms_are_each_examples_own_loss():
    """Defect: with class weights the vectorised path returned w_y·ℓᵢ, not loss_fn on example i alone."""
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 2, 1, 0])
    loss_fn = nn.CrossEntropyLoss(weight=torch.tensor([0.2, 1.0, 5.0]))
    obj = objectives.Criterion(loss_fn)
    prepared = obj.prepare((x, y), model)
    s, n = obj.loss_terms(obj.forward(model, prepared), prepared)
    alone = torch.stack([loss_fn(model(x[i : i + 1]), y[i : i + 1]) for i in range(6)])
    assert torch.allclose(s, alone) and n.tolist() == [1] * 6
    assert not torch.allclose(s, nn.CrossEntropyLoss(weight=loss_fn.weight, reduction="none")(model(x), y))


def test_hfloss_requires_labels(tiny_bert, mlm_batches):
    with pytest.raises(ValueError, match="labels"):
        objectives.HFLoss().prepare(mlm_batches[0], tiny_bert)
