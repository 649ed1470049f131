"""Estimated time before long work: the arithmetic, the untouched state, and the line each command prints."""

from __future__ import annotations

import io
import re

import pytest
import torch
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective
from saved_models import WORDS

from analyses.cli import main
from analyses.cli.eta import announce, eta_line, first_example, format_duration, time_gradient, time_point, time_product, timed
from landscape import curvature

LINE = re.compile(r"^estimated time: ~\d+m \d\ds \([\d,]+ [a-z ]+ × [\d.e+-]+ s\)$", re.M)


@pytest.mark.parametrize("seconds, text", [(0, "~0m 00s"), (0.2, "~0m 01s"), (125, "~2m 05s"), (59.5, "~1m 00s"),
                                           (3725, "~1h 02m")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_eta_line_is_units_times_seconds():
    assert eta_line(512, 0.244, "gradients") == "estimated time: ~2m 05s (512 gradients × 0.244 s)"
    assert eta_line(202.4, 2.5, "gradients") == "estimated time: ~8m 28s (203 gradients × 2.5 s)"  # units round up
    with pytest.raises(ValueError, match="finite"):
        format_duration(float("nan"))


def test_announce_prints_one_line():
    buf = io.StringIO()
    line = announce(10, 1.5, "points", stream=buf)
    assert buf.getvalue() == line + "\n" and LINE.match(line)


def test_timing_leaves_the_global_rng_the_weights_and_the_modes_as_they_were():
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    assert timed(lambda: torch.rand(5), warmup=True, repeat=2) >= 0
    assert torch.equal(torch.rand(3), want)
    model = make_tiny_bert().train()
    before = {n: p.detach().clone() for n, p in model.state_dict().items()}
    data, obj = make_mlm_batches(), mlm_objective()
    assert time_gradient(model, obj, first_example(data)) > 0 and time_point(model, obj, data) > 0
    op = curvature.HessianOperator(model, obj, data, mode="double_backward")
    assert time_product(op) > 0 and op.n_matvecs == 0
    assert model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[n], p) for n, p in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def test_first_example_of_dict_and_tuple_batches():
    assert first_example([{"input_ids": torch.ones(4, 3), "name": "x"}])[0]["input_ids"].shape == (1, 3)
    x, y = first_example([(torch.ones(4, 2), torch.zeros(4))])[0]
    assert x.shape == (1, 2) and y.shape == (1,)
    with pytest.raises(TypeError, match="dict or tuple"):
        first_example([torch.ones(3)])


@pytest.fixture
def texts(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_text("\n".join(" ".join(WORDS[i : i + 12]) for i in range(0, 24, 2)))
    return path


@pytest.mark.parametrize("command, unit", [
    (["fisher", "--examples", "4"], "gradients"),
    (["hessian", "--examples", "2", "--top-k", "1", "--tol", "1e-1", "--trace", "--trace-matvecs", "3"], "products"),
    (["scan", "--dims", "1", "--grid", "3", "--examples", "2"], "points"),
    (["guided-dropout", "--examples", "4"], "gradients"),
])
def test_each_command_prints_its_estimate_before_the_work(command, unit, checkpoint, texts, tmp_path, capsys):
    name, *flags = command
    argv = [name, str(checkpoint), "--texts", str(texts), "--out", str(tmp_path / "out"), "--no-progress", *flags]
    if name == "guided-dropout":
        argv[argv.index("--out") + 1] = str(tmp_path / "rates.json")
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = LINE.findall(out)
    assert len(lines) == 1 and f" {unit} × " in lines[0], out
    assert out.index(lines[0]) < max(out.find("wrote"), out.find("landscape scan:"))  # before the work's report
