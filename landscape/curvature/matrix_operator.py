"""A dense symmetric matrix as a curvature operator: for tests, references and small problems."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.curvature.base import OperatorBase
from landscape.vectors import Vector

__all__ = ["MatrixOperator"]


class MatrixOperator(OperatorBase):
    """A dense symmetric matrix ``A`` ``[d, d]`` as an operator on vectors ``{"x": Tensor[d]}``.

    It has no model, so results computed on it carry ``meta`` without ``"model"``.
    """

    kind = "matrix"

    def __init__(self, matrix: Tensor | np.ndarray) -> None:
        a = torch.as_tensor(matrix)
        if a.ndim != 2 or a.shape[0] != a.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got shape {tuple(a.shape)}.")
        self.matrix = a
        self.dim = int(a.shape[0])
        self.dtype, self.device = a.dtype, a.device
        self.n_matvecs = 0

    def matvec(self, v: Vector) -> Vector:
        """A·x for ``v = {"x": x}``."""
        if set(v) != {"x"} or tuple(v["x"].shape) != (self.dim,):
            raise ValueError(f"vector must be {{'x': Tensor[{self.dim}]}}.")
        self.n_matvecs += 1
        return {"x": self.matrix @ v["x"].to(self.dtype)}

    def matmat(self, vs: Sequence[Vector]) -> list[Vector]:
        """A·X for k vectors at once (counts k matvecs)."""
        self.n_matvecs += len(vs)
        out = self.matrix @ torch.stack([v["x"].to(self.dtype) for v in vs], 1)
        return [{"x": out[:, j]} for j in range(len(vs))]

    def block_size(self, max_k: int = 16) -> int:
        """Any number of vectors fits; at most ``max_k`` per call."""
        return max_k

    def zeros(self) -> Vector:
        """The zero vector."""
        return {"x": torch.zeros(self.dim, dtype=self.dtype, device=self.device)}

    def randn(self, seed: int) -> Vector:
        """A standard Gaussian vector, reproducible from ``seed`` (drawn in float64)."""
        g = torch.Generator().manual_seed(int(seed))
        return {"x": torch.randn(self.dim, generator=g, dtype=torch.float64).to(self.dtype)}

    def rademacher(self, seed: int) -> Vector:
        """A ±1 vector, reproducible from ``seed``."""
        g = torch.Generator().manual_seed(int(seed))
        return {"x": (torch.randint(0, 2, (self.dim,), generator=g) * 2 - 1).to(self.dtype)}

    def to_flat(self, v: Vector) -> Tensor:
        """``v["x"]``."""
        return v["x"]

    def from_flat(self, x: Tensor) -> Vector:
        """``{"x": x}`` in the matrix's dtype."""
        return {"x": x.to(self.dtype)}

    def describe(self) -> dict[str, Any]:
        """What the operator is, for results' ``meta``."""
        return {"operator": self.kind, "dim": self.dim, "dtype": str(self.dtype), "n_matvecs": self.n_matvecs}
