"""Parameter spaces, masks and exact perturbation.

A :class:`ParamSpace` is the ordered list of a model's trainable parameters that an analysis acts
on. Tied tensors appear once, under their first name (BERT's MLM decoder weight *is* the word
embedding), and their other names are kept as aliases. A :class:`ParamMask` selects elements or
whole tensors of a space. :func:`perturbed` sets θ₀ + δ and restores θ₀ bit for bit.
"""

from __future__ import annotations

import contextlib
import fnmatch
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.runtime import model_fingerprint
from landscape.vectors import Vector

__all__ = ["ParamSpace", "ParamMask", "Snapshot", "perturbed", "vectors"]


def _as_list(patterns: str | Sequence[str] | None) -> list[str] | None:
    if patterns is None:
        return None
    return [patterns] if isinstance(patterns, str) else list(patterns)


class ParamSpace:
    """The ordered named trainable parameters of ``model`` selected by name globs and module type.

    Args:
        model: any ``nn.Module``.
        include: glob(s) on parameter names (``fnmatch``, e.g. ``"bert.encoder.*"``); a parameter
            is kept if its name or any alias matches one. ``None`` keeps all.
        exclude: glob(s) removing parameters after ``include``.
        module_types: keep only parameters owned directly by modules of these types
            (e.g. ``(nn.Linear,)``).
        trainable_only: drop parameters with ``requires_grad=False``.

    Raises:
        ValueError: if the model has no trainable parameter or the selection matches nothing.
    """

    def __init__(
        self,
        model: nn.Module,
        include: str | Sequence[str] | None = None,
        exclude: str | Sequence[str] | None = None,
        module_types: tuple[type[nn.Module], ...] | None = None,
        trainable_only: bool = True,
    ) -> None:
        self.model = model
        self.include = _as_list(include)
        self.exclude = _as_list(exclude)
        self.module_types = module_types
        owner: dict[str, nn.Module] = {}
        for mod_name, module in model.named_modules(remove_duplicate=False):
            for p_name, _ in module.named_parameters(recurse=False, remove_duplicate=False):
                owner[f"{mod_name}.{p_name}" if mod_name else p_name] = module
        canonical: dict[int, str] = {}
        self.aliases: dict[str, list[str]] = {}
        all_params: dict[str, nn.Parameter] = {}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in canonical:
                self.aliases[canonical[id(p)]].append(name)
                continue
            canonical[id(p)] = name
            self.aliases[name] = []
            all_params[name] = p
        if not any(p.requires_grad for p in all_params.values()):
            raise ValueError(
                f"{type(model).__name__} has no trainable parameters (all requires_grad=False); "
                "unfreeze the parameters to analyse or pass a model with trainable weights."
            )
        selected: dict[str, nn.Parameter] = {}
        for name, p in all_params.items():
            names = [name, *self.aliases[name]]
            if trainable_only and not p.requires_grad:
                continue
            if self.include is not None and not any(
                fnmatch.fnmatchcase(n, pat) for n in names for pat in self.include
            ):
                continue
            if self.exclude is not None and any(
                fnmatch.fnmatchcase(n, pat) for n in names for pat in self.exclude
            ):
                continue
            if module_types is not None and not isinstance(owner.get(name), module_types):
                continue
            selected[name] = p
        if not selected:
            raise ValueError(
                f"parameter selection matches nothing (include={self.include}, "
                f"exclude={self.exclude}, module_types={module_types}); example names: "
                f"{list(all_params)[:4]}"
            )
        self.params: dict[str, nn.Parameter] = selected
        self.owners: dict[str, nn.Module] = {n: owner[n] for n in selected}
        self.fingerprint = model_fingerprint(model)

    # -- views
    @property
    def names(self) -> list[str]:
        return list(self.params)

    @property
    def dim(self) -> int:
        """Total number of scalar coordinates."""
        return sum(p.numel() for p in self.params.values())

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return name in self.params

    def __repr__(self) -> str:
        return f"ParamSpace({len(self)} tensors, dim={self.dim})"

    def values(self) -> Vector:
        """The current parameter tensors (live, not copies)."""
        return {n: p for n, p in self.params.items()}

    def snapshot(self) -> Snapshot:
        """A bit-exact copy of the current values that can be restored."""
        return Snapshot(self)

    # -- vectors over the space
    def zeros(self) -> Vector:
        return {n: torch.zeros_like(p, memory_format=torch.contiguous_format) for n, p in self.params.items()}

    def randn(self, seed: int) -> Vector:
        """Gaussian vector over the space (see :func:`vectors.randn_like`)."""
        return vectors.randn_like(self.params, seed)

    def rademacher(self, seed: int) -> Vector:
        """Rademacher (±1) vector over the space."""
        return vectors.rademacher_like(self.params, seed)

    def check_vector(self, v: Mapping[str, Tensor], what: str = "vector") -> None:
        """Raise unless ``v`` has exactly this space's names and shapes."""
        vectors.check_like(v, self.params, what)

    @torch.no_grad()
    def assign(self, values: Mapping[str, Tensor]) -> None:
        """Copy ``values`` into the parameters (foreach kernel, no autograd)."""
        names = list(self.params)
        torch._foreach_copy_([self.params[n] for n in names], [values[n] for n in names])

    def module_type_of(self, name: str) -> type[nn.Module]:
        return type(self.owners[name])


