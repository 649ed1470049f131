"""The guided-dropout study at tiny settings: every promised file, determinism, resume, tasks, stats,
and one-line errors for bad input (CLI)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from dropout_helpers import VOCAB, make_model, make_tokenizer, study_files, write_labelled

from analyses.cli import main
from analyses.guided_dropout import DEFAULT_ARMS, GuidedDropoutConfig, run, tasks

TINY = dict(sizes=(8, 12), seeds=(0, 1), epochs=1, min_steps=2, batch_size=4, fisher_examples=6, fisher_batch_size=3,
            max_length=16, progress=False)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return study_files(tmp_path_factory.mktemp("gd"))


@pytest.fixture(scope="module")
def study(setup):
    cfg = GuidedDropoutConfig(checkpoint=str(setup / "ckpt"), out=str(setup / "out1"), data=str(setup / "train.csv"),
                              test_data=str(setup / "test.csv"), fisher_texts=str(setup / "heldout.txt"), **TINY)
    return cfg, run(cfg)


def test_study_writes_every_promised_file(study):
    cfg, result = study
    out = Path(cfg.out)
    for f in ("result.json", "runs.jsonl", "rates.json", "fisher.safetensors", "report.md",
              "figures/metric_vs_size.png", "figures/site_rates.png"):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert len(runs) == len(DEFAULT_ARMS) * 2 * 2
    assert {(r["arm"], r["size"], r["seed"]) for r in runs} == {(a, s, d) for a in DEFAULT_ARMS for s in (8, 12)
                                                                 for d in (0, 1)}
    # the paper recipe: fixed epochs, the final model, no validation set
    assert all(len(r["epochs"]) == r["epochs_run"] == r["best_epoch"] and r["n_val"] == 0 for r in runs)
    res = json.loads((out / "result.json").read_text())
    cell = res["summary"]["train"]["12"]
    assert set(cell["arms"]) == set(DEFAULT_ARMS) and cell["arms"]["guided"]["n"] == 2
    assert {"guided-uniform", "guided-permuted", "guided-reversed", "guided-pretrain"} <= set(cell["paired"])
    assert cell["paired"]["guided-uniform"]["primary"] and not cell["paired"]["guided-reversed"]["primary"]
    assert cell["paired"]["guided-uniform"]["p_holm"] is None or cell["paired"]["guided-uniform"]["p_holm"] >= \
        cell["paired"]["guided-uniform"]["p_t"]
    assert set(res["verdicts"]["train"]) == {"guided-uniform", "guided-permuted"}
    assert set(res["arms"]) == set(DEFAULT_ARMS) and res["power"]["n_seeds"] == 2
    assert 1 <= res["fisher"]["n_examples"] <= 6 and res["fisher"]["convergence"]["n"][-1] >= res["fisher"]["n_examples"]
    half = res["fisher"]["split_half"]
    assert not set(half["halves"][0]) & set(half["halves"][1]) and sum(half["n_examples"]) == res["fisher"]["n_examples"]
    assert sorted(res["rates"]["reversed"].values()) == pytest.approx(sorted(res["rates"]["guided"].values()))
    from figures.dropout import plot_metric_vs_size, plot_site_rates  # re-drawn from result.json alone

    fig = plot_metric_vs_size(out)
    assert len(fig.axes) == 1 and len(fig.axes[0].lines) >= len(DEFAULT_ARMS)
    assert len(plot_site_rates(out / "result.json").axes) == 2
    report = (out / "report.md").read_text()
    assert "## Answers" in report and "guided − uniform at guided's mean rate" in report and "| guided |" in report
    assert "## Arms" in report and "Power: with 2 seeds" in report and "swap order between the halves" in report
    assert "with 5 seeds" not in report


def test_arms_are_paired_and_differ_only_by_their_regularizer(study):
    _, result = study
    by = {(r["arm"], r["size"], r["seed"]): r for r in result.runs}
    for size in (8, 12):
        for seed in (0, 1):
            assert len({by[(a, size, seed)]["n_train"] for a in DEFAULT_ARMS}) == 1
    # the tiny checkpoint's own rates are 0.1 everywhere: the pretrain arm reads them; uniform is guided's mean
    assert result.rates["pretrain_source"] == "checkpoint" and set(result.rates["pretrain"].values()) == {0.1}
    mean = sum(result.rates["guided"].values()) / len(result.rates["guided"])
    assert list(result.rates["uniform"].values()) == pytest.approx([mean] * len(result.rates["guided"])) and mean < 0.1
    assert any(by[("pretrain", 12, s)]["test_loss"] != by[("uniform", 12, s)]["test_loss"] for s in (0, 1))


def test_same_seed_gives_the_same_numbers_and_resume_skips_finished_runs(setup, study):
    cfg, first = study
    again = run(GuidedDropoutConfig(**{**cfg.__dict__, "out": str(setup / "out2")}))
    key = lambda r: (r["arm"], r["size"], r["seed"])
    a = {key(r): (r["test_acc"], r["test_loss"], r["epochs"]) for r in first.runs}
    b = {key(r): (r["test_acc"], r["test_loss"], r["epochs"]) for r in again.runs}
    assert a == b
    lines = (Path(cfg.out) / "runs.jsonl").read_text().splitlines()
    (Path(cfg.out) / "runs.jsonl").write_text("\n".join(lines[:-5]) + "\n")
    resumed = run(cfg)
    assert resumed.meta["runs_this_call"] == 5 and resumed.meta["runs_total"] == len(lines)
    assert {key(r): (r["test_acc"], r["test_loss"], r["epochs"]) for r in resumed.runs} == a


def test_builtin_tasks_are_balanced_and_split_by_module():
    r = random.Random(0)
    from landscape.models.corpus import Document

    docs = [Document(f"pkg{p}.mod{m}", f"docstring {p} {m} {i} " + "x" * r.randrange(40, 60))
            for p in range(10) for m in range(6) for i in range(10 + 3 * p)]
    docs += [Document("single", f"a top-level module's docstring {i} " + "y" * 40) for i in range(300)]
    t = tasks.topic_task(n_classes=8, n_test=160, docs=docs)
    assert t.classes == sorted(f"pkg{p}" for p in range(2, 10))  # the eight largest packages
    counts = [sum(1 for e in t.test if e[2] == y) for y in range(8)]
    assert counts == [20] * 8 and len({sum(1 for e in t.pool if e[2] == y) for y in range(8)}) == 1
    assert not {e[0] for e in t.pool} & {e[0] for e in t.test}
    module = {d.text: d.module for d in docs}
    assert [module[e[0]] for e in t.pool] == t.pool_groups and [module[e[0]] for e in t.test] == t.test_groups
    assert t.pool_groups and not set(t.pool_groups) & set(t.test_groups)  # no module feeds both sides
    s = tasks.same_module_task(n_test=100, n_pool=200, docs=docs)
    assert sum(e[2] for e in s.test) == 50 and s.pair
    assert not {e[0] for e in s.pool} & ({e[0] for e in s.test} | {e[1] for e in s.test})


def test_the_stdlib_topic_task_shares_no_module_between_pool_and_test():
    t = tasks.topic_task()
    assert len(t.test) == 800 and len(t.pool) >= 8 * 40
    assert not set(t.pool_groups) & set(t.test_groups)
    assert len(set(t.pool_groups)) >= 8 and len(set(t.test_groups)) >= 8


def test_pair_jsonl_task_loads(tmp_path):
    t = tasks.file_task(write_labelled(tmp_path / "p.jsonl", 40, pair=True))
    assert t.pair and t.classes == ["a", "b", "c"] and len(t.pool) + len(t.test) == 40


# ----------------------------------------------------------------------------- bad input, one line each


def one_line_error(capsys, argv: list[str], match: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()
    errors = [line for line in err if "landscape: error:" in line]
    assert len(errors) == 1 and err[-1] == errors[0] and errors[0].startswith("landscape: error:"), err  # one line, last
    assert match in errors[0], errors[0]


def test_cli_writes_rates_and_checks_them(setup, tmp_path, capsys):
    out = tmp_path / "rates.json"
    assert main(["guided-dropout", str(setup / "ckpt"), "--examples", "6", "--texts", str(setup / "heldout.txt"), "--out", str(out), "--check", "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "layer.1.ffn_output" in text and "within binomial tolerance" in text
    doc = json.loads(out.read_text())
    assert doc["meta"]["model_class"] == "BertForMaskedLM" and len(doc["meta"]["fisher_fingerprint"]) == 16
    assert max(doc["rates"].values()) == pytest.approx(0.1) and min(doc["rates"].values()) == 0.0


def test_cli_refuses_a_fisher_file_from_another_model(setup, tmp_path, capsys):
    import transformers as T
    from dropout_helpers import token_batches

    from landscape import fisher, objectives

    other = T.BertForMaskedLM(T.BertConfig(vocab_size=VOCAB, hidden_size=24, num_hidden_layers=1, num_attention_heads=2,
                                           intermediate_size=32, max_position_embeddings=40))
    obj = objectives.MaskedLM(mask_prob=0.3, seed=0, mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4])
    F = fisher.diagonal(other.eval(), obj, token_batches(1, batch=3, seq=10), progress=False, convergence=False)
    path = F.save(tmp_path / "other")
    one_line_error(capsys, ["guided-dropout", str(setup / "ckpt"), "--fisher", str(path), "--texts", str(setup / "heldout.txt"),
                            "--out", str(tmp_path / "r.json")],
                   "different model")
    # the same check without the file's fingerprint: scores lacking the guarded tensors
    from landscape import dropout

    with pytest.raises(ValueError, match="another model"):
        dropout.guided_rates(make_model("bert"), {k.replace("bert.", "x."): v for k, v in F.scores.items()})
    with pytest.raises(ValueError, match="another model"):
        dropout.guided_rates(make_model("bert", seed=0), {**{n: p.detach()[..., :1].clone() for n, p in
                                                             make_model("bert").named_parameters()}})


def test_cli_refuses_rates_outside_the_unit_interval(setup, tmp_path, capsys):
    one_line_error(capsys, ["guided-dropout", str(setup / "ckpt"), "--examples", "4", "--p-max", "1.0", "--texts", str(setup / "heldout.txt"), "--no-progress",
                            "--out", str(tmp_path / "r.json")], "outside [0, 1)")


def test_cli_refuses_a_checkpoint_without_dropout_sites(setup, tmp_path, capsys):
    from transformers import MambaConfig, MambaForCausalLM

    MambaForCausalLM(MambaConfig(vocab_size=VOCAB, hidden_size=16, state_size=4, num_hidden_layers=1)).save_pretrained(tmp_path / "m")
    make_tokenizer().save_pretrained(tmp_path / "m")
    one_line_error(capsys, ["guided-dropout", str(tmp_path / "m"), "--texts", str(setup / "heldout.txt"),  # texts in its vocabulary
                            "--out", str(tmp_path / "r.json")], "no dropout sites")


def test_study_refuses_a_labels_file_with_unknown_classes(setup, tmp_path, capsys):
    bad = write_labelled(tmp_path / "test.csv", 12, labels=("a", "b", "zebra"))
    one_line_error(capsys, ["analyze", "guided-dropout", str(setup / "ckpt"), "--data", str(setup / "train.csv"),
                            "--test-data", str(bad), "--out", str(tmp_path / "o")], "zebra")
    assert not (tmp_path / "o" / "fisher.safetensors").exists()  # refused before any computing


def test_study_cli_runs_at_tiny_settings(setup, tmp_path, capsys):
    argv = ["analyze", "guided-dropout", str(setup / "ckpt"), "--data", str(setup / "train.csv"), "--sizes", "8", "12",
            "--seeds", "2", "--epochs", "1", "--fisher-texts", str(setup / "heldout.txt"), "--min-steps", "1", "--fisher-examples", "4", "--max-length", "16",
            "--arms", "none", "uniform", "guided", "--out", str(tmp_path / "o"), "--no-progress"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| guided |" in text and "Does placement by Fisher beat" in text and "Power: with 2 seeds" in text
    assert json.loads((tmp_path / "o" / "result.json").read_text())["config"]["arms"] == ["none", "uniform", "guided"]


@pytest.mark.parametrize("size", [8, 64, 256])
def test_train_and_validation_splits_hold_every_class(size):
    import torch

    from analyses.guided_dropout.grid import sample_split

    labels = torch.arange(8).repeat_interleave(40)
    tr, va = sample_split(labels, size, seed=3, n_val=64)
    assert len(tr) == size and len(va) == 64 and not set(tr) & set(va)
    assert set(labels[va].tolist()) == set(range(8)) and set(labels[va].bincount().tolist()) == {8}
    if size >= 8:
        assert set(labels[tr].tolist()) == set(range(8))
    assert sample_split(labels, size, 3, 64) == (tr, va) and sample_split(labels, size, 4, 64) != (tr, va)
    assert sample_split(labels, size, 3)[0] == tr  # the training sample does not depend on the validation set
    with pytest.raises(ValueError, match="val-size"):
        sample_split(labels, 300, 3, 64)


def test_select_recipe_chooses_the_epoch_on_its_validation_set(setup, tmp_path):
    cfg = GuidedDropoutConfig(checkpoint=str(setup / "ckpt"), out=str(tmp_path / "sel"), data=str(setup / "train.csv"),
                              test_data=str(setup / "test.csv"), fisher_texts=str(setup / "heldout.txt"),
                              **{**TINY, "sizes": (8,), "seeds": (0,), "epochs": 3}, recipe="select", val_size=6,
                              arms=("guided", "uniform", "permuted"))
    res = run(cfg)
    for r in res.runs:
        assert r["n_val"] == 6 and r["n_train"] == 8 and all("val_acc" in e for e in r["epochs"])
        best = max(r["epochs"], key=lambda e: (e["val_acc"], -e["val_loss"], -e["epoch"]))
        assert r["best_epoch"] == best["epoch"] and r["lr"] == pytest.approx(1e-3) and r["batch_size"] == 4
    assert "Recipe `select`" in (tmp_path / "sel" / "report.md").read_text()
    assert "fewer than 64: too few to choose an epoch" in (tmp_path / "sel" / "report.md").read_text()


def test_fisher_weights_share_one_global_scale():
    import torch

    from analyses.guided_dropout.grid import fisher_weights

    scores = {"a": torch.full((2, 2), 4.0), "b": torch.full((4,), 1.0), "head": torch.ones(3)}
    w = fisher_weights(scores, {"a": None, "b": None})
    assert set(w) == {"a", "b"}  # tensors the classifier lacks are dropped
    assert torch.allclose(w["a"], torch.full((2, 2), 1.6)) and torch.allclose(w["b"], torch.full((4,), 0.4))


def test_cli_choices_match_the_core():
    from analyses.cli import guided_dropout as cli
    from landscape import dropout

    assert cli.SCORE_METHODS == dropout.SCORE_METHODS and cli.MAPPINGS == dropout.MAPPINGS
