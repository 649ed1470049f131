"""The guided-dropout grid in worker processes: the same rows as in-process, units running at once,
finished units kept after another unit's error or a Ctrl-C, and no worker left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dropout_helpers import study_files

from analyses.guided_dropout import GuidedDropoutConfig, grid, pool, run

ROOT = Path(__file__).resolve().parents[2]
ARMS3 = ("guided", "uniform", "permuted")
fork_only = pytest.mark.skipif(sys.platform != "linux", reason="the stubs reach the workers by fork")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return study_files(tmp_path_factory.mktemp("workers"))


def config(files: Path, out: Path, **kw) -> GuidedDropoutConfig:
    kw = {"sizes": (8, 12), "seeds": (0, 1), "arms": ARMS3, "epochs": 1, "min_steps": 2, "batch_size": 4,
          "fisher_examples": 6, "fisher_batch_size": 3, "max_length": 16, "progress": False, **kw}
    return GuidedDropoutConfig(checkpoint=str(files / "ckpt"), out=str(out), data=str(files / "train.csv"),
                               test_data=str(files / "test.csv"), fisher_texts=str(files / "heldout.txt"), **kw)


def rows(out: Path) -> dict[tuple, dict]:
    """runs.jsonl by (task, size, seed, arm), ``seconds`` left out."""
    lines = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    return {(r["task"], r["size"], r["seed"], r["arm"]): {k: v for k, v in r.items() if k != "seconds"}
            for r in lines}


@pytest.fixture(scope="module")
def sequential(files, tmp_path_factory):
    """The tiny grid in this process, one unit after another."""
    out = tmp_path_factory.mktemp("one")
    return out, run(config(files, out, workers=1))


def test_two_workers_give_bit_identical_rows_and_resume_across_worker_counts(files, sequential, tmp_path, capsys):
    one_dir, one = sequential
    two = run(config(files, tmp_path / "two", workers=2))
    a, b = rows(one_dir), rows(tmp_path / "two")
    assert len(a) == 2 * 2 * len(ARMS3) and a == b  # every accuracy, loss and epoch record, bit for bit
    assert one.meta["workers"] == 1 and two.meta["workers"] == 2
    assert "estimated time:" in capsys.readouterr().out
    # workers do not enter the resume hash: a two-worker run resumes a one-worker folder
    lines = (one_dir / "runs.jsonl").read_text().splitlines()
    (tmp_path / "two" / "runs.jsonl").write_text("\n".join(lines[:-4]) + "\n")
    resumed = run(config(files, tmp_path / "two", workers=2))
    assert resumed.meta["runs_this_call"] == 4 and rows(tmp_path / "two") == a


def test_spawned_workers_give_the_same_rows(files, sequential, tmp_path, monkeypatch):
    monkeypatch.setattr(pool, "start_method", lambda: "spawn")  # what a parent on several torch threads uses
    run(config(files, tmp_path / "spawn", workers=2))
    assert rows(tmp_path / "spawn") == rows(sequential[0])


def slow_stub(log: Path, fail: tuple[int, int] | None = None):
    """A train_run that sleeps 0.4 s, logs (pid, seed, size, start, end), and raises on unit ``fail``."""
    def train_run(model, init, arm, train, val, test, spec, seed, fisher_weight=None):
        if fail == (seed, len(train)):
            raise RuntimeError("unit failed on purpose")
        t0 = time.time()
        time.sleep(0.4)
        with open(log, "a") as fh:
            fh.write(json.dumps([os.getpid(), seed, len(train), t0, time.time()]) + "\n")
        return {"epochs": [], "best_epoch": spec.epochs, "test_acc": 0.5, "test_loss": 1.0, "seconds": 0.4}
    return train_run


@fork_only
def test_units_run_in_two_processes_at_once(files, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    monkeypatch.setattr(grid, "train_run", slow_stub(log))
    run(config(files, tmp_path / "o", workers=2))
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    pids = {c[0] for c in calls}
    assert len(calls) == 2 * 2 * len(ARMS3) and len(pids) == 2 and os.getpid() not in pids
    span = {p: (min(c[3] for c in calls if c[0] == p), max(c[4] for c in calls if c[0] == p)) for p in pids}
    (s1, e1), (s2, e2) = span.values()
    assert max(s1, s2) < min(e1, e2)  # both workers were busy at the same time


@fork_only
def test_finished_units_survive_an_error_in_another_unit(files, tmp_path, monkeypatch):
    monkeypatch.setattr(grid, "train_run", slow_stub(tmp_path / "log.jsonl", fail=(1, 12)))
    with pytest.raises(RuntimeError, match="unit failed on purpose"):
        run(config(files, tmp_path / "o", workers=2))
    kept = rows(tmp_path / "o")
    assert {(k[1], k[2]) for k in kept} == {(8, 0), (12, 0), (8, 1)} and len(kept) == 3 * len(ARMS3)
    monkeypatch.setattr(grid, "train_run", slow_stub(tmp_path / "log.jsonl"))
    again = run(config(files, tmp_path / "o", workers=2))
    assert again.meta["runs_this_call"] == len(ARMS3) and again.meta["runs_total"] == 4 * len(ARMS3)


@fork_only
def test_ctrl_c_stops_every_worker_quietly_and_keeps_finished_runs(files, tmp_path):
    out = tmp_path / "o"
    argv = [sys.executable, "-m", "analyses.cli", "analyze", "guided-dropout", str(files / "ckpt"), "--data",
            str(files / "train.csv"), "--test-data", str(files / "test.csv"), "--fisher-texts",
            str(files / "heldout.txt"), "--sizes", "8", "12", "--seeds", "12", "--epochs", "4", "--min-steps", "2",
            "--fisher-examples", "6", "--max-length", "16", "--workers", "2", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (out / "runs.jsonl").is_file() and (out / "runs.jsonl").read_text().strip():
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group gets SIGINT
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "landscape: interrupted" in err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    with pytest.raises(ProcessLookupError):
        os.killpg(proc.pid, 0)  # no worker outlived the parent
    done = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]  # whole lines only
    assert 0 < len(done) < 12 * 2 * 8 and len({r["run_key"] for r in done}) == 1


def test_worker_count_is_checked_and_defaults_to_the_usable_cores(files, tmp_path):
    with pytest.raises(ValueError, match="--workers must be at least 1"):
        config(files, tmp_path, workers=0)
    assert pool.default_workers() == len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else True
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert pool.start_method() == ("fork" if sys.platform.startswith("linux") else "spawn")
        torch.set_num_threads(2)
        assert pool.start_method() == "spawn"  # a parent with an OpenMP pool never forks
    finally:
        torch.set_num_threads(threads)
