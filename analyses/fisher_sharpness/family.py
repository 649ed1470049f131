"""The models the study runs on and how each one's held-out data is split.

``--models N`` on the embedded default loads the family :class:`landscape.models.DefaultModelConfig`
``(seed=s)`` for s = 0 … N−1 (same recipe and held-out split, another initialization and data
order), building any that are not cached. A user's checkpoint is one model.

Each model's held-out rows are split, in order, into ``K`` disjoint Fisher samples of
``fisher_examples`` rows and an evaluation pool of ``eval_examples`` rows. The pool's rows are
grouped into *documents*, the bootstrap's clusters: on the default model the docstring each row
came from (:meth:`DefaultModel.heldout_groups`); for ``--texts`` each line is its own document
(a line becomes one sequence, so rows are independent draws only as far as the lines are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analyses.common import Target, load_target, read_texts, split_examples
from landscape import objectives

#: where a ``--texts`` run takes its documents from
TEXTS_DOCUMENTS = "each line of --texts is its own document"
DEFAULT_DOCUMENTS = "the docstring each held-out row came from (DefaultModel.heldout_groups('document'))"


@dataclass
class Member:
    """One model of the family with its data: ``fisher`` K lists of batches, ``eval`` the pool,
    ``groups [N]`` each pool sequence's document, ``documents`` how documents were defined."""

    index: int
    target: Target
    fisher: list[list[dict[str, Any]]]
    eval: list[dict[str, Any]]
    groups: np.ndarray
    documents: str
    row_groups: np.ndarray

    def objective(self, draw: int) -> objectives.Objective:
        """The MLM objective of mask draw ``draw`` (seed + draw); other objectives have one draw."""
        obj = self.target.objective
        if not isinstance(obj, objectives.MaskedLM):
            return obj
        return objectives.MaskedLM(mask_prob=obj.mask_prob, seed=obj.seed + draw, mask_token_id=obj.mask_token_id,
                                   special_token_ids=obj.special_token_ids)


def needed_rows(cfg: Any) -> int:
    """Held-out rows one model needs: K Fisher samples and the pool."""
    return int(cfg.fisher_samples * cfg.fisher_examples + cfg.eval_examples)


def _default_target(cfg: Any, seed: int) -> tuple[Target, np.ndarray]:
    """The default family's member ``seed`` and the document of each held-out row."""
    from landscape.models.checkpoints import quiet_transformers
    from landscape.models.default_model import DefaultModelConfig, load_default

    with quiet_transformers():
        dm = load_default(DefaultModelConfig(seed=seed), progress=cfg.progress)
    n = needed_rows(cfg)
    data = dm.heldout_batches(batch_size=cfg.batch_size, max_examples=n)
    obj = objectives.MaskedLM(mask_prob=cfg.mask_prob, seed=cfg.seed, tokenizer=dm.tokenizer)
    meta = {"checkpoint": "default", "default_model": dm.metadata, "path": str(dm.path), "model_seed": seed}
    groups = np.asarray(dm.heldout_groups("document"), np.int64)
    return Target(dm.model.to(cfg.device), dm.tokenizer, obj, data, f"default (seed {seed})", "mlm", meta), groups


def load_family(cfg: Any, targets: list[Target] | None = None, groups: Any = None) -> list[Member]:
    """The study's models, each with its Fisher samples, pool and documents.

    ``targets``/``groups``: given directly (tests, notebooks); ``groups`` are per held-out row of
    each target (default: every row its own document).
    """
    rows: list[tuple[Target, np.ndarray, str]] = []
    if targets is not None:
        for t in targets:
            g = np.arange(t.n_examples) if groups is None else np.asarray(groups, np.int64)
            rows.append((t, g, "given with the target" if groups is not None else "every row its own document"))
    elif cfg.checkpoint in (None, "", "default") and cfg.texts is None:
        for s in range(cfg.models):
            t, g = _default_target(cfg, s)
            rows.append((t, g, DEFAULT_DOCUMENTS))
    else:
        if cfg.models > 1:
            raise ValueError(f"--models {cfg.models} needs the default model family (independently pretrained "
                             "seeds); a checkpoint or --texts run has one model: use --models 1.")
        t = load_target(cfg.checkpoint, examples=needed_rows(cfg), batch_size=cfg.batch_size, device=cfg.device,
                        seed=cfg.seed, texts=read_texts(cfg.texts), max_length=cfg.max_length,
                        mask_prob=cfg.mask_prob, tokenizer=cfg.tokenizer, allow_unk=cfg.allow_unk)
        rows.append((t, np.arange(t.n_examples), TEXTS_DOCUMENTS if cfg.texts else DEFAULT_DOCUMENTS))
    return [split_member(cfg, i, t, g, why) for i, (t, g, why) in enumerate(rows)]


def split_member(cfg: Any, index: int, target: Target, groups: np.ndarray, documents: str) -> Member:
    """K disjoint Fisher samples, then the pool; the pool's documents relabelled 0 … G−1 (``groups``:
    the document of every held-out row of ``target``)."""
    k, f, n = cfg.fisher_samples, cfg.fisher_examples, cfg.eval_examples
    fisher_rows, pool = split_examples(target.data, k * f, n, cfg.batch_size)
    samples = [split_examples(fisher_rows, i * f, f, cfg.batch_size)[1] for i in range(k)]
    g = np.asarray(groups)[k * f: k * f + n]
    if g.size != n:
        raise ValueError(f"{target.name}: {g.size} document labels for {n} evaluation sequences.")
    return Member(index, target, samples, pool, np.unique(g, return_inverse=True)[1], documents, np.asarray(groups))
