"""CurvatureCallback inside a real ``transformers.Trainer`` on a tiny BERT (CPU, a few steps)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_mlm_batches, make_tiny_bert, mlm_objective
from landscape.training import QUANTITIES, CurvatureCallback, CurvatureTracker, first_step, read_measurements

pytest.importorskip("accelerate")


def _trainer(model, tmp_path, steps: int = 6, batch: int = 4):
    from transformers import Trainer, TrainingArguments

    train = [{"input_ids": ids, "attention_mask": am, "labels": ids.clone()}
             for b in make_mlm_batches(n_batches=4, batch_size=4, seed=1) for ids, am in zip(b["input_ids"], b["attention_mask"])]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=batch,
                             learning_rate=1e-3, logging_steps=3, report_to=[], save_strategy="no", use_cpu=True,
                             seed=0, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=train)


def _tracker(model, path, quantities=("top_eigenvalue", "loss_rise")):
    tracker = CurvatureTracker(model, mlm_objective(), make_mlm_batches(n_batches=1, batch_size=3), path=path,
                               quantities=quantities, trace_matvecs=6, eig_tol=1e-2)
    tracker.hvp_mode = "double_backward"  # skip the one-off timing of both HVP modes
    return tracker


@pytest.mark.slow
def test_trainer_logs_measurements_and_file(tmp_path):
    model = make_tiny_bert()
    trainer = _trainer(model, tmp_path)
    cb = CurvatureCallback(_tracker(model, tmp_path / "c.jsonl", QUANTITIES), every=3).attach(trainer)
    trainer.train()
    curv = [h for h in trainer.state.log_history if "curvature/top_eigenvalue" in h]
    assert [h["step"] for h in curv] == [0, 3, 6]
    assert {"curvature/hessian_trace", "curvature/fisher_trace", "curvature/loss_rise", "curvature/cost_gradients",
            "curvature/loss"} <= set(curv[0])
    assert "curvature/overhead" not in curv[0] and curv[1]["curvature/overhead"] > 0  # no step timed before step 0
    assert any("loss" in h and "curvature/loss" not in h for h in trainer.state.log_history)  # training loss still logged
    rows = read_measurements(tmp_path / "c.jsonl")
    assert [r["step"] for r in rows] == [0, 3, 6] and all(r["lr"] is not None for r in rows)
    assert rows[0]["lr"] == pytest.approx(1e-3) and rows[-1]["lr"] < rows[1]["lr"]  # linear decay
    assert model.training and cb.schedule.step_gradients == pytest.approx(4 / 3)  # 4 training / 3 probe examples


def test_resumed_run_skips_measured_steps(tmp_path):
    model = make_tiny_bert()
    trainer = _trainer(model, tmp_path, steps=4)
    CurvatureCallback(_tracker(model, tmp_path / "c.jsonl"), every=2).attach(trainer)
    trainer.train()
    model2 = make_tiny_bert()
    trainer2 = _trainer(model2, tmp_path, steps=6)
    tracker2 = _tracker(model2, tmp_path / "c.jsonl")
    measured: list[int] = []
    original = tracker2.measure
    tracker2.measure = lambda step, **kw: measured.append(step) or original(step, **kw)  # type: ignore[method-assign]
    CurvatureCallback(tracker2, every=2).attach(trainer2)
    trainer2.train()
    assert measured == [6]
    assert [r["step"] for r in read_measurements(tmp_path / "c.jsonl")] == [0, 2, 4, 6]


@pytest.mark.slow
def test_tracking_leaves_the_trajectory_unchanged(tmp_path):
    plain = make_tiny_bert()
    _trainer(plain, tmp_path).train()
    tracked = make_tiny_bert()
    trainer = _trainer(tracked, tmp_path)
    CurvatureCallback(_tracker(tracked, None, QUANTITIES), every=3).attach(trainer)
    trainer.train()
    for (n, a), b in zip(plain.named_parameters(), tracked.parameters()):
        assert torch.equal(a, b), n


def test_without_trainer_falls_back_to_log_history(tmp_path):
    model = make_tiny_bert()
    trainer = _trainer(model, tmp_path, steps=3)
    trainer.add_callback(CurvatureCallback(_tracker(model, None), every=2, at_end=True))
    with pytest.warns(UserWarning, match="attach"):
        trainer.train()
    assert [h["step"] for h in trainer.state.log_history if "curvature/top_eigenvalue" in h] == [0, 2, 3]


def test_wrong_model_is_refused(tmp_path):
    trainer = _trainer(make_tiny_bert(), tmp_path, steps=1)
    CurvatureCallback(_tracker(make_tiny_bert(seed=1), None)).attach(trainer)
    with pytest.raises(ValueError, match="same model"):
        trainer.train()


def test_budget_warning_when_no_measurement_fits(tmp_path):
    model = make_tiny_bert()
    trainer = _trainer(model, tmp_path, steps=2)
    cb = CurvatureCallback(_tracker(model, None), budget=0.01).attach(trainer)  # automatic schedule
    with pytest.warns(UserWarning, match="only after"):
        trainer.train()
    assert cb.tracker.rows == []


def _hutchpp_dense(H: torch.Tensor, op, num_matvecs: int, seed: int) -> float:
    """Hutch++ on the dense matrix H with the probes ``curvature.trace`` draws for ``op`` (float64)."""
    from landscape.curvature.base import flat_draw

    s = num_matvecs // 3
    sketch = torch.stack([flat_draw(op, seed + j, "rademacher").double() for j in range(s)], 1)
    q, _ = torch.linalg.qr(H @ sketch)
    g = torch.stack([flat_draw(op, seed + s + j, "rademacher").double() for j in range(s)], 1)
    g = g - q @ (q.T @ g)
    hg = H @ g
    hg = hg - q @ (q.T @ hg)
    return float((q * (H @ q)).sum()) + float((g * hg).sum(0).mean())


def _dense_hessian(model, obj, data) -> torch.Tensor:
    """Dense Hessian [d, d] of L = Σsᵢ/Σnᵢ in ParamSpace order (batches prepared outside torch.func)."""
    from landscape import vectors
    from landscape.params import ParamSpace

    space = ParamSpace(model)
    prepared = [obj.prepare(b, model) for b in data]

    def loss(flat):
        ps = vectors.from_flat(flat, space.params)
        terms = [obj.loss_terms(obj.forward(model, p, ps), p) for p in prepared]
        return sum(s.sum() for s, _ in terms) / sum(n.sum() for _, n in terms)

    return torch.func.hessian(loss)(vectors.to_flat(space.values()).detach())


@pytest.mark.slow
def test_default_schedule_overhead_within_budget_and_values_match_dense(tmp_path):
    """Issue 20 item 6: with the default schedule and settings, a real Trainer run spends ≤ 10% of its
    training gradients on measurements (from the recorded costs), and a warm-started measurement's
    λ_max, Hutch++ trace and Fisher trace match dense float64 references at the measured weights."""
    import copy

    from landscape import curvature
    from references import per_example_grads

    model = make_tiny_bert(hidden=4, layers=1, attn_implementation="eager")  # ~550 parameters: dense H is cheap
    steps = 180  # the first (random-start) Lanczos runs all 10 products, so a second measurement fits from ~175
    trainer = _trainer(model, tmp_path, steps=steps, batch=16)
    probe = make_mlm_batches(n_batches=1, batch_size=2, seed=5)  # 2 probe examples: a step is 8 probe gradients
    tracker = CurvatureTracker(model, mlm_objective(), probe, path=tmp_path / "c.jsonl")  # every default setting
    snapshots: dict[int, dict[str, torch.Tensor]] = {}
    original = tracker.measure

    def measure(step, **kw):
        snapshots[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return original(step, **kw)

    tracker.measure = measure  # type: ignore[method-assign]
    cb = CurvatureCallback(tracker).attach(trainer)
    trainer.train()
    rows = read_measurements(tmp_path / "c.jsonl")
    g = cb.schedule.step_gradients
    assert g == 8.0 and len(rows) == 2 and rows[0]["step"] > 0  # the first measurement waits for its budget
    c_max = tracker.max_cost().gradients
    assert rows[0]["step"] == first_step(c_max, g, 0.10) == 88  # ⌈69.7 / (0.1 · 8)⌉
    for r in rows:
        assert r["training_gradients"] == r["step"] * g and r["cost_gradients"] <= c_max
        assert r["overhead"] == pytest.approx(r["total_cost_gradients"] / r["training_gradients"]) and r["overhead"] <= 0.1
    assert sum(r["cost_gradients"] for r in rows) / (steps * g) <= 0.10
    assert rows[1]["eig_warm_start"] and rows[1]["cost_gradients"] < c_max
    logged = [h for h in trainer.state.log_history if "curvature/overhead" in h]
    assert [h["curvature/overhead"] for h in logged] == pytest.approx([r["overhead"] for r in rows])

    row = rows[1]
    ref = copy.deepcopy(model).double()
    ref.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in snapshots[row["step"]].items()})
    ref.eval()
    H = _dense_hessian(ref, mlm_objective(), probe)
    assert row["top_eigenvalue_converged"]
    assert row["top_eigenvalue"] == pytest.approx(float(torch.linalg.eigvalsh(H)[-1]), rel=2e-2)
    op = curvature.HessianOperator(ref, mlm_objective(), probe, mode="double_backward", check_determinism=False)
    assert row["hessian_trace"] == pytest.approx(_hutchpp_dense(H, op, tracker.trace_matvecs, tracker.seed), rel=5e-3)
    grads = per_example_grads(ref, mlm_objective(), probe)
    n_terms = sum(mlm_objective().count(mlm_objective().prepare(b, ref))[1] for b in probe)
    fisher_trace = sum(float(sum((gi ** 2).sum() for gi in g_.values())) for g_ in grads) / n_terms
    assert row["fisher_trace"] == pytest.approx(fisher_trace, rel=1e-4)
