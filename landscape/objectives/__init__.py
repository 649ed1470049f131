"""Objectives: the loss as a deterministic function of the weights.

Every objective turns a raw batch into a *prepared* batch (a dict of tensors on the model's
device, with any randomness such as MLM masks fixed once) and computes, for each example i of a
prepared batch, a loss sum sᵢ and a count nᵢ of loss terms:

* token weighting (``MaskedLM``, ``CausalLM``, ``HFLoss``): sᵢ = Σ_t CE(logits_t, label_t) over the
  example's labelled positions (label ≠ -100), nᵢ = number of labelled positions;
* example weighting (``Criterion``): sᵢ = loss_fn on example i alone, nᵢ = 1.

The loss over a whole dataset is L(θ) = Σᵢ sᵢ / Σᵢ nᵢ, independent of how the data is batched or
sharded across ranks. With token weighting this is Hugging Face's loss for one batch holding all
the data (a mean over labelled tokens); an example whose labels are all -100 adds 0 to both sums.
"Per-example loss" (used by Fisher estimators) means sᵢ: a sequence's loss *summed* over its
labelled tokens.

- ``base``: :class:`Objective` (the interface), :func:`select_rows`, the shared constants;
- ``language``: the token-weighted ``MaskedLM``, ``CausalLM`` and ``HFLoss`` (Hugging Face models);
- ``criterion``: the example-weighted ``Criterion`` for any ``loss_fn(model(inputs), targets)``.
"""

from landscape.objectives.base import (
    IGNORE_INDEX,
    NO_LOSS_TERM,
    SHIFT_KEY,
    Objective,
    Prepared,
    select_rows,
)
from landscape.objectives.criterion import Criterion
from landscape.objectives.language import CausalLM, HFLoss, MaskedLM

__all__ = ["IGNORE_INDEX", "NO_LOSS_TERM", "SHIFT_KEY", "Objective", "Prepared", "select_rows", "MaskedLM",
           "CausalLM", "HFLoss", "Criterion"]
