"""The guided-dropout study (``landscape analyze guided-dropout``).

Does Fisher-guided dropout (Sharma et al., 2024) beat the same amount of dropout spread evenly, and a
random order of its own rates, when fine-tuning on little data?
:func:`run` fine-tunes one classifier per (task, training size, seed, arm), paired across arms, and
writes ``result.json``, ``runs.jsonl``, ``rates.json``, ``fisher.safetensors``, ``figures/`` and
``report.md``. The method itself lives in :mod:`landscape.dropout`.

* :mod:`~analyses.guided_dropout.tasks`: the stdlib-docstring tasks and user CSV/JSONL tasks;
* :mod:`~analyses.guided_dropout.arms`: the arms, one definition each, and their rates;
* :mod:`~analyses.guided_dropout.train`: one paired fine-tuning run (paper or select recipe);
* :mod:`~analyses.guided_dropout.grid`: the grid of paired runs, resumable, in (task, seed, size) units;
* :mod:`~analyses.guided_dropout.pool`: the units in ``--workers`` processes, the same numbers;
* :mod:`~analyses.guided_dropout.stats`: primary contrasts (Holm), MDE, TOST, verdict words;
* :mod:`~analyses.guided_dropout.stability`: site ranks from two disjoint Fisher halves;
* :mod:`~analyses.guided_dropout.gallery`: the README's answers from a committed report;
* :mod:`~analyses.guided_dropout.study`: :class:`GuidedDropoutConfig`, :func:`run`;
* :mod:`~analyses.guided_dropout.report`: ``report.md`` and the figures;
* :mod:`analyses.cli.guided_dropout`: ``landscape guided-dropout`` and ``landscape analyze guided-dropout``.
"""

from __future__ import annotations

from analyses.guided_dropout.arms import ARMS, DEFAULT_ARMS
from analyses.guided_dropout.study import (
    GuidedDropoutConfig,
    GuidedDropoutResult,
    run,
)

__all__ = ["ARMS", "DEFAULT_ARMS", "GuidedDropoutConfig", "GuidedDropoutResult", "run"]
