"""Run PyHessian 0.1 on the same model and data: the reference for parity tests and benchmarks.

Not part of the library (``pyhessian`` is an optional dependency, in the ``test``, ``bench`` and
``pyhessian`` extras). Tests import it as ``pyhessian_reference``; ``bench/`` scripts put the
repository root on ``sys.path`` and import ``tests.pyhessian_reference``.

PyHessian (Yao et al., 2020) computes the top eigenvalues by deflated power iteration and the
trace by Hutchinson's method. It accepts only models called as ``model(inputs)`` with
``(inputs, targets)`` batches and a criterion ``loss_fn(outputs, targets)`` with mean reduction, so
Hugging Face models do not fit; use :class:`landscape.curvature.HessianOperator` for those.

Known limitations of the PyPI release, worked around or documented here:

* ``hessian.density()`` calls ``torch.eig``, removed from modern torch: it raises. Use
  :func:`landscape.curvature.spectral_density` instead (same SLQ estimator, with reorthogonalization).
* With a single batch it keeps the first backward's graph alive for its whole lifetime
  (``create_graph=True`` then ``retain_graph=True``) and leaves graph-carrying ``.grad`` tensors on
  the model. The adapter restores every ``.grad`` and train/eval flag afterwards.
* It calls ``model.eval()`` and draws probes from the global RNG in the default dtype; the adapter
  restores the modes, forks the RNG under ``seed`` and sets the default dtype to the model's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from landscape.curvature import EigenResult, TraceResult
from landscape.objectives import Criterion
from landscape.util import eval_mode, model_device, model_dtype
from landscape.util.meta import result_meta

__all__ = ["pyhessian_available", "pyhessian_top_eigenvalues", "pyhessian_trace", "PyHessianRun"]


def pyhessian_available() -> bool:
    """True if ``pyhessian`` imports."""
    try:
        import pyhessian  # noqa: F401
    except Exception:  # pragma: no cover - depends on the environment
        return False
    return True


def _criterion(loss_fn: Any) -> Callable:
    if isinstance(loss_fn, Criterion):
        return loss_fn.loss_fn
    if not callable(loss_fn):
        raise TypeError("loss_fn must be a criterion such as nn.CrossEntropyLoss() or an objectives.Criterion.")
    return loss_fn


def _batches(data: Any) -> tuple[Any, Any]:
    """(single batch, None) for an (inputs, targets) pair, (None, list of batches) otherwise."""
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], Tensor):
        return data, None
    batches = list(data)
    if not batches:
        raise ValueError("data is empty: pass an (inputs, targets) batch or a list of them.")
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) == 2):
            raise TypeError("PyHessian needs (inputs, targets) batches and a model called as model(inputs); "
                            "for Hugging Face models use landscape.curvature.HessianOperator.")
    return None, [tuple(b) for b in batches]


class PyHessianRun(contextlib.AbstractContextManager):
    """A PyHessian ``hessian`` object built inside a context that restores the model afterwards.

    ``n_matvecs`` counts Hessian-vector products (one per batch pass in data-loader mode).
    """

    def __init__(self, model: nn.Module, loss_fn: Any, data: Any, seed: int = 0) -> None:
        self.model, self.loss_fn, self.data, self.seed = model, _criterion(loss_fn), data, int(seed)
        self.n_matvecs = 0
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> PyHessianRun:
        import importlib

        ph_module = importlib.import_module("pyhessian.hessian")  # the module, not the class

        stack = self._stack
        model = self.model
        saved_grads = {id(p): p.grad for p in model.parameters()}
        params = list(model.parameters())

        def restore_grads() -> None:
            for p in params:
                p.grad = saved_grads[id(p)]

        stack.callback(restore_grads)
        stack.enter_context(eval_mode(model))
        stack.enter_context(torch.random.fork_rng(devices=[]))
        torch.manual_seed(self.seed)
        old_dtype = torch.get_default_dtype()
        torch.set_default_dtype(model_dtype(model))
        stack.callback(torch.set_default_dtype, old_dtype)
        original = ph_module.hessian_vector_product

        def counted(*a: Any, **k: Any) -> Any:
            self.n_matvecs += 1
            return original(*a, **k)

        ph_module.hessian_vector_product = counted  # type: ignore[attr-defined]
        stack.callback(setattr, ph_module, "hessian_vector_product", original)
        single, loader = _batches(self.data)
        cuda = model_device(model).type == "cuda"
        try:
            self.hessian = ph_module.hessian(model, self.loss_fn, data=single, dataloader=loader, cuda=cuda)
        except BaseException:
            stack.close()
            raise
        if loader is not None:
            inner = self.hessian.dataloader_hv_product

            def counted_loader(v: Any) -> Any:
                self.n_matvecs += 1
                return inner(v)

            self.hessian.dataloader_hv_product = counted_loader
        return self

    def __exit__(self, *exc: Any) -> None:
        self.hessian = None  # drop the retained graph before restoring .grad
        self._stack.close()


def pyhessian_top_eigenvalues(model: nn.Module, loss_fn: Any, data: Any, top_n: int = 1, tol: float = 1e-3,
                              max_iter: int = 100, seed: int = 0) -> EigenResult:
    """PyHessian's ``eigenvalues(maxIter, tol, top_n)`` as an :class:`EigenResult` (values descending).

    ``data``: one ``(inputs, targets)`` batch, or a list of them (PyHessian's data-loader mode,
    which weights each batch's mean loss by its size).
    """
    with PyHessianRun(model, loss_fn, data, seed) as run:
        values, vecs = run.hessian.eigenvalues(maxIter=max_iter, tol=tol, top_n=top_n)
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        dict_vecs = [{n: t.detach().clone() for n, t in zip(names, v)} for v in vecs]
        n = run.n_matvecs
    order = np.argsort(values)[::-1]
    return EigenResult(np.asarray(values)[order], [dict_vecs[i] for i in order], n, "pyhessian-power", "magnitude",
                       float(tol), int(seed), True,
                       result_meta(model, {"top_n": top_n, "tol": tol, "max_iter": max_iter, "seed": seed},
                                   peer="pyhessian 0.1", n_matvecs=n))


def pyhessian_trace(model: nn.Module, loss_fn: Any, data: Any, max_iter: int = 100, tol: float = 1e-3,
                    seed: int = 0) -> TraceResult:
    """PyHessian's Hutchinson ``trace(maxIter, tol)`` as a :class:`TraceResult` (mean of its samples)."""
    with PyHessianRun(model, loss_fn, data, seed) as run:
        samples = [float(x) for x in run.hessian.trace(maxIter=max_iter, tol=tol)]
        n = run.n_matvecs
    stderr = float(np.std(samples, ddof=1) / np.sqrt(len(samples))) if len(samples) > 1 else float("nan")
    return TraceResult(float(np.mean(samples)), stderr, n, "pyhessian-hutchinson", int(seed), samples,
                       result_meta(model, {"tol": tol, "max_iter": max_iter, "seed": seed}, peer="pyhessian 0.1",
                                   n_matvecs=n))

