"""Parameter spaces and masks.

A :class:`ParamSpace` is the ordered list of a model's trainable parameters that an analysis acts
on. Tied tensors appear once, under their first name (BERT's MLM decoder weight *is* the word
embedding), and their other names are kept as aliases. A :class:`ParamMask` selects elements or
whole tensors of a space. Moving weights is :mod:`landscape.perturb`'s job
(``Perturbation(space.params)`` holds θ₀ of a space); this module does not import it.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Union

import torch
from torch import Tensor, nn

from landscape import vectors
from landscape.util import model_fingerprint
from landscape.vectors import Vector

__all__ = ["ParamSpace", "ParamMask", "Selection", "select", "layer_group", "layer_order", "group_note"]


_BLOCK = re.compile(r"(?:^|\.)(?:layer|layers|h|block|blocks)\.(\d+)\.")
_SHARED = re.compile(r"(?:^|\.)albert_layer_groups\.(\d+)\.")
SHARED_GROUP = "layer.shared"


def layer_group(name: str) -> str:
    """The block a parameter belongs to: ``"embeddings"``, ``"layer.<i>"``, ``"layer.shared"`` or ``"head"``.

    ``layer.<i>`` covers BERT-style ``layer.i``, GPT-2's ``h.i`` and ``layers.i`` / ``block(s).i``;
    ALBERT's cross-layer-shared group (``albert_layer_groups.g``) is ``layer.shared`` (``layer.shared.g``
    for g > 0): one set of weights that serves every depth (see :func:`group_note`). Anything else
    that is not an embedding (final norms, pooler, MLM or classifier head) is "head".
    The one grouping used by the core, the analyses and the figures.
    """
    m = _SHARED.search(name)
    if m:
        return SHARED_GROUP if int(m.group(1)) == 0 else f"{SHARED_GROUP}.{int(m.group(1))}"
    m = _BLOCK.search(name)
    if m:
        return f"layer.{int(m.group(1))}"
    if "embed" in name or name.startswith(("wte.", "wpe.")) or ".wte." in name or ".wpe." in name:
        return "embeddings"
    return "head"


def layer_order(group: str) -> tuple[int, int]:
    """Sort key putting groups in network order: embeddings, layer.0, layer.1, …, head."""
    if group == "embeddings":
        return (0, 0)
    if group.startswith("layer.") and group[6:].isdigit():
        return (1, int(group[6:]))
    if group.startswith(SHARED_GROUP):
        rest = group[len(SHARED_GROUP) + 1 :]
        return (1, -1000 + (int(rest) if rest.isdigit() else 0))
    return (2, 0)


def group_note(group: str) -> str | None:
    """A sentence to show beside a group whose numbers need one (ALBERT's shared layer), else None."""
    if group.startswith(SHARED_GROUP):
        return ("one set of layer weights shared across depths (ALBERT): it serves every depth, "
                "so its numbers cover all of them")
    return None


def _exact_pattern(name: str) -> str:
    """An ``fnmatch`` pattern that matches ``name`` only (``*``, ``?`` and ``[`` escaped)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


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

    @classmethod
    def from_names(cls, model: nn.Module, names: Sequence[str], trainable_only: bool = True) -> ParamSpace:
        """The space holding exactly the parameters called ``names`` (or their tied aliases)."""
        if not names:
            raise ValueError("ParamSpace.from_names needs at least one parameter name.")
        space = cls(model, include=[_exact_pattern(n) for n in names], trainable_only=trainable_only)
        space.resolve_names(names, what="names")
        return space

    def resolve_names(self, names: Iterable[str], what: str = "names") -> dict[str, str]:
        """Map each name (canonical or tied alias) to its canonical name in this space.

        Raises:
            KeyError: naming the first names that are not parameters of this space.
        """
        alias_to = {a: n for n, al in self.aliases.items() for a in al if n in self.params}
        out = {n: alias_to.get(n, n) for n in names}
        unknown = [n for n, c in out.items() if c not in self.params]
        if unknown:
            raise KeyError(f"{what}: {', '.join(map(repr, unknown[:3]))} is not a parameter of "
                           f"{type(self.model).__name__} in this space (example names: {self.names[:3]}).")
        return out

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
        zero = {n: torch.zeros((), dtype=v[n].dtype, device=v[n].device) for n in self.names}
        return {n: torch.where(self.masks[n].to(v[n].device), v[n], zero[n]) for n in self.names}

    def __repr__(self) -> str:
        return f"ParamMask({self.granularity}, {len(self.masks)} tensors, {self.count()} of {self.space.dim} coords)"


#: What every ``params=`` argument accepts: all trainable parameters (None), name globs, a space or a mask.
Selection = Union[ParamSpace, ParamMask, str, Sequence[str], None]


def select(model: nn.Module, params: Selection = None, what: str = "params") -> tuple[ParamSpace, ParamMask | None]:
    """Resolve the one ``params=`` argument of every entry point to (space, mask or None).

    ``None``: every trainable parameter; a glob or list of globs: ``ParamSpace(model, include=...)``;
    a :class:`ParamSpace` or :class:`ParamMask`, which must have been built on ``model`` itself.

    Raises:
        ValueError: for a space or mask of another model (even a same-architecture copy: map it by
            name on purpose with ``ParamMask.from_tensor_names`` / ``FisherDiagonal.load(model=...)``),
            or a mask that selects nothing.
    """
    if params is None:
        return ParamSpace(model), None
    if isinstance(params, ParamMask):
        if params.space.model is not model:
            raise ValueError(f"{what}: the ParamMask was built on another model ({type(params.space.model).__name__} "
                             f"object at {id(params.space.model):#x}); build it on this model's ParamSpace, e.g. from "
                             "Fisher scores loaded with FisherDiagonal.load(path, model=this_model).")
        if params.count() == 0:
            raise ValueError(f"{what}: the ParamMask selects no coordinate; select at least one parameter element.")
        return params.space, params
    if isinstance(params, ParamSpace):
        if params.model is not model:
            raise ValueError(f"{what}: the ParamSpace was built on another model; "
                             "build it with ParamSpace(model, ...).")
        return params, None
    if isinstance(params, str) or (isinstance(params, Sequence) and all(isinstance(p, str) for p in params)):
        return ParamSpace(model, include=params), None
    raise TypeError(f"{what} must be None, name globs, a ParamSpace or a ParamMask, got {type(params).__name__}.")
