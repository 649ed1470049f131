"""The flagship study: is the pretraining loss sharper along high-Fisher parameters than along
random or low-Fisher ones (Sharma et al., 2024)? Two arms: the paper's protocol (P) and a
controlled comparison at equal norm (E), replicated over models, Fisher samples, MLM mask draws,
direction seeds and evaluation documents.

- ``config``: :class:`FisherSharpnessConfig`, every setting and its check.
- ``study``: :func:`run` -> :class:`FisherSharpnessResult`, stages and resume.
- ``family``: the models (``--models N``), their Fisher samples, pools and documents.
- ``cells``: one (model, Fisher sample, mask draw) cell; the two direction constructions.
- ``first_cell``: surfaces, trace, eigenvalue, FD check, the other Fisher loss.
- ``arms``: the masks and directions of each arm.
- ``measure``: per-seed, per-sequence forward-pass numbers of one mask; trace and top eigenvalue.
- ``hierarchy``: the hierarchical bootstrap, variance components, Holm.
- ``statistics``: censored medians.
- ``summary``, ``secondary``: raw cells -> endpoints, the sweep, per-model rows, secondaries.
- ``verdict``, ``report_lines``: plain words from intervals.
- ``reference``: summary numbers of 2D surfaces (ours and the paper's published ones).
- ``report``, ``report_tables``: figures and ``report.md`` from a result or its folder.
- ``estimate``: the estimated time and the ``--budget`` cap.
- ``gallery``: publish a run as the README's gallery.
"""

from analyses.fisher_sharpness.arms import matrix_space
from analyses.fisher_sharpness.config import FisherSharpnessConfig
from analyses.fisher_sharpness.study import FisherSharpnessResult, run

__all__ = ["FisherSharpnessConfig", "FisherSharpnessResult", "run", "matrix_space"]
