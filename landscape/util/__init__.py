"""Plumbing shared by the core: evaluation state, data checks, fingerprints, files, metadata and
the distributed context. Nothing here knows about losses or parameters."""

from landscape.util.data import batches_of, check_reiterable, raw_batch_rows, raw_batch_size
from landscape.util.distributed import DistContext, dist_context
from landscape.util.evaluation import deterministic_eval, eval_mode, math_attention, model_device, model_dtype
from landscape.util.fingerprints import (
    batch_moments,
    data_fingerprint,
    model_fingerprint,
    settings_fingerprint,
    tensors_fingerprint,
    weights_fingerprint,
)
from landscape.util.meta import log, log_once, result_meta, versions

__all__ = [
    "DistContext", "batch_moments", "batches_of", "check_reiterable", "data_fingerprint",
    "deterministic_eval", "dist_context", "eval_mode", "log", "log_once", "math_attention",
    "model_device", "model_dtype", "model_fingerprint", "raw_batch_rows", "raw_batch_size", "result_meta",
    "settings_fingerprint", "tensors_fingerprint", "versions", "weights_fingerprint",
]
