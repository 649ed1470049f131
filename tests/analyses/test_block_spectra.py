"""Block spectra: the role table on every test architecture, the JS heterogeneity on known cases, the
analysis end to end (files, restore, resume, refusal), the figure, and torchrun 2 ranks == 1 process.

Run as a script (``torchrun --nproc_per_node=2 test_block_spectra.py OUT``) it is its own torchrun worker.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest and architectures
from conftest import make_mlm_batches, make_tiny_bert, mlm_objective, torchrun_worker  # noqa: E402

from analyses.block_spectra import study as bs  # noqa: E402
from analyses.block_spectra.blocks import role_of, transformer_blocks  # noqa: E402
from analyses.block_spectra.heterogeneity import JS_MAX, heterogeneity, js_divergence  # noqa: E402
from analyses.common import Target  # noqa: E402
from landscape import curvature  # noqa: E402
from landscape.params import ParamSpace  # noqa: E402

SEVEN = ("query", "key", "value", "attn_out", "ffn_in", "ffn_out", "norm")
FUSED = ("qkv", "attn_out", "ffn_in", "ffn_out", "norm")
#: architecture -> (layer groups, roles per layer)
EXPECTED = {
    "bert": (("layer.0", "layer.1"), SEVEN), "roberta": (("layer.0", "layer.1"), SEVEN),
    "distilbert": (("layer.0", "layer.1"), SEVEN), "albert": (("layer.shared",), SEVEN),
    "electra": (("layer.0", "layer.1"), SEVEN), "deberta-v2": (("layer.0", "layer.1"), SEVEN),
    "modernbert": (("layer.0", "layer.1"), FUSED), "gpt2": (("layer.0", "layer.1"), FUSED),
    "llama": (("layer.0", "layer.1"), SEVEN), "bert-cls": (("layer.0", "layer.1"), SEVEN),
}
SMALL = dict(examples=6, top_k=2, eig_max_iter=4, trace_matvecs=6, density_runs=2, lanczos_steps=4, num_grid=50,
             progress=False)


# ----------------------------------------------------------------------------- the block table


@pytest.mark.parametrize("arch", sorted(EXPECTED))
def test_block_table_on_every_architecture(arch):
    import architectures

    model = architectures.build(arch)
    blocks = transformer_blocks(model)
    layers, roles = EXPECTED[arch]
    assert list(blocks) == ["embeddings", *[f"{g}.{r}" for g in layers for r in roles], "head"]
    names = [n for ns in blocks.values() for n in ns]
    assert sorted(names) == sorted(ParamSpace(model).names)  # every tensor once, tied ones once


def test_roles_of_known_names():
    assert role_of("bert.encoder.layer.0.attention.output.dense.weight") == "attn_out"
    assert role_of("bert.encoder.layer.0.output.dense.weight") == "ffn_out"
    assert role_of("bert.encoder.layer.0.attention.output.LayerNorm.bias") == "norm"
    assert role_of("bert.encoder.layer.0.intermediate.dense.bias") == "ffn_in"
    assert role_of("model.layers.3.mlp.gate_proj.weight") == role_of("model.layers.3.mlp.up_proj.weight") == "ffn_in"
    assert role_of("transformer.h.0.attn.c_attn.weight") == "qkv"
    assert role_of("transformer.h.0.attn.c_proj.weight") == "attn_out"
    assert role_of("transformer.h.0.mlp.c_proj.weight") == "ffn_out"
    assert role_of("transformer.h.0.ln_2.weight") == "norm"
    assert role_of("encoder.layer.0.mystery.weight") == "other"


# ----------------------------------------------------------------------------- JS heterogeneity


def test_js_by_hand():
    # m = (¼, ½, ¼): KL(p‖m) = ½ ln 2 + ½ ln 1 = ½ ln 2, the same for q, so JS = ½ ln 2
    assert js_divergence(np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])) == pytest.approx(0.5 * math.log(2))
    assert js_divergence(np.array([1.0, 0.0]), np.array([0.0, 3.0])) == pytest.approx(JS_MAX)
    assert js_divergence(np.array([1.0, 2.0]), np.array([2.0, 4.0])) == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match="non-negative"):
        js_divergence(np.array([1.0, -1.0]), np.array([1.0, 1.0]))


def _dense(eigs: np.ndarray, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=torch.Generator().manual_seed(seed),
                                       dtype=torch.float64))
    return q @ torch.diag(torch.as_tensor(eigs)) @ q.T


def _slq(matrix: torch.Tensor, seed: int = 0) -> tuple[list, list]:
    d = curvature.spectral_density(curvature.MatrixOperator(matrix), num_runs=4, lanczos_steps=matrix.shape[0],
                                   seed=seed, progress=False)
    return d.nodes, d.weights


def test_identical_blocks_give_zero():
    n, w = _slq(_dense(np.linspace(1, 5, 20), 0))
    het = heterogeneity([n, n, n], [w, w, w])
    assert het["js_mean"] == pytest.approx(0.0, abs=1e-12) and np.allclose(het["js"], 0.0)


def test_disjoint_spectra_give_ln2():
    a, b = _slq(_dense(np.linspace(1, 2, 20), 0)), _slq(_dense(np.linspace(10, 11, 20), 1))
    het = heterogeneity([a[0], b[0]], [a[1], b[1]])
    assert het["js_mean"] == pytest.approx(JS_MAX, rel=1e-6) and het["log_base"] == "e"
    # three blocks, two alike: pairs (0,1) ≈ 0 ... no: (0,2) and (1,2) disjoint, (0,1) identical -> mean ⅔ ln 2
    het3 = heterogeneity([a[0], a[0], b[0]], [a[1], a[1], b[1]])
    assert het3["js_mean"] == pytest.approx(2 / 3 * JS_MAX, rel=1e-6)


def test_top_scale_compares_shapes_only():
    n, w = _slq(_dense(np.linspace(1, 2, 20), 0))
    big = [10 * x for x in n]  # the same spectrum, ten times larger: disjoint on raw scale
    assert heterogeneity([n, big], [w, w])["js_mean"] == pytest.approx(JS_MAX, rel=1e-6)
    assert heterogeneity([n, big], [w, w], scale="top")["js_mean"] == pytest.approx(0.0, abs=1e-9)


def test_heterogeneity_refuses_one_block():
    n, w = _slq(_dense(np.linspace(1, 5, 6), 0))
    with pytest.raises(ValueError, match="at least 2 blocks"):
        heterogeneity([n], [w])


# ----------------------------------------------------------------------------- the analysis


def _target(dtype: torch.dtype = torch.float32) -> Target:
    model = make_tiny_bert(dtype=dtype, layers=1, hidden=8)
    return Target(model, None, mlm_objective(), make_mlm_batches(n_batches=2, batch_size=3), "tiny-bert", "mlm")


def _state(model):
    return {n: t.detach().clone() for n, t in [*model.named_parameters(), *model.named_buffers()]}


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    target = _target()
    before, flags = _state(target.model), {n: m.training for n, m in target.model.named_modules()}
    out = tmp_path_factory.mktemp("block_spectra")
    res = bs.run(bs.BlockSpectraConfig(out=str(out), **SMALL), target=target)
    return res, out, target, before, flags


def test_every_block_and_file(analysed):
    res, out, target, *_ = analysed
    assert list(res.blocks) == ["embeddings", *[f"layer.0.{r}" for r in SEVEN], "head"]
    for b in res.blocks.values():
        assert set(b) == set(bs.BLOCK_FIELDS) and len(b["top_eigenvalues"]) == 2
        assert b["top_eigenvalues"][0] >= b["top_eigenvalues"][1] and b["trace_stderr"] is not None
        assert len(b["density"]["nodes"]) == 2 and all(abs(sum(w) - 1) < 1e-6 for w in b["density"]["weights"])
    het = res.heterogeneity
    assert het["blocks"] == list(res.blocks) and np.shape(het["js"]) == (9, 9) and 0 <= het["js_mean"] <= JS_MAX
    for name in ("result.json", "report.md", "settings.json", "figures/block_spectra.png"):
        assert (out / name).is_file(), name
    assert len(list((out / "parts").glob("block_*.json"))) == 9
    md = (out / "report.md").read_text()
    assert "| layer.0.query |" in md and "heterogeneity" in md and "figures/block_spectra.png" in md
    assert bs.BlockSpectraResult.load(out).blocks == json.loads(json.dumps(res.blocks))


def test_numbers_match_a_direct_call(analysed):
    res, out, target, *_ = analysed
    names = transformer_blocks(target.model)["layer.0.value"]
    op = curvature.HessianOperator(target.model, target.objective, target.data, params=names, mode="double_backward")
    tr = curvature.trace(op, num_matvecs=6, seed=0, progress=False)
    assert res.blocks["layer.0.value"]["trace"] == pytest.approx(tr.estimate, rel=1e-5, abs=1e-9)


def test_top_eigenvalues_come_from_the_slq_runs(analysed):
    res, *_ = analysed
    for b in res.blocks.values():  # no separate eigensolver run: Hutch++ and the SLQ runs only
        assert b["n_matvecs"] == SMALL["trace_matvecs"] // 3 * 3 + SMALL["density_runs"] * SMALL["lanczos_steps"]
        assert b["top_eigenvalues"][0] == pytest.approx(max(max(n) for n in b["density"]["nodes"]), rel=1e-12)
    eigs = np.array([9.0, 5.0, 4.0, *np.linspace(0.1, 1.0, 27)])
    full = curvature.spectral_density(curvature.MatrixOperator(_dense(eigs, 3)), num_runs=2, lanczos_steps=30,
                                      progress=False)
    top, converged = bs.top_from_density(full, 2, 1e-8)
    assert converged and top == pytest.approx([9.0, 5.0], rel=1e-10)
    short = curvature.spectral_density(curvature.MatrixOperator(_dense(eigs, 3)), num_runs=2, lanczos_steps=3,
                                       progress=False)
    top, converged = bs.top_from_density(short, 2, 1e-8)
    assert not converged and top[0] <= 9.0 + 1e-12  # Ritz values are lower bounds of λ₁


def test_weights_and_modes_restored(analysed):
    res, out, target, before, flags = analysed
    after = _state(target.model)
    assert all(torch.equal(before[k], after[k]) for k in before) and res.meta["restored"]
    assert {n: m.training for n, m in target.model.named_modules()} == flags


def test_resume_recomputes_nothing_and_refuses_other_settings(analysed, monkeypatch):
    res, out, target, *_ = analysed

    def boom(*a, **k):
        raise AssertionError("recomputed")

    monkeypatch.setattr(bs.curvature, "HessianOperator", boom)
    again = bs.run(bs.BlockSpectraConfig(out=str(out), resume=True, **SMALL), target=target)
    assert again.blocks == json.loads(json.dumps(res.blocks))
    assert again.heterogeneity["js_mean"] == pytest.approx(res.heterogeneity["js_mean"], rel=1e-12)
    with pytest.raises(ValueError, match=r"other settings.*top_k=2 \(now 3\)"):
        bs.run(bs.BlockSpectraConfig(out=str(out), resume=True, **(SMALL | {"top_k": 3, "eig_max_iter": 5})),
               target=target)


def test_figure_redrawn_from_the_folder(analysed, tmp_path):
    from figures import plot_block_spectra

    res, out, *_ = analysed
    path = tmp_path / "again.png"
    fig = plot_block_spectra(out, save=path)
    assert path.stat().st_size > 10_000 and len(fig.axes) == 9 + 2


@pytest.mark.parametrize("bad, match", [
    ({"top_k": 3, "eig_max_iter": 3}, "--eig-iters > --top-k"),
    ({"trace_matvecs": 3}, "--trace-matvecs must be at least 6"),
    ({"lanczos_steps": 1}, "--lanczos-steps ≥ 2"),
    ({"sigma_fraction": 0.0}, "--sigma-fraction > 0"),
    ({"examples": 0}, "--examples"),
])
def test_config_refuses_bad_settings(bad, match):
    with pytest.raises(ValueError, match=match):
        bs.BlockSpectraConfig(**bad)


def test_cli_lists_the_analysis():
    from analyses.cli.analyze import studies

    assert "block-spectra" in studies()


# ----------------------------------------------------------------------------- torchrun


def _run(out: Path, distributed: bool) -> bs.BlockSpectraResult:
    torch.set_num_threads(1)
    cfg = bs.BlockSpectraConfig(out=str(out), distributed=distributed, hvp_mode="double_backward", **SMALL)
    return bs.run(cfg, target=_target(torch.float64))


@pytest.mark.slow
def test_torchrun_two_ranks_equals_one_process(tmp_path):
    torchrun_worker(Path(__file__), str(tmp_path / "dist"))
    dist = json.loads((tmp_path / "dist" / "result.json").read_text())
    one = _run(tmp_path / "one", distributed=False)
    assert dist["meta"]["world_size"] == 2 and one.meta["world_size"] == 1
    for name, b in one.blocks.items():
        d = dist["blocks"][name]
        np.testing.assert_allclose(d["top_eigenvalues"], b["top_eigenvalues"], rtol=1e-6, atol=1e-12)
        assert d["trace"] == pytest.approx(b["trace"], rel=1e-6, abs=1e-12)
        for x, y in zip(d["density"]["nodes"], b["density"]["nodes"]):
            np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-10)
    assert dist["heterogeneity"]["js_mean"] == pytest.approx(one.heterogeneity["js_mean"], rel=1e-5, abs=1e-9)


if __name__ == "__main__":  # the torchrun worker: every rank runs the analysis, rank 0 writes
    import torch.distributed as torch_dist

    _run(Path(sys.argv[1]), distributed=True)
    torch_dist.barrier()
    torch_dist.destroy_process_group()
