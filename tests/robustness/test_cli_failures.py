"""Issue 20, items 3-5 in process: out of memory is one user line, an interrupt exits 130, and both
leave the weights bit for bit as loaded; one writer per --out."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import analyses.common
from analyses.cli import main
from analyses.cli.errors import is_out_of_memory
from landscape.scans.runner import Surface
from landscape.util import lock
from saved_models import save_tiny_checkpoint, write_texts


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    root = tmp_path_factory.mktemp("robust")
    save_tiny_checkpoint(root / "ck")
    return root / "ck", write_texts(root / "texts.txt", n=12)


def _fail_after(monkeypatch, n_calls: int, exc: BaseException) -> dict:
    """Wrap load_target: remember the loaded weights, and make the model's forward raise ``exc`` from call n."""
    seen: dict = {}
    real = analyses.common.load_target

    def wrapped(*a, **k):
        target = real(*a, **k)
        seen["model"] = target.model
        seen["before"] = {n: p.detach().clone() for n, p in target.model.state_dict().items()}
        seen["training"] = [m.training for m in target.model.modules()]
        calls = [0]

        def hook(module, args, kwargs=None):
            calls[0] += 1
            if calls[0] >= n_calls:
                raise exc

        target.model.register_forward_pre_hook(hook)
        return target

    monkeypatch.setattr(analyses.common, "load_target", wrapped)
    return seen


def _restored(seen: dict) -> bool:
    after = seen["model"].state_dict()
    same = all(torch.equal(seen["before"][n].view(torch.uint8), after[n].detach().contiguous().view(torch.uint8))
               for n in seen["before"])
    return same and [m.training for m in seen["model"].modules()] == seen["training"]


CPU_OOM = RuntimeError("[enforce fail at alloc_cpu.cpp:121] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 68719476736 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize("exc", [torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), CPU_OOM])
@pytest.mark.parametrize("command", [["scan", "--dims", "1", "--grid", "5"], ["hessian", "--top-k", "2"]])
def test_out_of_memory_is_one_line_naming_the_flags(ckpt, tmp_path, capsys, monkeypatch, exc, command):
    seen = _fail_after(monkeypatch, 3, exc)
    argv = [command[0], str(ckpt[0]), *command[1:], "--texts", str(ckpt[1]), "--examples", "4", "--no-progress",
            "--out", str(tmp_path / "o")]
    assert main(argv) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("landscape:")]
    assert len(err) == 1 and err[0].startswith("landscape: error: out of memory (")
    assert "--batch-size" in err[0] and "--examples" in err[0] and "--max-length" in err[0]
    assert _restored(seen)
    assert not (tmp_path / "o" / lock.LOCK_NAME).exists()


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(CPU_OOM) and is_out_of_memory(torch.OutOfMemoryError("x")) and is_out_of_memory(MemoryError())
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))  # a user error already


def test_an_interrupted_scan_exits_130_restores_and_resumes(ckpt, tmp_path, capsys, monkeypatch):
    out = tmp_path / "o"
    argv = ["scan", str(ckpt[0]), "--dims", "2", "--grid", "4", "--texts", str(ckpt[1]), "--examples", "4",
            "--batch-size", "4", "--no-progress", "--out", str(out)]
    seen = _fail_after(monkeypatch, 12, KeyboardInterrupt())  # the time estimate takes 4+ forwards first
    assert main(argv) == 130
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("landscape:")]
    assert len(err) == 1 and err[0].startswith("landscape: interrupted")
    assert _restored(seen)
    partial = Surface.load(out / "scan_2d.npz")
    assert 0 < partial.n_done < 16 and not (out / lock.LOCK_NAME).exists()
    monkeypatch.undo()
    assert main([*argv, "--resume"]) == 0
    assert main([*argv[:-1], str(tmp_path / "fresh")]) == 0
    np.testing.assert_array_equal(Surface.load(out / "scan_2d.npz").values["loss"],
                                  Surface.load(tmp_path / "fresh" / "scan_2d.npz").values["loss"])


def test_a_second_writer_fails_at_once_and_a_stale_lock_is_taken_over(ckpt, tmp_path, capsys, caplog):
    out = tmp_path / "o"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        held = lock.acquire(out, "landscape scan (the first run)")
        held.write_text(held.read_text().replace(str(os.getpid()), str(sleeper.pid)))
        argv = ["scan", str(ckpt[0]), "--dims", "1", "--grid", "3", "--texts", str(ckpt[1]), "--examples", "2",
                "--no-progress", "--out", str(out)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and f"in use by process {sleeper.pid}" in err[0] and "the first run" in err[0]
    finally:
        sleeper.kill()
        sleeper.wait()
    assert main(argv) == 0  # the holder is dead now: a stale lock
    assert any("taking over the lock" in r.getMessage() and str(sleeper.pid) in r.getMessage() for r in caplog.records)
    assert not (out / lock.LOCK_NAME).exists() and (out / "scan_1d.npz").is_file()


def test_lock_refuses_a_lock_from_another_host(tmp_path):
    path = lock.acquire(tmp_path, "x")
    path.write_text('{"pid": 1, "host": "elsewhere", "started": 0, "command": "landscape fisher"}')
    with pytest.raises(lock.OutputLocked, match="process 1 on elsewhere.*delete"):
        lock.acquire(tmp_path)
    path.unlink()
    with lock.hold(tmp_path / "new") as p:
        assert p is not None and lock.read_lock(p)["pid"] == os.getpid()
    assert not (tmp_path / "new").exists()  # nothing written: the folder it made is gone again
    assert lock.lock_path(tmp_path / "rates.json") == tmp_path / ".rates.json.lock"  # a file output: beside it
    with lock.hold(tmp_path / "sub" / "rates.json"):
        assert (tmp_path / "sub" / ".rates.json.lock").is_file() and not (tmp_path / "sub" / "rates.json").exists()
