"""The flagship study: is the pretraining loss sharper along high-Fisher parameters than along
random or low-Fisher ones (Sharma et al., 2024)? Two arms: the paper's protocol (P) and a
controlled comparison at equal norm (E).

- ``study``: :class:`FisherSharpnessConfig`, :func:`run` -> :class:`FisherSharpnessResult`, resume.
- ``arms``: the masks and directions of each arm.
- ``measure``: per-seed, per-sequence forward-pass numbers of one mask; trace and top eigenvalue.
- ``statistics``: bootstrap intervals, data vs seed variance, censored medians.
- ``summary``: raw numbers -> endpoints, secondary metrics, verdict lines.
- ``verdict``: plain words from intervals.
- ``reference``: summary numbers of 2D surfaces (ours and the paper's published ones).
- ``report``: figures and ``report.md`` from a result or its folder.
"""

from analyses.fisher_sharpness.arms import matrix_space
from analyses.fisher_sharpness.study import FisherSharpnessConfig, FisherSharpnessResult, run

__all__ = ["FisherSharpnessConfig", "FisherSharpnessResult", "run", "matrix_space"]
