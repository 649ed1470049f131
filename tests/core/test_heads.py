"""The labelled-position head against the full head: same per-example losses (1e-6) and gradients,
on five masked-LM architectures and on a causal LM, and under vmap (per-example Fisher)."""

from __future__ import annotations

import pytest
import torch
import transformers as T

from landscape import fisher, heads, objectives

COMMON = dict(vocab_size=60, hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
              max_position_embeddings=64)
ARCHS = {
    "bert": (T.BertConfig, T.BertForMaskedLM, COMMON),
    "roberta": (T.RobertaConfig, T.RobertaForMaskedLM, COMMON),
    "distilbert": (T.DistilBertConfig, T.DistilBertForMaskedLM,
                   dict(vocab_size=60, dim=16, n_layers=2, n_heads=2, hidden_dim=32, max_position_embeddings=64)),
    "electra": (T.ElectraConfig, T.ElectraForMaskedLM, {**COMMON, "embedding_size": 8}),
    "modernbert": (T.ModernBertConfig, T.ModernBertForMaskedLM,
                   {**COMMON, "global_attn_every_n_layers": 1, "local_attention": 8, "pad_token_id": 0,
                    "bos_token_id": 2, "eos_token_id": 3, "cls_token_id": 2, "sep_token_id": 3, "mask_token_id": 4}),
}


def build(arch: str) -> torch.nn.Module:
    cfg_cls, model_cls, kw = ARCHS[arch]
    torch.manual_seed(0)
    return model_cls(cfg_cls(**kw)).eval()


def batch(seed: int = 0, b: int = 3, t: int = 14):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 60, (b, t), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    am = torch.ones_like(ids)
    am[0, -4:] = 0
    ids[0, -4:] = 0
    return {"input_ids": ids, "attention_mask": am}


def mlm(head):
    obj = objectives.MaskedLM(mask_prob=0.3, seed=1, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    obj.labelled_head = head
    return obj


@pytest.mark.parametrize("arch", list(ARCHS))
def test_masked_head_loss_and_gradient_match_full_head(arch):
    model = build(arch)
    full_obj, head_obj = mlm(False), mlm(True)
    full, head = full_obj.prepare(batch(), model), head_obj.prepare(batch(), model)
    assert heads.HEAD_INDEX not in full and heads.HEAD_INDEX in head
    assert head[heads.HEAD_INDEX].shape[1] < full["labels"].shape[1]  # fewer positions projected
    out = head_obj.forward(model, head)
    assert out.logits.shape[1] == head[heads.HEAD_INDEX].shape[1]
    params = [p for p in model.parameters()]
    s_full, n_full = full_obj.loss_terms(full_obj.forward(model, full), full)
    s_head, n_head = head_obj.loss_terms(out, head)
    assert torch.equal(n_full, n_head)
    assert torch.allclose(s_head, s_full, rtol=1e-6, atol=1e-6)
    g_full = torch.autograd.grad(s_full.sum(), params, allow_unused=True, materialize_grads=True)
    g_head = torch.autograd.grad(head_obj.loss_terms(head_obj.forward(model, head), head)[0].sum(), params,
                                 allow_unused=True, materialize_grads=True)
    for a, b in zip(g_head, g_full):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-6)
    # the hook is gone afterwards: a plain call gives the full logits
    assert model(input_ids=full["input_ids"]).logits.shape[1] == full["labels"].shape[1]


def test_auto_verifies_and_fisher_is_unchanged():
    model = build("bert")
    auto = mlm("auto")
    prepared = auto.prepare(batch(), model)
    assert heads.HEAD_INDEX in prepared  # verified on this model, then used
    data = [batch(0), batch(1)]
    a = fisher.diagonal(model, mlm(False), data, progress=False, convergence=False)
    b = fisher.diagonal(model, auto, data, progress=False, convergence=False)
    for n in a.scores:
        assert torch.allclose(a.scores[n], b.scores[n], rtol=1e-4, atol=1e-9), n


def test_causal_lm_head_gathers_shifted_positions():
    torch.manual_seed(0)
    model = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=60, n_embd=16, n_layer=2, n_head=2, n_positions=32)).eval()
    b = batch()
    b["labels"] = b["input_ids"].clone()
    b["labels"][:, :9] = -100  # score only the tail: the head projects 5 of 14 positions
    full_obj, head_obj = objectives.CausalLM(), objectives.CausalLM()
    full_obj.labelled_head, head_obj.labelled_head = False, True
    full, head = full_obj.prepare(b, model), head_obj.prepare(b, model)
    assert head[heads.HEAD_INDEX].shape[1] == 5
    s_full = full_obj.loss_terms(full_obj.forward(model, full), full)[0]
    s_head = head_obj.loss_terms(head_obj.forward(model, head), head)[0]
    assert torch.allclose(s_head, s_full, rtol=1e-6, atol=1e-6)


def test_explicit_head_refused_without_output_embedding():
    obj = mlm(True)
    model = torch.nn.Linear(3, 3)
    model.config = T.BertConfig(vocab_size=60)
    with pytest.raises(ValueError, match="labelled_head=True"):
        obj.prepare(batch(), model)
