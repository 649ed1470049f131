"""Batched curvature products and the plumbing around them: memory, graph size, sharding.

The operators (:mod:`landscape.curvature.data_operator` and its subclasses) call these small pure functions. With the k
vectors stacked per tensor (``V[name]`` of shape ``[k, *param.shape]``):

* double backward:       g = ∇L (create_graph), then ∇(g·V) for all k at once with
  ``torch.autograd.grad(..., is_grads_batched=True)``: one forward and one first backward shared by
  the k products, the second backward vmapped over k;
* forward-over-reverse:  ``vmap`` over the tangents of ``jvp(grad(L))``: the primal computation is
  not batched (it runs once), only the tangent computations carry the k dimension;
* empirical Fisher:      J·V by ``vmap`` over ``jvp`` ``[k, B]``, then Jᵀ(JV) by ``vmap`` over the
  ``vjp`` closure ``[k, ...]``.

Memory: the batched second backward holds about k copies of the activations' gradients, so
:func:`block_size` picks k from a byte budget and the size of one batch's graph, measured with
:class:`SavedBytes` (the bytes of the tensors autograd saves, each storage counted once).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

Vector = dict[str, Tensor]

__all__ = ["stack", "unstack", "double_backward_matmat", "forward_over_reverse_matmat", "fisher_matmat",
           "SavedBytes", "available_memory", "block_size", "all_reduce_"]


def stack(vs: Sequence[Vector], names: Sequence[str]) -> dict[str, Tensor]:
    """K dict vectors → one dict of ``[k, *shape]`` tensors."""
    return {n: torch.stack([v[n] for v in vs]) for n in names}


def unstack(stacked: dict[str, Tensor], k: int) -> list[Vector]:
    """Inverse of :func:`stack`."""
    return [{n: t[j] for n, t in stacked.items()} for j in range(k)]


def double_backward_matmat(grads: Sequence[Tensor], params: Sequence[Tensor], names: Sequence[str],
                           V: dict[str, Tensor], retain_graph: bool) -> dict[str, Tensor]:
    """∇(g·vⱼ) for j = 1..k through one first-backward graph ``grads`` (``create_graph=True``)."""
    k = next(iter(V.values())).shape[0]
    gv = sum((g.unsqueeze(0) * V[n]).reshape(k, -1).sum(1) for g, n in zip(grads, names))
    if not isinstance(gv, Tensor) or not gv.requires_grad:  # the loss is linear in the selection
        return {n: torch.zeros_like(V[n]) for n in names}
    eye = torch.eye(k, dtype=gv.dtype, device=gv.device)
    hv = torch.autograd.grad(gv, list(params), grad_outputs=eye, is_grads_batched=True, allow_unused=True,
                             materialize_grads=True, retain_graph=retain_graph)
    return {n: h.detach() for n, h in zip(names, hv)}


def forward_over_reverse_matmat(loss: Callable[[dict[str, Tensor]], Tensor], primals: dict[str, Tensor],
                                V: dict[str, Tensor]) -> dict[str, Tensor]:
    """``vmap`` over the tangents of ``jvp(grad(loss))``."""
    grad_fn = torch.func.grad(lambda p: loss(p).sum())

    def one(t: dict[str, Tensor]) -> dict[str, Tensor]:
        return torch.func.jvp(grad_fn, (primals,), (t,))[1]

    with torch.no_grad():
        return torch.func.vmap(one)(V)


def fisher_matmat(fn: Callable[[dict[str, Tensor]], Tensor], primals: dict[str, Tensor],
                  V: dict[str, Tensor]) -> dict[str, Tensor]:
    """Jᵀ(J·vⱼ) for j = 1..k, with J the Jacobian of the per-example losses ``fn`` ``[B]``."""
    with torch.no_grad():
        jv = torch.func.vmap(lambda t: torch.func.jvp(fn, (primals,), (t,))[1])(V)  # [k, B]
        _, vjp_fn = torch.func.vjp(fn, primals)  # type: ignore[misc]  # torch.func's stubs type the returns loosely
        (fv,) = torch.func.vmap(vjp_fn)(jv)
    return fv


class SavedBytes:
    """Context manager: bytes of the tensors autograd saves inside it, each storage counted once."""

    def __init__(self) -> None:
        self.bytes = 0
        self._seen: set[int] = set()
        self._ctx: Any = None

    def _pack(self, t: Tensor) -> Tensor:
        try:
            storage = t.untyped_storage()
            key = storage.data_ptr()
            if key not in self._seen:
                self._seen.add(key)
                self.bytes += storage.nbytes()
        except (RuntimeError, NotImplementedError):  # tensors without a storage (e.g. functorch wrappers)
            pass
        return t

    def __enter__(self) -> SavedBytes:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)


def available_memory(device: torch.device) -> int:
    """Free bytes on ``device``: CUDA's free memory, else the host's ``MemAvailable``."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def block_size(budget_bytes: int, graph_bytes: int, param_bytes: int, max_k: int = 16) -> int:
    """Largest k ≤ ``max_k`` whose batched product fits ``budget_bytes``: each extra vector costs about
    one graph's worth of activation gradients plus three parameter-sized tensors (v, Hv, ∇)."""
    per = max(int(graph_bytes) + 3 * int(param_bytes), 1)
    return int(max(1, min(max_k, budget_bytes // per)))


def all_reduce_(tensors: Sequence[Tensor]) -> None:
    """Sum ``tensors`` across ranks in place, as one flat message."""
    import torch.distributed as dist

    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    o = 0
    for t in tensors:
        t.copy_(flat[o : o + t.numel()].view_as(t))
        o += t.numel()
