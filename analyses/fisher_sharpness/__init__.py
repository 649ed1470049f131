"""The flagship study: is the pretraining loss sharper along high-Fisher parameters than along
random or low-Fisher ones (Sharma et al., 2024)?

- ``study``: :class:`FisherSharpnessConfig`, :func:`run` -> :class:`FisherSharpnessResult`.
- ``verdict``: statistics and the plain-words verdict written from them.
- ``report``: figures and ``report.md`` from a result or its folder.
"""

from analyses.fisher_sharpness.study import (
    FisherSharpnessConfig, FisherSharpnessResult, group_key, mask_key, matrix_space, run,
)

__all__ = ["FisherSharpnessConfig", "FisherSharpnessResult", "run", "group_key", "mask_key", "matrix_space"]