class Snapshot:
    """Detached copies of a space's parameters; :meth:`restore` copies them back bit for bit."""

    def __init__(self, space: ParamSpace) -> None:
        self.space = space
        self.saved: Vector = {n: p.detach().clone() for n, p in space.params.items()}

    @torch.no_grad()
    def restore(self) -> None:
        self.space.assign(self.saved)

    @torch.no_grad()
    def set_offset(self, terms: Sequence[tuple[float, Mapping[str, Tensor]]]) -> None:
        """Set θ = θ₀ + Σ_i c_i d_i from the saved θ₀ (never by accumulating steps).

        ``terms`` is a sequence of ``(c_i, d_i)``; each ``d_i`` may cover a subset of the space
        (missing names are zero).
        """
        names = list(self.saved)
        out = [t.clone() for t in (self.saved[n] for n in names)]
        for coeff, d in terms:
            idx = [i for i, n in enumerate(names) if n in d]
            if idx and coeff != 0.0:
                torch._foreach_add_([out[i] for i in idx], [d[names[i]] for i in idx], alpha=float(coeff))
        torch._foreach_copy_([self.space.params[n] for n in names], out)


@contextlib.contextmanager
def perturbed(model: nn.Module, delta: Mapping[str, Tensor], space: ParamSpace | None = None) -> Iterator[nn.Module]:
    """Set θ₀ + δ inside the block and restore θ₀ bit for bit on exit.

    Restoration runs in ``finally``, so it also happens when the body raises or is interrupted
    (``KeyboardInterrupt``). ``delta`` may cover any subset of the model's parameter names
    (tied aliases are accepted and resolved to the shared tensor).
    """
    space = space or ParamSpace(model, trainable_only=False)
    alias_to = {a: n for n, al in space.aliases.items() for a in al}
    resolved: dict[str, Tensor] = {}
    for name, t in delta.items():
        canon = alias_to.get(name, name)
        if canon not in space.params:
            raise KeyError(f"delta names {name!r}, which is not a parameter of {type(model).__name__}.")
        p = space.params[canon]
        if tuple(t.shape) != tuple(p.shape):
            raise ValueError(f"delta[{name!r}] has shape {tuple(t.shape)}, parameter has {tuple(p.shape)}.")
        resolved[canon] = t
    snap = Snapshot(space)
    try:
        snap.set_offset([(1.0, resolved)])
        yield model
    finally:
        snap.restore()


@dataclass
class ParamMask:
    """A selection of coordinates of a :class:`ParamSpace`.

    ``masks[name]`` is a bool tensor with the parameter's shape; names absent from ``masks`` are
    fully unselected. ``granularity`` is ``"element"`` or ``"tensor"`` (whole tensors selected).
    """

    space: ParamSpace
    masks: dict[str, Tensor]
    granularity: str = "element"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.granularity not in ("element", "tensor"):
            raise ValueError(f"granularity must be 'element' or 'tensor', got {self.granularity!r}.")
        for name, m in self.masks.items():
            if name not in self.space.params:
                raise KeyError(f"mask names {name!r}, which is not in the parameter space.")
            if m.dtype != torch.bool or tuple(m.shape) != tuple(self.space.params[name].shape):
                raise ValueError(f"mask[{name!r}] must be a bool tensor of the parameter's shape.")
        self.masks = {n: m for n, m in self.masks.items() if bool(m.any())}

    @classmethod
    def from_tensor_names(cls, space: ParamSpace, names: Sequence[str], meta: dict | None = None) -> ParamMask:
        """Select whole tensors by name."""
        unknown = [n for n in names if n not in space.params]
        if unknown:
            raise KeyError(f"unknown parameter names {unknown[:3]}.")
        masks = {n: torch.ones_like(space.params[n], dtype=torch.bool) for n in names}
        return cls(space, masks, "tensor", dict(meta or {}))

    @classmethod
    def full(cls, space: ParamSpace) -> ParamMask:
        return cls.from_tensor_names(space, space.names)

    @property
    def names(self) -> list[str]:
        """Names of tensors with at least one selected element, in space order."""
        return [n for n in self.space.names if n in self.masks]

    def count(self) -> int:
        """Number of selected scalar coordinates."""
        return int(sum(int(m.sum()) for m in self.masks.values()))

    @property
    def dim(self) -> int:
        return self.count()

    @property
    def fraction(self) -> float:
        return self.count() / self.space.dim

    def apply(self, v: Mapping[str, Tensor]) -> Vector:
        """P·v: ``v`` with unselected coordinates zeroed, restricted to :attr:`names`."""
        return {n: torch.where(self.masks[n].to(v[n].device), v[n], torch.zeros((), dtype=v[n].dtype, device=v[n].device)) for n in self.names}

    def __repr__(self) -> str:
        return f"ParamMask({self.granularity}, {len(self.masks)} tensors, {self.count()} of {self.space.dim} coords)"
