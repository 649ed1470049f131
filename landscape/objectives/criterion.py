"""The example-weighted objective: ``Criterion(loss_fn)`` on ``(inputs, targets)`` batches."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from landscape.objectives.base import Objective, Prepared, output_logits, to_model
from landscape.util import model_device, model_dtype


class Criterion(Objective):
    """``loss_fn(model(inputs), targets)`` on ``(inputs, targets)`` batches, weighted by example.

    sᵢ is ``loss_fn`` applied to example i alone (with the loss function's own reduction over
    non-batch dimensions), nᵢ = 1; so L is the mean over examples. ``nn.CrossEntropyLoss``,
    ``nn.NLLLoss``, ``nn.MSELoss``, ``nn.L1Loss`` and ``nn.BCEWithLogitsLoss`` are evaluated in one
    vectorised call; any other callable one example at a time.
    """

    name = "criterion"
    weighting = "example"
    _vectorised = (nn.CrossEntropyLoss, nn.NLLLoss, nn.MSELoss, nn.L1Loss, nn.BCEWithLogitsLoss)

    def __init__(self, loss_fn: Callable[[Any, Tensor], Tensor] | None = None) -> None:
        self.loss_fn = loss_fn if loss_fn is not None else nn.CrossEntropyLoss()
        self._none_fn = None
        # One vectorised call with reduction="none" gives each example's loss alone, except with class
        # weights: then it returns w_y·ℓᵢ, while the example alone (mean reduction) gives ℓᵢ.
        weighted = getattr(self.loss_fn, "weight", None) is not None
        mean = getattr(self.loss_fn, "reduction", "mean") == "mean"
        if isinstance(self.loss_fn, self._vectorised) and mean and not weighted:
            self._none_fn = copy.copy(self.loss_fn)
            self._none_fn.reduction = "none"

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "loss_fn": type(self.loss_fn).__name__}

    def prepare(self, batch: Any, model: nn.Module) -> Prepared:
        if isinstance(batch, Mapping) and {"inputs", "targets"} <= set(batch):
            inputs, targets = batch["inputs"], batch["targets"]
        elif isinstance(batch, (tuple, list)) and len(batch) == 2:
            inputs, targets = batch
        else:
            raise TypeError(
                f"Criterion batches are (inputs, targets) pairs; got {type(batch).__name__}"
                + (f" of length {len(batch)}" if isinstance(batch, (tuple, list)) else "")
                + "."
            )
        device, dtype = model_device(model), model_dtype(model)
        return {"inputs": to_model(inputs, device, dtype), "targets": to_model(targets, device, dtype)}

    def model_inputs(self, prepared: Prepared) -> tuple[tuple, dict]:
        return (prepared["inputs"],), {}

    def loss_terms(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        out, targets = output_logits(output), prepared["targets"]
        if self._none_fn is not None:
            per = self._none_fn(out, targets)
            per = per.reshape(per.shape[0], -1).mean(dim=1) if per.ndim > 1 else per
        else:
            per = torch.stack([self.loss_fn(out[i : i + 1], targets[i : i + 1]) for i in range(out.shape[0])])
        return per, torch.ones(per.shape[0], dtype=torch.long, device=per.device)

    def logits_and_targets(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        targets = prepared["targets"]
        if targets.is_floating_point() or not isinstance(self.loss_fn, (nn.CrossEntropyLoss, nn.NLLLoss)):
            raise NotImplementedError("categorical predictions need a CrossEntropyLoss/NLLLoss criterion.")
        logits = output_logits(output)  # for NLLLoss: log-probabilities, valid logits up to a constant
        return logits.unsqueeze(1), targets.reshape(-1, 1)

    def term_counts(self, prepared: Prepared) -> Tensor:
        return torch.ones(prepared["targets"].shape[0], dtype=torch.long)
