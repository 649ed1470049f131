"""Per-block Hessian spectra of a transformer and their heterogeneity (``landscape analyze block-spectra``).

- ``blocks``: the name → role table (:data:`ROLE_RULES`) and :func:`transformer_blocks`;
- ``heterogeneity``: Jensen–Shannon divergence between the blocks' SLQ densities (Zhang et al., 2024);
- ``study``: :class:`BlockSpectraConfig`, :func:`run` -> :class:`BlockSpectraResult` and its files;
- ``report``: the table, the figure and ``report.md``, from a result or its folder.
"""

from analyses.block_spectra.blocks import ROLE_RULES, ROLES, role_of, transformer_blocks
from analyses.block_spectra.heterogeneity import JS_MAX, heterogeneity, js_divergence
from analyses.block_spectra.study import BlockSpectraConfig, BlockSpectraResult, block_spectrum, run

__all__ = ["ROLES", "ROLE_RULES", "role_of", "transformer_blocks", "JS_MAX", "js_divergence", "heterogeneity",
           "BlockSpectraConfig", "BlockSpectraResult", "block_spectrum", "run"]
