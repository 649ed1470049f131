"""The empirical Fisher operator F·v = (1/N) Σᵢ gᵢ (gᵢᵀv), per-example gradients never stored.

Weighting, restriction, vectors and the distributed sharding are those of
:class:`~landscape.curvature.data_operator.DataOperator` (the shared base class).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from landscape.curvature import products
from landscape.curvature.data_operator import DataOperator
from landscape.objectives import Objective, Prepared
from landscape.params import Selection
from landscape.vectors import Vector

__all__ = ["EmpiricalFisherOperator"]


class EmpiricalFisherOperator(DataOperator):
    """F·v = (1/N) Σᵢ gᵢ (gᵢᵀv) with gᵢ = ∇sᵢ and N = Σᵢ nᵢ (see the module docstring).

    Per batch, J·v (``[B]``, one entry gᵢᵀv per example) comes from one ``torch.func.jvp`` of the
    per-example losses, and Jᵀ(Jv) from one ``vjp``: no per-example gradient is stored. F is
    positive semi-definite with rank ≤ number of examples. ``check_determinism``,
    ``memory_budget`` and ``distributed`` as for :class:`HessianOperator`; same algorithms apply.
    """

    kind = "Fisher"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *,
                 params: Selection = None, check_determinism: bool | Literal["full"] = True,
                 memory_budget: int | None = None, distributed: bool | None = None) -> None:
        super().__init__(model, objective, data, params=params, distributed=distributed, memory_budget=memory_budget)
        self.mode = "jvp+vjp"
        if check_determinism:
            self.check_determinism(full=check_determinism == "full")

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        fn = self._loss_sums(prepared)
        primals = self._primals()
        with torch.no_grad():
            _, jv = torch.func.jvp(fn, (primals,), (v,))  # type: ignore[misc]  # torch.func's stubs type the returns loosely
            _, vjp_fn = torch.func.vjp(fn, primals)  # type: ignore[misc]  # torch.func's stubs type the returns loosely
            (fv,) = vjp_fn(jv)
        return fv

    def _batch_matmat(self, prepared: Prepared, V: dict[str, Tensor]) -> dict[str, Tensor]:
        return products.fisher_matmat(self._loss_sums(prepared), self._primals(), V)
