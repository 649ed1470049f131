"""Every architecture a user may bring, saved with ``save_pretrained`` and loaded back: the loss
matches ``model(**batch).loss``, the Fisher matches per-example gradients, and curvature, a scan
and the audit run (issue 13, "Done means")."""

from __future__ import annotations

import math

import pytest
import torch

import architectures as A
from landscape import fisher, curvature, objectives, scans
from landscape.models.checkpoints import load_checkpoint, texts_to_batches

ARCH_LIST = list(A.ARCHS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """arch -> (built model, checkpoint directory), each saved once for the module."""
    root = tmp_path_factory.mktemp("archs")
    return {arch: A.save_arch(arch, root / arch) for arch in ARCH_LIST}


def _target(arch: str, path):
    ck = load_checkpoint(path)
    labels = [y for _, y in A.labelled_rows(6)] if ck.task == "cls" else None
    data = texts_to_batches(ck.tokenizer, A.texts(6, lo=3, hi=10), max_length=16, batch_size=3, labels=labels)
    if ck.task == "mlm":
        obj: objectives.Objective = objectives.MaskedLM(mask_prob=0.4, seed=0, tokenizer=ck.tokenizer)
    elif ck.task == "causal":
        obj = objectives.CausalLM()
    else:
        obj = objectives.HFLoss()
    return ck, obj, data


@pytest.mark.parametrize("arch", ARCH_LIST)
def test_loads_from_directory_and_single_file_with_the_same_loss(saved, arch):
    """Defect (item 8): a single ``model.safetensors`` of RoBERTa, DistilBERT, ALBERT, ELECTRA and
    ModernBERT failed with "has no MLM head" (tied heads); a classifier failed as "no MLM head" (item 9)."""
    model, path = saved[arch]
    ck, obj, data = _target(arch, path)
    assert ck.task == A.ARCHS[arch]
    single = load_checkpoint(path / "model.safetensors")
    assert single.task == ck.task
    assert obj.evaluate(single.model, data) == obj.evaluate(ck.model, data) == obj.evaluate(model, data)


@pytest.mark.parametrize("arch", ARCH_LIST)
def test_loss_matches_the_models_own_loss(saved, arch):
    """The objective's loss on a prepared batch equals ``model(**batch).loss`` (labels included)."""
    ck, obj, data = _target(arch, saved[arch][1])
    for batch in data:
        prepared = obj.prepare(batch, ck.model)
        keys = ("input_ids", "attention_mask", "labels")
        with torch.no_grad():
            ref = ck.model(**{k: prepared[k] for k in keys}).loss
            got = obj.batch_loss(ck.model, batch)
        assert torch.isfinite(ref)
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)


def _reference_fisher(model, obj, data, names):
    """(1/N) Σᵢ (∇sᵢ)² by one autograd call per example (N: examples with a labelled term)."""
    params = dict(model.named_parameters())
    acc = {n: torch.zeros_like(params[n], dtype=torch.float64) for n in names}
    count = 0
    for batch in data:
        b = batch["input_ids"].shape[0]
        for i in range(b):
            row = {k: v[i : i + 1] for k, v in batch.items()}
            prepared = obj.prepare(row, model)
            s, n = obj.loss_terms(obj.forward(model, prepared), prepared)
            if int(n.sum()) == 0:
                continue
            grads = torch.autograd.grad(s.sum(), [params[k] for k in names], allow_unused=True)
            for k, g in zip(names, grads):
                if g is not None:
                    acc[k] += g.double() ** 2
            count += 1
    return {k: v / count for k, v in acc.items()}


@pytest.mark.parametrize("arch", ARCH_LIST)
def test_fisher_matches_per_example_gradients(saved, arch):
    """The vmapped Fisher (with its 4-D mask decision) equals squared per-example autograd gradients."""
    ck, obj, data = _target(arch, saved[arch][1])
    F = fisher.diagonal(ck.model, obj, data, progress=False, convergence=False)
    ref = _reference_fisher(ck.model.eval(), obj, data, list(F.scores))
    top = max(float(v.max()) for v in ref.values())
    assert top > 0
    for n, v in F.scores.items():
        torch.testing.assert_close(v.double(), ref[n], rtol=0, atol=2e-5 * top, msg=f"{arch} {n}")


@pytest.mark.filterwarnings("ignore:Lanczos did not reach")
@pytest.mark.parametrize("arch", ARCH_LIST)
def test_curvature_and_scan_run(saved, arch):
    """A Hessian operator (symmetric products, a top eigenvalue) and a 1D scan through θ₀."""
    ck, obj, data = _target(arch, saved[arch][1])
    op = curvature.HessianOperator(ck.model, obj, data)
    v, w = op.randn(1), op.randn(2)
    hv, hw = op.to_flat(op.matvec(v)).double(), op.to_flat(op.matvec(w)).double()
    a, b = float(hv @ op.to_flat(w).double()), float(hw @ op.to_flat(v).double())
    assert math.isclose(a, b, rel_tol=1e-3, abs_tol=1e-6)
    eig = curvature.top_eigenvalues(op, k=1, max_iter=3, tol=1e-1, progress=False)
    assert math.isfinite(float(eig.values[0]))
    from landscape.scans import directions

    d = directions.random(ck.model, seed=0)
    curve = scans.scan_1d(ck.model, obj, data, d, [-0.5, 0.0, 0.5], progress=False)
    assert curve.values["loss"][1] == pytest.approx(obj.evaluate(ck.model, data), rel=1e-6)


@pytest.mark.parametrize("arch", ARCH_LIST)
def test_audit_runs(saved, arch, tmp_path):
    """The audit on each architecture, at minimal settings; ALBERT's shared layer is its own block."""
    from analyses.audit import AuditConfig, run
    from analyses.common import Texts

    texts = Texts(A.texts(4, lo=3, hi=10))
    if A.ARCHS[arch] == "cls":
        texts.labels = [y for _, y in A.labelled_rows(4)]
    cfg = AuditConfig(checkpoint=str(saved[arch][1]), out=str(tmp_path / "audit"), fisher_examples=2, eval_examples=2,
                      texts=texts, max_length=16, points_1d=5, eig_max_iter=2, trace_matvecs=3, full_trace_matvecs=3,
                      avg_samples=1, worst_steps=1, block_curvature=False, progress=False)
    res = run(cfg)
    assert res.meta["restored"] is True
    assert math.isfinite(res.overall["loss0"]) and math.isfinite(res.overall["top_eigenvalue"])
    if arch == "albert":
        assert "layer.shared" in res.blocks and res.meta["block_notes"]["layer.shared"]
        assert not any("albert_layer" in t for t in res.blocks["head"]["tensors"])
