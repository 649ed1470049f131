"""Diagonal Fisher information: per-parameter importance scores.

- ``estimators``: :func:`diagonal` (empirical, mc, exact, batch) with per-example gradients by
  ``torch.func.vmap`` in chunks, a loop fallback, and ``torchrun`` sharding.
- ``result``: :class:`FisherDiagonal` (scores in parameter shapes, summaries, masks, files).
- ``convergence``: how the per-tensor ranking settles as examples accumulate.
"""

from landscape.fisher.convergence import Convergence
from landscape.fisher.estimators import ESTIMATORS, diagonal, hf_4d_attention_mask
from landscape.fisher.result import FisherDiagonal

__all__ = ["diagonal", "FisherDiagonal", "Convergence", "ESTIMATORS", "hf_4d_attention_mask"]
