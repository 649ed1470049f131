"""A new analysis in one file: the loss at θ₀ on held-out data, as ``landscape analyze toy``.

Run it as ``python examples/extending_analysis.py [CHECKPOINT] --examples 16 --out runs/toy``. The
three steps every analysis takes (see :mod:`analyses.study`):

1. a config dataclass whose fields are :func:`~analyses.study.setting` s: default, help text and
   whether the field changes numbers (``affects="nothing"`` for where and how to run);
2. a result dataclass that mixes in :class:`~analyses.study.FolderResult` (``result.json`` in ``out``);
3. a ``run(config) -> result`` function, and a :class:`~analyses.study.Study` record naming it with
   ``name``, ``help``, ``config`` and ``summary``, passed to :func:`~analyses.study.register`: its
   command and flags follow from the config.
"""

from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from typing import Any

from analyses.cli import main
from analyses.common import load_target, read_texts
from analyses.study import FolderResult, Study, register, setting


@dataclass
class ToyConfig:
    """Settings of the toy analysis; each becomes a flag of ``landscape analyze toy``."""

    checkpoint: str = setting("default", "local checkpoint folder, or 'default'", positional=True)
    out: str = setting("runs/toy", "output folder", affects="nothing")
    texts: str | None = setting(None, "text file, one text per line (default: the held-out stdlib docstrings)")
    examples: int = setting(16, "held-out sequences to evaluate")
    seed: int = setting(0, "MLM mask seed")
    progress: bool = setting(True, "show progress bars", affects="nothing")


@dataclass
class ToyResult(FolderResult):
    """The loss L(θ₀) = Σᵢ sᵢ / Σᵢ nᵢ over the held-out sequences (sᵢ: summed token losses, nᵢ: their count)."""

    loss: float
    n_examples: int
    config: dict[str, Any]
    out: str = ""


def run(config: ToyConfig) -> ToyResult:
    """Load the checkpoint and texts, evaluate the loss at θ₀ and write ``result.json``."""
    texts = read_texts(config.texts)
    target = load_target(config.checkpoint, examples=config.examples, seed=config.seed, texts=texts)
    loss = target.objective.evaluate(target.model, target.data)
    result = ToyResult(loss=loss, n_examples=target.n_examples, config=asdict(config), out=config.out)
    result.save(config.out)
    return result


def summary(result: ToyResult) -> str:
    """What ``landscape analyze toy`` prints before its ``wrote ...`` line."""
    return f"loss at θ₀: {result.loss:.6f} on {result.n_examples} sequences"


register(Study(name="toy", help="the loss at the checkpoint's weights on held-out data", config=ToyConfig, run=run,
               summary=summary, description="The loss at θ₀: the smallest analysis, a template for new ones."))

if __name__ == "__main__":
    sys.exit(main(["analyze", "toy", *sys.argv[1:]]))
