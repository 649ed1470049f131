"""What every curvature algorithm needs from an operator, and the flat adapters built on it.

An operator is anything with the :class:`CurvatureOperator` attributes: ``dim`` (coordinates),
``n_matvecs`` (a counter), ``matvec(v)`` on dict vectors, ``zeros()``, ``randn(seed)``,
``rademacher(seed)`` and ``to_flat(v)`` / ``from_flat(x)`` between dict vectors and 1-D tensors
``[dim]``. Optional: ``matmat(vs)`` (k vectors at once, sharing work), ``block_size()`` (how many
fit memory), ``model`` (recorded in results' ``meta``) and ``describe()``.

The algorithms work on flat tensors through the adapters here (:func:`flat_matvec`,
:func:`flat_matmat`, :func:`flat_draw`, :func:`block_size`), so an operator on any vector layout
serves them all. :class:`OperatorBase` adds :meth:`~OperatorBase.to_scipy` (a float64
``scipy.sparse.linalg.LinearOperator``) to any operator that subclasses it; the data operators
(:class:`~landscape.curvature.data_operator.DataOperator`) and
:class:`~landscape.curvature.matrix_operator.MatrixOperator` do.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor

from landscape.util.meta import result_meta
from landscape.vectors import Vector

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator

__all__ = ["CurvatureOperator", "OperatorBase", "flat_matvec", "flat_matmat", "flat_draw", "block_size", "to_scipy",
           "curvature_meta", "Draw"]

Draw = Literal["randn", "rademacher"]


@runtime_checkable
class CurvatureOperator(Protocol):
    """A symmetric linear operator on dict vectors: all that the algorithms need (see the module docstring)."""

    dim: int
    n_matvecs: int

    def matvec(self, v: Vector) -> Vector: ...
    def zeros(self) -> Vector: ...
    def randn(self, seed: int) -> Vector: ...
    def rademacher(self, seed: int) -> Vector: ...
    def to_flat(self, v: Vector) -> Tensor: ...
    def from_flat(self, x: Tensor) -> Vector: ...


def flat_matvec(op: CurvatureOperator, x: Tensor) -> Tensor:
    """A·x for a flat ``x`` ``[dim]`` (returns ``[dim]`` in the operator's dtype)."""
    return op.to_flat(op.matvec(op.from_flat(x)))


def block_size(op: CurvatureOperator, requested: int | None = None) -> int:
    """Vectors per product call: ``requested`` if given, else the operator's ``block_size()``, else 1."""
    if requested is not None:
        return max(1, int(requested))
    pick = getattr(op, "block_size", None)
    return max(1, int(pick())) if callable(pick) else 1


def flat_matmat(op: CurvatureOperator, x: Tensor, block: int = 1) -> Tensor:
    """A·X for the columns of ``x`` ``[dim, k]``, ``block`` columns per ``matmat`` (one ``matvec``
    per column where the operator has no ``matmat``). Returns ``[dim, k]`` in ``x``'s dtype."""
    mm = getattr(op, "matmat", None)
    cols: list[Tensor] = []
    for j0 in range(0, x.shape[1], block):
        part = x[:, j0 : j0 + block]
        if mm is None or part.shape[1] == 1:
            cols.extend(flat_matvec(op, part[:, j]) for j in range(part.shape[1]))
        else:
            cols.extend(op.to_flat(y) for y in mm([op.from_flat(part[:, j]) for j in range(part.shape[1])]))
    return torch.stack([c.to(x.dtype) for c in cols], 1)


def flat_draw(op: CurvatureOperator, seed: int, kind: Draw = "randn") -> Tensor:
    """The operator's Gaussian (``"randn"``) or ±1 (``"rademacher"``) vector for ``seed``, flat ``[dim]``."""
    if kind not in ("randn", "rademacher"):
        raise ValueError(f"kind must be 'randn' or 'rademacher', got {kind!r}.")
    return op.to_flat(op.randn(seed) if kind == "randn" else op.rademacher(seed))


def to_scipy(op: CurvatureOperator, block: int | None = None) -> LinearOperator:
    """``op`` as a ``scipy.sparse.linalg.LinearOperator`` of shape ``(dim, dim)``: float64 numpy in and
    out (converted to and from the operator's dtype and device); ``matmat`` goes through the
    operator's ``matmat``, ``block`` vectors per call (default :func:`block_size`). Each product
    counts in ``op.n_matvecs``. Symmetric, so ``rmatvec`` is ``matvec``."""
    from scipy.sparse.linalg import LinearOperator

    like = op.to_flat(op.zeros())
    per_call = block_size(op, block)

    def mm(v: np.ndarray) -> np.ndarray:
        x = torch.as_tensor(np.asarray(v, dtype=np.float64).reshape(op.dim, -1), dtype=like.dtype, device=like.device)
        return flat_matmat(op, x, per_call).detach().to(torch.float64).cpu().numpy()

    return LinearOperator((op.dim, op.dim), matvec=lambda v: mm(v)[:, 0], matmat=mm, rmatvec=lambda v: mm(v)[:, 0],
                          dtype=np.float64)


def curvature_meta(op: CurvatureOperator, settings: dict[str, Any], **extra: Any) -> dict[str, Any]:
    """The nested ``meta`` of a curvature result (:func:`landscape.util.meta.result_meta`): the
    operator's model (none for a :class:`MatrixOperator`), ``settings``, versions, and
    ``operator`` (its ``describe()``, or its class name) plus ``extra`` (n_matvecs, ...)."""
    describe = getattr(op, "describe", None)
    operator = describe() if callable(describe) else {"operator": type(op).__name__, "dim": op.dim}
    return result_meta(getattr(op, "model", None), settings, operator=operator, **extra)


class OperatorBase:
    """Mixin for operators: :meth:`to_scipy`. Subclasses provide the :class:`CurvatureOperator` members."""

    def to_scipy(self, block: int | None = None) -> LinearOperator:
        """This operator as a float64 ``scipy.sparse.linalg.LinearOperator`` (see :func:`to_scipy`)."""
        return to_scipy(self, block)  # type: ignore[arg-type]  # subclasses provide the protocol's members
