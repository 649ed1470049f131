"""``landscape default-model``: build (first time) or load the embedded default model.

The default model is a small BERT pretrained offline on the docstrings of the Python standard
library; it is cached under ``$LANDSCAPE_CACHE`` or ``~/.cache/landscape``. This command prints
the cache path, the held-out masked-LM loss next to the unigram baseline, the held-out rows'
docstrings and modules (the clusters a bootstrap resamples), and the build/load time. ``--seed S``
builds a variant with another seed and data order: a family of models for replication.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

NAME = "default-model"
HELP = "build or load the embedded default model (small BERT on stdlib docstrings) and report it"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags: --rebuild, --cache-dir, --seed, --steps, --no-progress."""
    parser.add_argument("--rebuild", action="store_true", help="retrain even if a cached model exists")
    parser.add_argument("--cache-dir", default=None,
                        help="cache root (default: $LANDSCAPE_CACHE or ~/.cache/landscape)")
    parser.add_argument("--seed", type=int, default=None, help="pretraining seed (default: the config's, 0)")
    parser.add_argument("--steps", type=int, default=None, help="pretraining steps (default: the config's)")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args: argparse.Namespace) -> int:
    """Build or load the default model and print where it is and how good it is."""
    from landscape.models.checkpoints import quiet_transformers
    from landscape.models.default_model import DefaultModelConfig, load_default

    overrides = {k: v for k, v in (("seed", getattr(args, "seed", None)), ("steps", getattr(args, "steps", None)))
                 if v is not None}
    if overrides.get("steps", 1) < 1:
        raise ValueError("--steps must be at least 1.")
    cfg = dataclasses.replace(DefaultModelConfig(), **overrides)
    t0 = time.perf_counter()
    with quiet_transformers():  # no transformers "Loading weights" bar between our lines
        dm = load_default(cfg, cache_dir=getattr(args, "cache_dir", None),
                          rebuild=bool(getattr(args, "rebuild", False)),
                          progress=not getattr(args, "no_progress", False))
    seconds = time.perf_counter() - t0
    m = dm.metadata
    gap = m["unigram_entropy"] - m["heldout_loss"]
    print(f"path:             {dm.path}")
    print(f"held-out loss:    {m['heldout_loss']:.4f} nats (masked LM, p=0.15, seed 0; "
          f"{m['n_heldout_sequences']} held-out sequences)")
    print(f"unigram baseline: {m['unigram_entropy']:.4f} nats (gap {gap:.3f})")
    print(f"held-out groups:  {m['n_heldout_sequences']} rows from {m['n_heldout_docstrings']} docstrings in "
          f"{m['n_heldout_modules']} modules (DefaultModel.heldout_groups); pretrained with dropout "
          f"{m['config']['dropout']:g}")
    if dm.from_cache:
        print(f"loaded from cache in {seconds:.2f} s (built in {m['build_seconds']:.1f} s, "
              f"pretraining {m['pretrain_seconds']:.1f} s)")
    else:
        print(f"built in {seconds:.1f} s (pretraining {m['pretrain_seconds']:.1f} s)")
    return 0
