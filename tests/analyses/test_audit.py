"""The checkpoint audit end to end on a tiny saved BERT: files, fields, figures, HTML, CLI, restore."""

from __future__ import annotations

import base64
import json
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch

from analyses.audit import study as audit
from analyses.audit import AuditConfig, AuditResult
from analyses.common import Target, split_examples
from conftest import make_tiny_bert
from saved_models import png_size, save_tiny_checkpoint, tiny_texts, write_texts
from landscape import objectives
from landscape.scans import directions
from landscape.perturb import perturbed

SMALL = dict(fisher_examples=6, eval_examples=3, batch_size=4, points_1d=5, eig_max_iter=4, trace_matvecs=3,
             full_trace_matvecs=3, trace_max_matvecs=9, avg_samples=2, worst_steps=1, progress=False)


def _state(model):
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}


# ----------------------------------------------------------------------------- one audit, many checks


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny-bert"
    save_tiny_checkpoint(path)
    return path


@pytest.fixture(scope="module")
def audited(ckpt, tmp_path_factory):
    """Audit the checkpoint from a Target whose model is left in train mode (dropout on)."""
    from analyses.common import load_target

    target = load_target(str(ckpt), examples=9, batch_size=4, texts=tiny_texts(12))
    target.model.train()
    before, flags = _state(target.model), {n: m.training for n, m in target.model.named_modules()}
    out = tmp_path_factory.mktemp("audit")
    res = audit.run(AuditConfig(out=str(out), seeds=(0, 1), **SMALL), target=target)
    return res, out, target, before, flags


def test_sensitivity_with_an_even_point_count_starts_at_theta0(ckpt, tmp_path):
    """Defect: the audit read L(0) at index n//2; with 6 points that is α = +0.2, not θ₀."""
    from analyses.common import load_target
    from landscape.params import ParamSpace

    target = load_target(str(ckpt), examples=3, batch_size=3, texts=tiny_texts(4))
    cfg = AuditConfig(out=str(tmp_path), **(SMALL | {"points_1d": 6}))
    got = audit._sensitivity(cfg, target, target.data, ParamSpace(target.model), "all", tmp_path)
    assert len(got["curve"]["alphas"]) == 7 and 0.0 in got["curve"]["alphas"]
    assert got["loss0"] == pytest.approx(target.objective.evaluate(target.model, target.data), rel=1e-6)


@pytest.mark.slow  # shares one ~15 s audit run
def test_every_promised_file(audited):
    _, out, *_ = audited
    for f in ("result.json", "fisher.safetensors", "report.md", "report.html", "arrays/sensitivity.npz",
              "parts/overall.json", *[f"parts/block_{b}.json" for b in ("embeddings", "layer.0", "layer.1", "head")],
              *[f"figures/{f}.png" for f in audit.FIGURES]):
        assert (out / f).is_file() and (out / f).stat().st_size > 0, f


@pytest.mark.slow  # shares one ~15 s audit run
def test_json_has_documented_fields(audited):
    res, out, target, *_ = audited
    def strict(c):
        raise AssertionError(f"result.json holds {c}: not valid JSON for other tools")

    d = json.loads((out / "result.json").read_text(), parse_constant=strict)
    assert tuple(d) == audit.RESULT_FIELDS
    assert list(d["blocks"]) == ["embeddings", "layer.0", "layer.1", "head"]
    for b in d["blocks"].values():
        assert set(audit.BLOCK_FIELDS) <= set(b)
        assert np.isfinite(b["top_eigenvalue"]) and np.isfinite(b["trace"])
        # rounds of 3 then 6 products (cap 9): stopped at 3 only when 3 products carried an error (never)
        assert b["trace_matvecs"] == 9 and isinstance(b["trace_noisy"], bool)
        assert b["trace_noisy"] or b["trace_stderr"] <= 0.1 * abs(b["trace"])
        assert len(b["sensitivity"]["curve"]["losses"]) == 2  # two seeds
    assert set(audit.OVERALL_FIELDS) <= set(d["overall"])
    # the blocks partition the parameters, the tied decoder weight counted once
    n_unique = sum(p.numel() for p in target.model.parameters())
    assert sum(b["n_params"] for b in d["blocks"].values()) == d["overall"]["n_params"] == n_unique
    assert "cls.predictions.decoder.weight" not in sum((b["tensors"] for b in d["blocks"].values()), [])
    assert list(d["fisher"]["per_layer"]) == list(d["blocks"])
    assert d["meta"]["restored"] is True and "torch" in d["meta"]["versions"]
    assert d["fisher"]["meta"]["estimator"] == "empirical" and d["fisher"]["convergence"]["n"]
    assert AuditResult.load(out).blocks == d["blocks"]


