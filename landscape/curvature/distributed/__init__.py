"""Curvature of a model sharded across ``torchrun`` processes (FSDP2): no rank holds a full vector.

:class:`~landscape.curvature.distributed.operator.ShardedHessianOperator` applies the Hessian by
central finite differences of two gradients, (∇L(θ+εv) − ∇L(θ−εv)) / 2ε, which needs no double
backward and so runs under ``torch.distributed.fsdp.fully_shard``. Its vectors are each rank's
slice of the parameters (the FSDP2 local shards, concatenated), and the Krylov methods of
:mod:`~landscape.curvature.distributed.krylov` (Lanczos, Hutch++/Hutchinson, SLQ) all-reduce every
dot product and norm, so they return the single-process results (:mod:`landscape.curvature`'s
result classes) while each rank stores about ``dim / world_size`` numbers per Krylov vector.
"""

from landscape.curvature.distributed.krylov import spectral_density, top_eigenvalues, trace
from landscape.curvature.distributed.operator import ShardedHessianOperator, shard_model

__all__ = ["ShardedHessianOperator", "shard_model", "top_eigenvalues", "trace", "spectral_density"]
