"""CurvatureCallback inside a real ``transformers.Trainer`` on a tiny BERT (CPU, a few steps)."""

from __future__ import annotations

import pytest
import torch

from conftest import make_mlm_batches, make_tiny_bert, mlm_objective
from landscape.training import QUANTITIES, CurvatureCallback, CurvatureTracker, read_measurements

pytest.importorskip("accelerate")


def _trainer(model, tmp_path, steps: int = 6):
    from transformers import Trainer, TrainingArguments

    train = [{"input_ids": ids, "attention_mask": am, "labels": ids.clone()}
             for b in make_mlm_batches(n_batches=4, batch_size=4, seed=1) for ids, am in zip(b["input_ids"], b["attention_mask"])]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), max_steps=steps, per_device_train_batch_size=4,
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
    assert model.training and cb.schedule.steps_timed == 6


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
    with pytest.warns(UserWarning, match="fits no further"):
        trainer.train()
    assert [r["step"] for r in cb.tracker.rows] == [0]
