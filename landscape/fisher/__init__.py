"""Diagonal Fisher information: per-parameter importance scores.

- ``estimators``: :func:`diagonal` (empirical, mc, exact, batch) in named stages (check, shard,
  accumulate, all-reduce under ``torchrun``, build the result).
- ``per_example``: :class:`~landscape.fisher.per_example.SquaredGradients`, per-example gradients by
  ``torch.func.vmap`` in chunks with a loop fallback.
- ``result``: :class:`FisherDiagonal` (scores in parameter shapes, summaries, masks, files).
- ``convergence``: how the per-tensor ranking settles as examples accumulate.
"""

from landscape.fisher.convergence import Convergence
from landscape.fisher.estimators import ESTIMATORS, diagonal
from landscape.fisher.per_example import hf_4d_attention_mask
from landscape.fisher.result import FisherDiagonal

__all__ = ["diagonal", "FisherDiagonal", "Convergence", "ESTIMATORS", "hf_4d_attention_mask"]
