"""Toy models with closed-form losses for the scan and sharpness tests."""

from __future__ import annotations

import torch
from torch import nn

from landscape import objectives


class Quadratic(nn.Module):
    """L(w) = ½ (w − c)ᵀ A (w − c) for every example (float64); w has shape ``[n]`` or ``[r, k]``."""

    def __init__(self, A: torch.Tensor, center: torch.Tensor, start: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("A", A.double())
        self.register_buffer("c", center.double().reshape(-1))
        self.w = nn.Parameter(start.double().clone())

    def value(self, w: torch.Tensor) -> torch.Tensor:
        e = w.reshape(-1) - self.c
        return 0.5 * e @ self.A @ e

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.value(self.w).expand(x.shape[0])


def quadratic_objective() -> objectives.Criterion:
    # |q − 0| = q for q ≥ 0 (A positive semi-definite), so the data loss is exactly q.
    return objectives.Criterion(nn.L1Loss())


def quadratic_data(n_batches: int = 2, batch: int = 2) -> list:
    return [(torch.zeros(batch, 1, dtype=torch.float64), torch.zeros(batch, dtype=torch.float64)) for _ in range(n_batches)]


def spd(n: int, seed: int = 0, eigs: list[float] | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=torch.float64))
    lam = torch.tensor(eigs if eigs is not None else torch.linspace(0.5, 3.0, n).tolist(), dtype=torch.float64)
    return q @ torch.diag(lam) @ q.T
