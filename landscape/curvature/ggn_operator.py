"""The generalized Gauss-Newton operator G·v = (1/N) Σ_b Jᵀ (∇²_z ℓ) J v, exact or Monte-Carlo.

With z the model's outputs on one prepared batch and ℓ(z) = Σ_{i∈b} sᵢ its summed loss, J = ∂z/∂θ:

* cross-entropy: z = the logits of the *labelled* positions only ``[M, C]`` (an MLM's unlabelled
  positions carry no loss, so their rows of J are skipped), and ∇²_z ℓ is block-diagonal with the
  softmax Hessian diag(pₘ) − pₘpₘᵀ per position m (it does not depend on the label);
* ``"mse"`` (any other loss of the outputs, e.g. ``Criterion(nn.MSELoss())``): z = the whole
  output, and (∇²_z ℓ)u comes from ``jvp`` of ``grad`` of the objective's own loss in z (for MSE a
  constant multiple of the identity), so the weighting is the objective's;
* Monte-Carlo (``mc_samples=k``, cross-entropy): per position, ∇²_z ℓ ≈ (1/k) Σ_s ĝₛĝₛᵀ with
  ĝₛ = pₘ − onehot(ŷₛ), ŷₛ ~ Cat(pₘ); unbiased, error O(1/√k). The labels are drawn once per
  batch from ``seed`` at the first product, so the operator is one fixed matrix.

One product: a ``jvp`` (J·v) and a ``vjp`` (Jᵀu) of z(θ), no second-order autograd: about two to
three gradients. G is positive semi-definite. N, restriction, vectors and sharding are those of
:class:`~landscape.curvature.data_operator.DataOperator`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from landscape.curvature.data_operator import DataOperator, gradient_module
from landscape.objectives import Objective, Prepared
from landscape.params import Selection
from landscape.vectors import Vector

__all__ = ["GGNOperator", "GGNLoss", "softmax_hessian_product", "sampled_hessian_product"]

#: Which loss Hessian in the outputs: ``"auto"`` (cross-entropy where the objective has categorical
#: predictions, else ``"mse"``), ``"cross_entropy"`` or ``"mse"`` (the objective's own loss, by autodiff).
GGNLoss = Literal["auto", "cross_entropy", "mse"]


def softmax_hessian_product(logits: Tensor, u: Tensor) -> Tensor:
    """(diag(p) − ppᵀ)u per row, p = softmax(logits); ``logits``, ``u`` ``[M, C]`` → ``[M, C]``."""
    p = torch.softmax(logits.detach().double(), -1)
    ud = u.double()
    return (p * ud - p * (p * ud).sum(-1, keepdim=True)).to(u.dtype)


def sampled_hessian_product(g: Tensor, u: Tensor) -> Tensor:
    """(1/k) Σ_s ĝₛ(ĝₛ·u) per row; ``g`` ``[k, M, C]`` sampled loss gradients, ``u`` ``[M, C]``."""
    return (g * (g * u.unsqueeze(0)).sum(-1, keepdim=True)).mean(0)


class GGNOperator(DataOperator):
    """G·v = (1/N) Σ_b Jᵀ(∇²_z ℓ)J·v (see the module docstring), on ``params``.

    Args:
        model, objective, data, params, distributed, memory_budget: as for :class:`HessianOperator`.
        loss: the loss Hessian in the outputs (:data:`GGNLoss`).
        mc_samples: ``None``: the exact GGN; ``k``: the Monte-Carlo GGN with k sampled labels per
            position (cross-entropy only).
        seed: the sampled labels' seed (``mc_samples``).
        compile: ``torch.compile`` the model's forward used by the products.
        check_determinism: as for :class:`HessianOperator`.
    """

    kind = "GGN"

    def __init__(self, model: nn.Module, objective: Objective, data: Iterable[Any], *, params: Selection = None,
                 loss: GGNLoss = "auto", mc_samples: int | None = None, seed: int = 0, compile: bool = False,
                 check_determinism: bool | Literal["full"] = True, memory_budget: int | None = None,
                 distributed: bool | None = None) -> None:
        if loss not in ("auto", "cross_entropy", "mse"):
            raise ValueError(f"loss must be 'auto', 'cross_entropy' or 'mse', got {loss!r}.")
        if mc_samples is not None and (not isinstance(mc_samples, int) or mc_samples < 1):
            raise ValueError(f"mc_samples must be None (exact GGN) or a positive int, got {mc_samples!r}.")
        super().__init__(model, objective, data, params=params, distributed=distributed, memory_budget=memory_budget)
        self.loss_kind = self._resolve_loss(loss)
        if mc_samples is not None and self.loss_kind != "cross_entropy":
            raise ValueError("mc_samples needs a cross-entropy loss (sampled labels); use the exact GGN for MSE.")
        self.mc_samples, self.seed, self.compile = mc_samples, int(seed), bool(compile)
        self.mode = "jvp+vjp" if mc_samples is None else f"jvp+vjp, {mc_samples} sampled labels"
        self._module = gradient_module(model, self.compile)
        self._samples: dict[int, Tensor] = {}
        if check_determinism:
            self.check_determinism(full=check_determinism == "full")

    def _resolve_loss(self, loss: GGNLoss) -> str:
        if loss != "auto":
            return loss
        first = self.prepared[0] if self.prepared else None
        if first is None:
            return "cross_entropy"
        try:
            with torch.no_grad():
                self.objective.logits_and_targets(self.objective.forward(self.model, first), first)
        except NotImplementedError:
            return "mse"
        return "cross_entropy"

    def _outputs(self, prepared: Prepared) -> Callable[[dict[str, Tensor]], Tensor]:
        """θ ↦ z: labelled logits ``[M, C]`` (cross-entropy) or the whole output (MSE)."""
        obj, module = self.objective, self._module

        def fn(pdict: dict[str, Tensor]) -> Tensor:
            out = obj.forward(module, prepared, pdict)
            if self.loss_kind != "cross_entropy":
                return out if isinstance(out, Tensor) else out.logits
            logits, targets = obj.logits_and_targets(out, prepared)
            return logits[targets != -100]
        return fn

    def _loss_hessian(self, prepared: Prepared, z: Tensor, u: Tensor) -> Tensor:
        """(∇²_z ℓ)u on one batch's outputs ``z`` (exact or sampled)."""
        if self.loss_kind == "mse":
            def ell(zz: Tensor) -> Tensor:
                return self.objective.loss_terms(zz, prepared)[0].sum()
            return torch.func.jvp(torch.func.grad(ell), (z.detach(),), (u,))[1]
        if self.mc_samples is None:
            return softmax_hessian_product(z, u)
        return sampled_hessian_product(self._sampled_gradients(prepared, z), u)

    def _sampled_gradients(self, prepared: Prepared, z: Tensor) -> Tensor:
        """ĝₛ = p − onehot(ŷₛ) ``[k, M, C]``, ŷₛ ~ Cat(softmax(z)), drawn once per batch."""
        key = id(prepared)
        if key not in self._samples:
            p = torch.softmax(z.detach().double(), -1)
            gen = torch.Generator(device="cpu").manual_seed(self.seed * 1_000_003 + len(self._samples))
            y = torch.multinomial(p.cpu(), self.mc_samples or 1, replacement=True, generator=gen).T.to(z.device)
            onehot = torch.nn.functional.one_hot(y, p.shape[-1]).double()
            self._samples[key] = (p.unsqueeze(0) - onehot).to(z.dtype)
        return self._samples[key]

    def _batch_product(self, prepared: Prepared, v: Vector) -> Vector:
        fn, primals = self._outputs(prepared), self._primals()
        with torch.no_grad():
            z, jv = torch.func.jvp(fn, (primals,), (v,))  # type: ignore[misc]  # torch.func's stubs type the returns loosely
            u = self._loss_hessian(prepared, z, jv)
            _, vjp_fn = torch.func.vjp(fn, primals)  # type: ignore[misc]  # torch.func's stubs type the returns loosely
            (gv,) = vjp_fn(u)
        return {n: gv[n] for n in self.names}

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "mode": self.mode, "loss_hessian": self.loss_kind,
                "mc_samples": self.mc_samples, "seed": self.seed, "compile": self.compile}
