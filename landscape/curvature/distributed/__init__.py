"""Curvature of a model sharded across ``torchrun`` processes (FSDP2): no rank holds a full vector.

:class:`~landscape.curvature.distributed.operator.ShardedHessianOperator` applies the Hessian by
central finite differences of two gradients, (∇L(θ+εv) − ∇L(θ−εv)) / 2ε, which needs no double
backward and so runs under ``torch.distributed.fsdp.fully_shard``. Its vectors are each rank's
slice of the parameters (the FSDP2 local shards, concatenated), and its ``allsum`` all-reduces
partial sums, so the stock algorithms of :mod:`landscape.curvature` (``top_eigenvalues`` with
Lanczos or power iteration, ``trace``, ``spectral_density``) return the single-process results
while each rank stores about ``dim / world_size`` numbers per Krylov vector.
"""

from landscape.curvature.distributed.operator import ShardedHessianOperator, shard_model

__all__ = ["ShardedHessianOperator", "shard_model"]
