"""The guided-dropout study (``landscape analyze guided-dropout``).

Does Fisher-guided dropout (Sharma et al., 2024) beat uniform dropout when fine-tuning on little
data, and does it beat controls that use the same multiset of rates in reversed or random order?
:func:`run` fine-tunes one classifier per (task, training size, seed, arm), paired across arms, and
writes ``result.json``, ``runs.jsonl``, ``rates.json``, ``fisher.safetensors``, ``figures/`` and
``report.md``. The method itself lives in :mod:`landscape.dropout`.

* :mod:`~analyses.guided_dropout.tasks`: the stdlib-docstring tasks and user CSV/JSONL tasks;
* :mod:`~analyses.guided_dropout.train`: one paired fine-tuning run;
* :mod:`~analyses.guided_dropout.stats`: intervals, paired tests, verdicts;
* :mod:`~analyses.guided_dropout.study`: :class:`GuidedDropoutConfig`, :func:`run`;
* :mod:`~analyses.guided_dropout.report`: ``report.md`` and the figures;
* :mod:`analyses.cli.guided_dropout`: ``landscape guided-dropout`` and ``landscape analyze guided-dropout``.
"""

from __future__ import annotations

from analyses.guided_dropout.study import (
    ARMS,
    GuidedDropoutConfig,
    GuidedDropoutResult,
    run,
)

__all__ = ["ARMS", "GuidedDropoutConfig", "GuidedDropoutResult", "run"]
