"""What every curvature algorithm needs from an operator, and the flat adapters built on it.

An operator is anything with the :class:`CurvatureOperator` attributes: ``dim`` (coordinates),
``n_matvecs`` (a counter), ``matvec(v)`` on dict vectors, ``zeros()``, ``randn(seed)``,
``rademacher(seed)`` and ``to_flat(v)`` / ``from_flat(x)`` between dict vectors and 1-D tensors
``[dim]``. Optional: ``matmat(vs)`` (k vectors at once, sharing work), ``block_size()`` (how many
fit memory), ``model`` (recorded in results' ``meta``), ``describe()``, ``meta(settings, **extra)``
(a result's whole ``meta``, replacing :func:`curvature_meta`'s) and ``allsum(t)``.

Vector space. A flat vector may be one process's *slice* of the operator's vectors (a model
sharded across ``torchrun`` ranks): then the operator has ``allsum(t)``, which sums a tensor of
per-slice partial sums over the slices (an all-reduce). Every inner product, norm and Gram matrix
of the algorithms goes through :func:`inner`, :func:`norm`, :func:`gram` and
:func:`orthonormalize`, which call it, so one Lanczos, Hutch++, Hutchinson and SLQ serve one
process and shards alike. Without ``allsum`` they are the plain local products.

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
           "curvature_meta", "Draw", "is_sliced", "allsum", "inner", "norm", "gram", "orthonormalize"]

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


def is_sliced(op: CurvatureOperator) -> bool:
    """Whether ``op``'s flat vectors are this process's slices (the operator has ``allsum``)."""
    return callable(getattr(op, "allsum", None))


def allsum(op: CurvatureOperator, t: Tensor) -> Tensor:
    """The sum over the slices of per-slice partial sums ``t`` (any shape): ``op.allsum(t)``, or ``t``."""
    hook = getattr(op, "allsum", None)
    return hook(t) if callable(hook) else t


def inner(op: CurvatureOperator, x: Tensor, y: Tensor) -> float:
    """xᵀy of two flat vectors ``[dim]`` (sliced: float64 partial sums, summed over the slices)."""
    if not is_sliced(op):
        return float(torch.dot(x, y))
    return float(allsum(op, torch.dot(x.double(), y.double()).reshape(1))[0])


def norm(op: CurvatureOperator, x: Tensor, dim: int | None = None) -> Tensor:
    """‖x‖₂ of a flat vector ``[dim]``, or of each column (``dim=0``) of ``[dim, k]``, keeping dims for
    broadcasting (``[1, k]``); ``x``'s dtype. Sliced: √(Σ over slices of Σ x²), summed in float64."""
    if not is_sliced(op):
        return torch.linalg.vector_norm(x, dim=dim, keepdim=dim is not None)
    sq = (x.double() ** 2).sum(dim=dim, keepdim=dim is not None)
    return allsum(op, sq.reshape(-1)).reshape(sq.shape).sqrt().to(x.dtype)


def gram(op: CurvatureOperator, a: Tensor, b: Tensor) -> Tensor:
    """The product a @ b, contracted over the vector coordinates (``a`` ``[r, dim]``, ``b``
    ``[dim, ...]``): summed over the slices when sliced. Returns ``[r, ...]``."""
    out = a @ b
    return allsum(op, out.contiguous()) if is_sliced(op) else out


def orthonormalize(op: CurvatureOperator, x: Tensor) -> Tensor:
    """An orthonormal basis ``[dim, r]`` of the range of the columns of ``x`` ``[dim, s]``.

    One process: the Q of ``torch.linalg.qr`` (r = s). Sliced: the Gram-eigen (SVQB) step twice:
    G = Σ_slices XᵀX = U Λ Uᵀ, Q = X U Λ^{-1/2}, dropping columns with λ ≤ 1e-12·λ_max (so r ≤ s);
    it spans the same range, so projectors QQᵀ (and traces of QᵀHQ) agree with the QR's.
    """
    if not is_sliced(op):
        return torch.linalg.qr(x)[0]
    for _ in range(2):
        lam, u = torch.linalg.eigh(gram(op, x.T, x))
        keep = lam > 1e-12 * max(float(lam.max()), 1e-300)
        x = x @ (u[:, keep] / lam[keep].sqrt())
    return x


def to_scipy(op: CurvatureOperator, block: int | None = None) -> LinearOperator:
    """``op`` as a ``scipy.sparse.linalg.LinearOperator`` of shape ``(dim, dim)``: float64 numpy in and
    out (converted to and from the operator's dtype and device); ``matmat`` goes through the
    operator's ``matmat``, ``block`` vectors per call (default :func:`block_size`). Each product
    counts in ``op.n_matvecs``. Symmetric, so ``rmatvec`` is ``matvec``. Needs whole vectors: an
    operator on slices (``allsum``) raises ``ValueError``."""
    from scipy.sparse.linalg import LinearOperator

    if is_sliced(op):
        raise ValueError("this operator's vectors are sliced across processes; scipy needs whole vectors. Use "
                         "method='lanczos' or 'power' (top_eigenvalues), trace and spectral_density instead.")

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
    ``operator`` (its ``describe()``, or its class name) plus ``extra`` (n_matvecs, ...); an
    operator with ``meta(settings, **extra)`` gives its own (e.g. without a sharded model's fingerprint)."""
    own = getattr(op, "meta", None)
    if callable(own):
        return dict(own(settings, **extra))
    describe = getattr(op, "describe", None)
    operator = describe() if callable(describe) else {"operator": type(op).__name__, "dim": op.dim}
    return result_meta(getattr(op, "model", None), settings, operator=operator, **extra)


class OperatorBase:
    """Mixin for operators: :meth:`to_scipy`. Subclasses provide the :class:`CurvatureOperator` members."""

    def to_scipy(self, block: int | None = None) -> LinearOperator:
        """This operator as a float64 ``scipy.sparse.linalg.LinearOperator`` (see :func:`to_scipy`)."""
        return to_scipy(self, block)  # type: ignore[arg-type]  # subclasses provide the protocol's members