@pytest.mark.slow  # shares one ~15 s audit run
def test_curves_share_the_origin_and_match_an_independent_evaluation(audited):
    res, _, target, *_ = audited
    loss0 = res.overall["loss0"]
    for b in res.blocks.values():
        for losses in b["sensitivity"]["curve"]["losses"]:
            assert losses[len(losses) // 2] == pytest.approx(loss0, rel=1e-5)
    # re-evaluate one point of the layer.1 curve with a block direction built by hand
    model, names = target.model, res.blocks["layer.1"]["tensors"]
    d = directions.random(model, seed=1, normalization="filter", one_dim="filter", params=audit.block_space(model, names))
    assert set(d) == set(names)
    _, eval_data = split_examples(target.data, 6, 3, 4)
    alpha = res.blocks["layer.1"]["sensitivity"]["curve"]["alphas"][0]
    with perturbed(model, {n: alpha * t for n, t in d.items()}):
        model.eval()
        want = target.objective.evaluate(model, eval_data)
    model.train()
    assert res.blocks["layer.1"]["sensitivity"]["curve"]["losses"][1][0] == pytest.approx(want, rel=1e-5)


@pytest.mark.slow  # shares one ~15 s audit run
def test_arrays_file(audited):
    res, out, *_ = audited
    z = np.load(out / "arrays" / "sensitivity.npz")
    assert list(z["blocks"]) == list(res.blocks)
    assert z["losses"].shape == (4, 2, 5) and z["full"].shape == (2, 5) and z["alphas"].shape == (5,)
    np.testing.assert_allclose(z["top_eigenvalue"], [b["top_eigenvalue"] for b in res.blocks.values()])


@pytest.mark.slow  # shares one ~15 s audit run
def test_weights_and_modes_restored(audited):
    _, _, target, before, flags = audited
    after = _state(target.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert {n: m.training for n, m in target.model.named_modules()} == flags


@pytest.mark.slow  # shares one ~15 s audit run
def test_figures_are_images_of_the_expected_size(audited):
    _, out, *_ = audited
    assert png_size(out / "figures/audit.png") == (1800, 1200)  # 2×2 panels of 6×4 in at 150 dpi
    assert png_size(out / "figures/sensitivity.png") == (900, 600)
    assert png_size(out / "figures/convergence.png") == (1350, 540)
    w, h = png_size(out / "figures/fisher.png")
    assert w == 1650 and h >= 450
    for f in audit.FIGURES:
        assert (out / f"figures/{f}.png").stat().st_size > 10_000  # something is drawn


@pytest.mark.slow  # shares one ~15 s audit run
def test_html_embeds_the_figures_and_parses(audited):
    _, out, *_ = audited
    text = (out / "report.html").read_text(encoding="utf-8")
    root = ET.fromstring(text.encode())  # well-formed XHTML
    ns = {"h": "http://www.w3.org/1999/xhtml"}
    imgs = root.findall(".//h:img", ns)
    assert len(imgs) == len(audit.FIGURES)
    for img in imgs:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,")
        data = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert data == (out / "figures" / f"{img.get('alt')}.png").read_bytes()
    assert len(root.findall(".//h:table", ns)) == 2 and "src=\"figures/" not in text

    class Tags(HTMLParser):
        tags: list[str] = []

        def handle_starttag(self, tag, attrs):
            self.tags.append(tag)

    p = Tags()
    p.feed(text)
    assert p.tags.count("img") == len(audit.FIGURES) and "table" in p.tags
    md = (out / "report.md").read_text()
    assert "| layer.1 |" in md and "![audit](figures/audit.png)" in md


@pytest.mark.slow  # shares one ~15 s audit run
def test_resume_recomputes_nothing(audited, monkeypatch):
    res, out, target, *_ = audited

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(audit.fisher, "diagonal", boom)
    monkeypatch.setattr(audit.curvature, "HessianOperator", boom)
    monkeypatch.setattr(audit.scans, "scan_1d", boom)
    again = audit.run(AuditConfig(out=str(out), seeds=(0, 1), resume=True, **SMALL), target=target)
    assert again.blocks == json.loads(json.dumps(res.blocks)) and again.overall["trace"] == res.overall["trace"]


def test_restores_when_a_step_raises_midway(ckpt, tmp_path, monkeypatch):
    from analyses.common import load_target

    target = load_target(str(ckpt), examples=4, batch_size=4, texts=tiny_texts(6))
    target.model.train()
    before = _state(target.model)

    def corrupt_then_fail(op, *a, **k):
        with torch.no_grad():
            for p in target.model.parameters():
                p.add_(1.0)
        target.model.eval()
        raise RuntimeError("simulated crash")

    monkeypatch.setattr(audit.curvature, "trace", corrupt_then_fail)
    with pytest.raises(RuntimeError, match="simulated crash"):
        audit.run(AuditConfig(out=str(tmp_path), **(SMALL | {"fisher_examples": 2, "eval_examples": 2})), target=target)
    after = _state(target.model)
    assert all(torch.equal(before[n], after[n]) for n in before)
    assert all(m.training for m in target.model.modules())
    assert (tmp_path / "fisher.safetensors").is_file()  # finished work is kept


def test_blocks_of_gpt2_and_bert():
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt = GPT2LMHeadModel(GPT2Config(vocab_size=30, n_positions=16, n_embd=8, n_layer=2, n_head=2))
    blocks = audit.audit_blocks(gpt)
    assert list(blocks) == ["embeddings", "layer.0", "layer.1", "head"]
    assert blocks["embeddings"] == ["transformer.wte.weight", "transformer.wpe.weight"]  # lm_head tied to wte
    assert blocks["head"] == ["transformer.ln_f.weight", "transformer.ln_f.bias"]
    bert = audit.audit_blocks(make_tiny_bert())
    assert all(n.startswith("bert.encoder.layer.1.") for n in bert["layer.1"])
    assert all(n.startswith("cls.") for n in bert["head"])


@pytest.mark.parametrize("bad", [dict(points_1d=3), dict(seeds=()), dict(trace_matvecs=2), dict(eval_examples=0),
                                 dict(radius=0.0), dict(hvp_mode="fast"), dict(trace_rel_tol=0.0)])
def test_config_refuses_bad_settings(bad):
    with pytest.raises(ValueError):
        AuditConfig(**bad)


def test_too_few_examples_is_a_clear_error(tmp_path):
    model = make_tiny_bert()
    data = [{"input_ids": torch.tensor([[2, 7, 8, 3]]), "attention_mask": torch.ones(1, 4, dtype=torch.long)}]
    target = Target(model, None, objectives.MaskedLM(mask_token_id=4, special_token_ids=[0, 1, 2, 3, 4]), data, "t", "mlm")
    with pytest.raises(ValueError, match="need 9 held-out examples"):
        audit.run(AuditConfig(out=str(tmp_path), **SMALL), target=target)


# ----------------------------------------------------------------------------- CLI


@pytest.mark.slow
def test_cli_audits_a_saved_checkpoint(ckpt, tmp_path, capsys):
    from analyses.cli import main

    out = tmp_path / "cli"
    rc = main(["audit", str(ckpt), "--out", str(out), "--texts", str(write_texts(tmp_path / "t.txt")), "--examples", "4",
               "--eval-examples", "2", "--points", "5", "--eig-iters", "2", "--trace-matvecs", "3",
               "--no-block-curvature", "--hvp-mode", "auto", "--no-progress"])
    assert rc == 0
    captured = capsys.readouterr()
    printed = captured.out
    assert "embeddings" in printed and "layer.1" in printed and "worst-case sharpness" in printed
    assert "trace ± stderr" in printed and "sequences" in printed
    assert len(re.findall(r"^estimated time: ~\d+m \d\ds \([\d,]+ gradients × .+ s\)$", printed, re.M)) == 1
    d = json.loads((out / "result.json").read_text())
    assert d["blocks"]["head"]["top_eigenvalue"] is None and np.isfinite(d["overall"]["top_eigenvalue"])
    assert d["overall"]["hvp_mode"] in ("double_backward", "forward_over_reverse") and d["config"]["hvp_mode"] == "auto"
    assert (out / "report.html").is_file()


@pytest.mark.parametrize("case", ["missing", "not_a_checkpoint", "no_tokenizer", "bad_texts"])
def test_cli_bad_input_exits_nonzero_with_one_line(case, ckpt, tmp_path, capsys):
    from analyses.cli import main

    args = ["audit", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]
    want = "does not exist"
    if case == "not_a_checkpoint":
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "notes.txt").write_text("hi")
        args[1], want = str(tmp_path / "empty"), "no config.json"
    elif case == "no_tokenizer":
        make_tiny_bert().save_pretrained(tmp_path / "bare")
        args[1:2], want = [str(tmp_path / "bare"), "--texts", str(write_texts(tmp_path / "t.txt"))], "no tokenizer"
    elif case == "bad_texts":
        args[1:2], want = [str(ckpt), "--texts", str(tmp_path / "missing.txt")], "--texts"
    capsys.readouterr()
    assert main(args) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("landscape: error:")]
    assert len(err) == 1 and want in err[0]
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_analyze_audit_loads_the_tokenizer_given_by_flag(tmp_path, capsys, monkeypatch):
    """A checkpoint saved without a tokenizer audits with --tokenizer DIR, and that tokenizer is the one loaded."""
    from analyses import common
    from analyses.cli import main
    from saved_models import make_tokenizer

    make_tiny_bert().save_pretrained(tmp_path / "bare")
    make_tokenizer().save_pretrained(tmp_path / "tok")
    seen = []
    real = common.load_checkpoint
    monkeypatch.setattr(common, "load_checkpoint", lambda path, **kw: seen.append(kw.get("tokenizer")) or real(path, **kw))
    args = ["analyze", "audit", str(tmp_path / "bare"), "--out", str(tmp_path / "o"), "--texts",
            str(write_texts(tmp_path / "t.txt")), "--examples", "2", "--eval-examples", "2", "--points", "5",
            "--eig-iters", "2", "--trace-matvecs", "3", "--no-block-curvature", "--no-progress"]
    assert main(args) == 2 and "no tokenizer" in capsys.readouterr().err  # without the flag: a clear error
    assert main([*args, "--tokenizer", str(tmp_path / "tok"), "--allow-unk"]) == 0
    assert seen[-1] == str(tmp_path / "tok")
    d = json.loads((tmp_path / "o" / "result.json").read_text())
    assert d["config"]["tokenizer"] == str(tmp_path / "tok") and d["config"]["allow_unk"] is True


def test_the_three_analyses_take_tokenizer_and_allow_unk():
    """--tokenizer changes the tokens (so the result's settings), --allow-unk changes no number."""
    from dataclasses import fields

    from analyses.fisher_sharpness.study import FisherSharpnessConfig
    from analyses.guided_dropout.study import GuidedDropoutConfig

    for cls in (AuditConfig, FisherSharpnessConfig, GuidedDropoutConfig):
        meta = {f.name: f.metadata for f in fields(cls)}
        assert meta["tokenizer"]["affects"] == "result" and meta["allow_unk"]["affects"] == "nothing"
