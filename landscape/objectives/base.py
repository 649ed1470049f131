"""The objective interface: a loss as a deterministic function of the weights, per example.

An :class:`Objective` prepares raw batches once (fixing any randomness) and gives, for each example
i of a prepared batch, a loss sum sᵢ and a count nᵢ of loss terms; L(θ) = Σᵢ sᵢ / Σᵢ nᵢ.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from landscape.util import batches_of, deterministic_eval

IGNORE_INDEX = -100
#: Key of a prepared batch that records whether labels are shifted (HFLoss decides it per model).
SHIFT_KEY = "_shift_labels"
Prepared = dict[str, Any]
#: The one message for data whose every position is unlabelled.
NO_LOSS_TERM = ("data holds no loss term: every label is -100 (ignore_index) or there is no example. Give data "
                "with labelled positions (for MaskedLM, sequences with maskable tokens and mask_prob > 0).")


def to_model(value: Any, device: torch.device, dtype: torch.dtype) -> Any:
    """``value`` on the model's device; floating tensors also in its dtype, anything else unchanged."""
    if isinstance(value, Tensor):
        if value.is_floating_point():
            return value.to(device=device, dtype=dtype)
        return value.to(device=device)
    return value


def output_logits(output: Any) -> Tensor:
    """The logits of a model output: the tensor itself, ``output.logits`` or ``output["logits"]``."""
    if isinstance(output, Tensor):
        return output
    logits = getattr(output, "logits", None)
    if logits is None and isinstance(output, Mapping):
        logits = output.get("logits")
    if logits is None:
        raise TypeError(f"model output {type(output).__name__} has no logits.")
    return logits


class Objective:
    """Base class. Subclasses define :meth:`prepare`, :meth:`model_inputs` and :meth:`loss_terms`."""

    name: str = "objective"
    weighting: str = "token"  # "token" or "example"

    # -- to implement
    def prepare(self, batch: Any, model: nn.Module) -> Prepared:
        """Raw batch → prepared batch on the model's device, with all randomness fixed."""
        raise NotImplementedError

    def model_inputs(self, prepared: Prepared) -> tuple[tuple, dict]:
        """The ``(args, kwargs)`` to call the model with."""
        raise NotImplementedError

    def loss_terms(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        """Per-example loss sums sᵢ and term counts nᵢ, both of shape ``[B]``.

        Written without data-dependent indexing, so it runs under ``torch.func.vmap``.
        """
        raise NotImplementedError

    def logits_and_targets(self, output: Any, prepared: Prepared) -> tuple[Tensor, Tensor]:
        """Logits ``[B, P, C]`` and integer targets ``[B, P]`` (-100 = no term) of the
        categorical predictions the loss scores. Used for accuracy and sampled-label Fisher."""
        raise NotImplementedError(f"{type(self).__name__} has no categorical predictions.")

    def describe(self) -> dict[str, Any]:
        """JSON-able description for result metadata."""
        return {"name": self.name, "weighting": self.weighting}

    # -- derived
    def prepare_data(self, model: nn.Module, data: Iterable[Any]) -> list[Prepared]:
        """Prepare every batch of ``data`` once (refuses one-shot iterators and empty data)."""
        return [self.prepare(b, model) for b in batches_of(data)]

    def forward(self, model: nn.Module, prepared: Prepared, params: Mapping[str, Tensor] | None = None) -> Any:
        """Call the model on a prepared batch, optionally with substituted ``params``
        (``torch.func.functional_call``)."""
        args, kwargs = self.model_inputs(prepared)
        if params is None:
            return model(*args, **kwargs)
        return torch.func.functional_call(model, dict(params), args, kwargs, tie_weights=True, strict=False)

    def loss_sum(self, model: nn.Module, prepared: Prepared) -> tuple[Tensor, Tensor]:
        """(Σᵢ sᵢ, Σᵢ nᵢ) over one prepared batch; differentiable in the weights."""
        s, n = self.loss_terms(self.forward(model, prepared), prepared)
        return s.sum(), n.sum()

    def batch_loss(self, model: nn.Module, batch: Any) -> Tensor:
        """Mean loss Σsᵢ/Σnᵢ of one raw batch, differentiable (runs in the model's current mode)."""
        s, n = self.loss_sum(model, self.prepare(batch, model))
        return s / n.clamp_min(1)

    def per_example_losses(self, model: nn.Module, batch: Any) -> Tensor:
        """sᵢ for each example of one raw batch, shape ``[B]``."""
        prepared = self.prepare(batch, model)
        return self.loss_terms(self.forward(model, prepared), prepared)[0]

    def count(self, prepared: Prepared) -> tuple[int, int]:
        """(number of examples, number of loss terms) in a prepared batch."""
        n = self.term_counts(prepared)
        return int(n.numel()), int(n.sum())

    def term_counts(self, prepared: Prepared) -> Tensor:
        """nᵢ without running the model, shape ``[B]``."""
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: Iterable[Any] | Sequence[Prepared], prepared: bool = False) -> float:
        """The data loss L = Σsᵢ/Σnᵢ in eval mode (caller's mode restored); a Python float."""
        batches = data if prepared else self.prepare_data(model, data)
        total = torch.zeros((), dtype=torch.float64)
        count = 0
        with deterministic_eval(model):
            for p in batches:
                s, n = self.loss_sum(model, p)
                total += s.detach().double().cpu()
                count += int(n)
        if count == 0:
            raise ValueError(NO_LOSS_TERM)
        return float(total / count)


def select_rows(prepared: Prepared, rows: Tensor | Sequence[int], size: int) -> Prepared:
    """Rows ``rows`` of every batched tensor of a prepared batch (first dim == ``size``); other
    entries (flags, 0-d tensors) pass through. Used to take examples apart (per-example Fisher) and
    to shard a batch across ranks."""
    idx = torch.as_tensor(rows, dtype=torch.long) if not isinstance(rows, Tensor) else rows
    return {k: v.index_select(0, idx.to(v.device)) if isinstance(v, Tensor) and v.ndim and v.shape[0] == size else v
            for k, v in prepared.items()}

