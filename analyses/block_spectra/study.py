"""Per-block Hessian spectra of a transformer in one call: ``landscape analyze block-spectra [CKPT]``.

For each block of :func:`analyses.block_spectra.blocks.transformer_blocks` (embeddings; per layer
query, key, value or fused qkv, attention output, feed-forward in and out, LayerNorm; head), the
diagonal Hessian block H_bb (:class:`landscape.curvature.HessianOperator` with ``params=`` the
block's :class:`~landscape.params.ParamSpace`) on ``examples`` held-out sequences gives:

- an SLQ density (:func:`landscape.curvature.spectral_density`: ``density_runs`` runs of
  ``lanczos_steps`` steps; nodes and weights kept);
- the ``top_k`` largest eigenvalues: the Ritz values of those same Lanczos runs (the best run's,
  with the Lanczos convergence bound at ``eig_tol``; no separate eigensolver run);
- tr(H_bb) by Hutch++ with its standard error (:func:`landscape.curvature.trace`), and tr/dim.

Then the block heterogeneity (:mod:`analyses.block_spectra.heterogeneity`): pairwise Jensen–Shannon
divergences (nats) between the blocks' densities on one common grid, and their mean.

Outputs under ``out``: ``result.json``, ``parts/block_<name>.json`` (one per finished block, for
``resume``), ``figures/block_spectra.png`` and ``report.md``. Under ``torchrun`` every rank runs
the same blocks on its share of the examples (the operator all-reduces each product) and rank 0
alone writes. The model's weights, buffers and train/eval flags are restored exactly.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from tqdm.auto import tqdm

from analyses.block_spectra.blocks import ROLE_RULES, transformer_blocks
from analyses.block_spectra.heterogeneity import heterogeneity
from analyses.cli.config_flags import CliArg
from analyses.common import Target, heldout_texts, load_target
from analyses.study import FolderResult, Resume, Study, TextSettings, register, result_settings, setting
from landscape import curvature
from landscape.curvature.eigensolvers import ritz_converged, wanted
from landscape.params import ParamSpace, group_note
from landscape.perturb import preserved
from landscape.util import data_fingerprint, settings_fingerprint, weights_fingerprint
from landscape.util.distributed import DistContext, dist_context
from landscape.util.files import finite_or_none, read_json
from landscape.util.meta import result_meta

BLOCK_FIELDS = ("tensors", "n_params", "top_eigenvalues", "eig_converged", "trace", "trace_stderr",
                "trace_per_param", "density", "n_matvecs", "seconds")


def _texts_file(path: str | None, args: Any) -> list[str] | None:
    from analyses.common import read_texts

    return read_texts(path)


@dataclass
class BlockSpectraConfig(TextSettings):
    """Settings; the defaults run on the embedded default model in about two minutes on 2 CPU cores."""

    checkpoint: str = setting("default", "local Hugging Face checkpoint directory, .safetensors or .pt file; "
                              "'default': the embedded default model", positional=True, affects="nothing")
    out: str = setting("", "output folder (default: runs/block-spectra-<checkpoint name>)", affects="nothing")
    examples: int = setting(4, "held-out sequences the Hessian is taken on (≥ 1)")
    batch_size: int = setting(4, "sequences per batch (≥ 1)")
    max_length: int = setting(64, "tokens per sequence at most (≥ 2; capped at the model's positions)")
    texts: list[str] | None = setting(None, "UTF-8 file of texts, one per line (default: the held-out stdlib "
                                      "docstrings)", cli=CliArg(type=str, metavar="FILE", convert=_texts_file))
    top_k: int = setting(3, "top eigenvalues per block (≥ 1)")
    eig_max_iter: int = setting(8, "Lanczos steps at least for the top eigenvalues (the SLQ runs take max(this, "
                                "--lanczos-steps) steps; > top_k)", flag="--eig-iters")
    eig_tol: float = setting(1e-2, "relative tolerance of the top eigenvalues")
    trace_matvecs: int = setting(6, "Hutch++ matvecs per block (≥ 6, for a standard error)")
    density_runs: int = setting(2, "SLQ runs per block (≥ 1)")
    lanczos_steps: int = setting(8, "Lanczos steps per SLQ run (≥ 2)")
    sigma_fraction: float = setting(0.01, "Gaussian smoothing width of the JS densities, as a fraction of the "
                                    "range of every block's Ritz values (> 0)")
    js_scale: Literal["raw", "top"] = setting("raw", "JS on the eigenvalues as they are (raw), or on each block's "
                                              "spectrum divided by its largest |Ritz value| (top: shapes only)")
    num_grid: int = setting(400, "points of the common density grid (≥ 10)")
    hvp_mode: Literal["auto", "double_backward", "forward_over_reverse"] = setting(
        "double_backward", "Hessian-vector product mode (auto times both first)")
    mask_prob: float = setting(0.15, "MLM mask probability")
    seed: int = setting(0, "random seed (masks, start vectors, probes)")
    device: str = setting("cpu", "torch device, e.g. cpu or cuda:0", affects="nothing")
    distributed: bool = setting(True, "shard the examples across ranks when launched with torchrun",
                                affects="nothing")
    resume: bool = setting(False, "reuse finished blocks in --out (refused under other settings)", affects="nothing")

    def __post_init__(self) -> None:
        if not self.out:
            name = "default" if self.checkpoint in ("", "default") else \
                Path(self.checkpoint).expanduser().resolve().name
            self.out = f"runs/block-spectra-{name}"
        if self.examples < 1 or self.batch_size < 1:
            raise ValueError(f"--examples and --batch-size must be at least 1, got {self.examples}, "
                             f"{self.batch_size}.")
        if self.top_k < 1 or self.eig_max_iter <= self.top_k:
            raise ValueError(f"need --top-k ≥ 1 and --eig-iters > --top-k, got {self.top_k}, {self.eig_max_iter}.")
        if self.trace_matvecs < 6:
            raise ValueError(f"--trace-matvecs must be at least 6 (Hutch++ needs 2 residual probes for a standard "
                             f"error), got {self.trace_matvecs}.")
        if self.density_runs < 1 or self.lanczos_steps < 2:
            raise ValueError(f"need --density-runs ≥ 1 and --lanczos-steps ≥ 2, got {self.density_runs}, "
                             f"{self.lanczos_steps}.")
        if not self.sigma_fraction > 0 or self.num_grid < 10:
            raise ValueError(f"need --sigma-fraction > 0 and --num-grid ≥ 10, got {self.sigma_fraction}, "
                             f"{self.num_grid}.")


@dataclass
class BlockSpectraResult(FolderResult):
    """``blocks``: name -> :data:`BLOCK_FIELDS`; ``heterogeneity``: the JS summary of
    :func:`~analyses.block_spectra.heterogeneity.heterogeneity` plus ``blocks`` (its row order)."""

    config: dict[str, Any]
    blocks: dict[str, dict[str, Any]]
    heterogeneity: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    out: str = ""


def top_from_density(dens: curvature.DensityResult, k: int, tol: float) -> tuple[list[float], bool]:
    """The k largest Ritz values of the SLQ run whose largest Ritz value is largest (Ritz values are
    lower bounds of λ₁, so that run's are the best), descending, and whether they meet the Lanczos
    bound min(r, r²/gap) ≤ tol·|θ| (:func:`~landscape.curvature.eigensolvers.ritz_converged`)."""
    best = max(range(len(dens.nodes)), key=lambda r: float(np.max(dens.nodes[r])))
    theta, res = dens.nodes[best], dens.residuals[best]
    top = sorted((float(t) for t in theta[wanted(theta, k, "largest")]), reverse=True)
    return top, ritz_converged(theta, res, min(k, len(theta) - 1), "largest", tol) if len(theta) > 1 else True


def block_spectrum(cfg: BlockSpectraConfig, target: Target, space: ParamSpace, distributed: bool,
                   check: bool = True) -> dict[str, Any]:
    """Top-k eigenvalues, Hutch++ trace (± stderr) and SLQ nodes/weights of one Hessian block.

    The top eigenvalues come from the SLQ runs' own Lanczos (:func:`top_from_density`), so a block
    costs ``trace_matvecs + density_runs·lanczos_steps`` products; with ``eig_max_iter`` larger
    than ``lanczos_steps`` the runs take that many steps. ``check``: the operator's determinism check.
    """
    t0 = time.perf_counter()
    op = curvature.HessianOperator(target.model, target.objective, target.data, params=space, mode=cfg.hvp_mode,
                                   distributed=distributed, check_determinism=check)
    k = min(cfg.top_k, op.dim - 1) if op.dim > 1 else 1
    steps = min(max(cfg.lanczos_steps, cfg.eig_max_iter), op.dim)
    dens = curvature.spectral_density(op, num_runs=cfg.density_runs, lanczos_steps=steps, seed=cfg.seed,
                                      progress=False)
    top, converged = top_from_density(dens, k, cfg.eig_tol)
    tr = curvature.trace(op, num_matvecs=cfg.trace_matvecs, seed=cfg.seed, progress=False)
    op.release_graph()
    return {"tensors": list(space.names), "n_params": op.dim, "top_eigenvalues": top,
            "eig_converged": bool(converged), "trace": float(tr.estimate),
            "trace_stderr": finite_or_none(tr.stderr),
            "trace_per_param": float(tr.estimate) / op.dim,
            "density": {"nodes": [n.tolist() for n in dens.nodes], "weights": [w.tolist() for w in dens.weights],
                        "sigma": dens.sigma},
            "n_matvecs": int(tr.n_matvecs + dens.n_matvecs), "seconds": time.perf_counter() - t0}


class _Follower:
    """A non-zero rank's view of rank 0's parts: the same settings check and reads, no writes."""

    def __init__(self, out: Path, settings: dict[str, Any], resume: bool) -> None:
        self.parts, self.resume = out / "parts", resume
        record = out / Resume.RECORD
        mine = settings_fingerprint(json.loads(json.dumps(settings, default=str)))
        if resume and record.is_file() and read_json(record, what="settings record").get("settings_hash") != mine:
            raise ValueError(f"cannot resume from {out}: it was computed with other settings; use another --out, or "
                             "drop --resume to recompute everything.")

    def get(self, key: str) -> Any:
        path = self.parts / f"{key}.json"
        return read_json(path, what="part file")["data"] if self.resume and path.is_file() else None

    def put(self, key: str, data: Any) -> None:
        """Rank 0 writes."""


#: one product through a block's kept first-backward graph, plus its share of the block's setup, in
#: gradients of the whole model (measured on the default model, 4×64 tokens: see BENCHMARKS.md)
PRODUCT_GRADIENTS = 2.0


def block_products(cfg: BlockSpectraConfig) -> int:
    """Products per block: Hutch++ (``trace_matvecs`` rounded down to 3s) and the SLQ runs."""
    return cfg.trace_matvecs // 3 * 3 + cfg.density_runs * max(cfg.lanczos_steps, cfg.eig_max_iter)


def announce_estimate(cfg: BlockSpectraConfig, target: Target, n_blocks: int) -> str:
    """Time one gradient on the data (weights, modes and RNG untouched) and print the estimated time:
    ``n_blocks · block_products · PRODUCT_GRADIENTS`` gradients (blocks smaller than the products are
    counted in full, so small models finish early)."""
    from analyses.cli.eta import announce, time_gradient

    unit_s = time_gradient(target.model, target.objective, target.data)
    return announce(n_blocks * block_products(cfg) * PRODUCT_GRADIENTS, unit_s, "gradients")


def _load(cfg: BlockSpectraConfig) -> Target:
    texts = cfg.texts
    if texts is None and cfg.checkpoint not in ("", "default"):
        texts = heldout_texts(cfg.examples)
    return load_target(cfg.checkpoint, examples=cfg.examples, batch_size=cfg.batch_size, device=cfg.device,
                       seed=cfg.seed, texts=texts, max_length=cfg.max_length, mask_prob=cfg.mask_prob,
                       tokenizer=cfg.tokenizer, allow_unk=cfg.allow_unk)


def block_spectra_settings(cfg: BlockSpectraConfig, target: Target) -> dict[str, Any]:
    """Everything the numbers depend on: the config, the weights, the data and the block table."""
    texts = None if cfg.texts is None else settings_fingerprint({"texts": list(cfg.texts)})
    return result_settings(cfg) | {"texts": texts, "weights": weights_fingerprint(target.model),
                                   "data": data_fingerprint(target.data), "objective": target.objective.describe(),
                                   "role_rules": [list(r) for r in ROLE_RULES]}


def run(config: BlockSpectraConfig | None = None, target: Target | None = None) -> BlockSpectraResult:
    """Block spectra of ``target`` (default: ``config.checkpoint``); rank 0 writes under ``config.out``."""
    cfg = config or BlockSpectraConfig()
    t_start = time.perf_counter()
    target = target or _load(cfg)
    ctx = dist_context() if cfg.distributed else DistContext()
    out = Path(cfg.out)
    settings = block_spectra_settings(cfg, target)
    parts: Resume | _Follower
    parts = Resume(out, settings, cfg.resume) if ctx.is_main else _Follower(out, settings, cfg.resume)
    if cfg.progress and ctx.is_main:
        todo = [b for b in transformer_blocks(target.model) if parts.get(f"block_{b}") is None]
        if todo:
            announce_estimate(cfg, target, len(todo))
    with preserved(target.model) as state:
        blocks = _blocks(cfg, target, parts, ctx.active)
    names = list(blocks)
    het = heterogeneity([b["density"]["nodes"] for b in blocks.values()],
                        [b["density"]["weights"] for b in blocks.values()], cfg.sigma_fraction, cfg.num_grid,
                        cfg.js_scale) \
        if len(blocks) > 1 else {"js_mean": None, "js_max": None, "js": [[0.0]], "grid": [], "densities": [],
                                 "sigma": None, "log_base": "e", "scale": cfg.js_scale}
    meta = result_meta(target.model, block_spectra_settings(cfg, target), target=target.name, task=target.task,
                       n_examples=cfg.examples, world_size=ctx.world_size, restored=state.is_restored(),
                       block_notes={b: n for b in names if (n := group_note(b.rpartition(".")[0] or b))},
                       seconds=time.perf_counter() - t_start, resumed=cfg.resume, checkpoint=target.meta)
    config_d = {k: v for k, v in asdict(cfg).items() if k != "texts"} | {
        "texts": None if cfg.texts is None else len(cfg.texts)}
    result = BlockSpectraResult(config_d, blocks, het | {"blocks": names}, meta, str(out))
    if ctx.is_main:
        from analyses.block_spectra.report import write_outputs

        result.save(out)
        write_outputs(result, out)
    return result


def _blocks(cfg: BlockSpectraConfig, target: Target, parts: Resume | _Follower,
            distributed: bool) -> dict[str, dict[str, Any]]:
    """Every block's spectrum, each reused from ``parts`` when resuming."""
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(transformer_blocks(target.model).items(), desc="block spectra", disable=not cfg.progress)
    checked = False  # the determinism check (one extra forward) once per run, not per block
    for name, names in bar:
        bar.set_postfix_str(name)
        entry = parts.get(f"block_{name}")
        if entry is None:
            entry = block_spectrum(cfg, target, ParamSpace.from_names(target.model, names), distributed, not checked)
            checked = True
            parts.put(f"block_{name}", entry)
        results[name] = entry
    return results


def summary(result: BlockSpectraResult) -> str:
    """The block table and the heterogeneity."""
    from analyses.block_spectra.report import block_table

    js = result.heterogeneity["js_mean"]
    return (block_table(result.to_dict()) + "\n\nheterogeneity (mean pairwise JS, nats): "
            f"{'-' if js is None else f'{js:.4g}'}")


#: one line for ``landscape analyze --help``
HELP = "per-block Hessian eigenvalues, traces, densities and their JS heterogeneity"
#: the command's long help (``landscape analyze NAME --help``)
DESCRIPTION = ("Per-block Hessian spectra of a transformer: for embeddings, each layer's query, key, value (or "
               "fused qkv), attention output, feed-forward in/out and LayerNorm, and the head: the top eigenvalues, "
               "the Hutch++ trace with its standard error and an SLQ density; the Jensen–Shannon heterogeneity "
               "between the blocks' densities (Zhang et al., 2024); a figure and report.md. Raise --examples, "
               "--eig-iters, --trace-matvecs, --density-runs and --lanczos-steps for tighter estimates (time grows "
               "about linearly).")


register(Study(name="block-spectra", config=BlockSpectraConfig, run=run, summary=summary,
               help=HELP, description=DESCRIPTION, files="result.json, report.md and figures/"))
