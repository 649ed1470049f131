"""Command-line flags generated from an analysis's config dataclass.

Each field declared with :func:`analyses.study.setting` becomes ``--field-name`` (or its ``flag``),
with the field's default and help text; booleans that default to True become ``--no-field-name``,
tuples take several values, ``Literal`` types give the choices. A field whose flag reads differently
(a seed count for a tuple of seeds, ``--range R``) carries a :class:`CliArg`.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from analyses.cli import parse_range


@dataclass(frozen=True)
class CliArg:
    """How a field reads from the command line when its flag is not the plain value.

    ``convert(value, args)`` maps the parsed flag (and the other parsed flags) to the field's value."""

    type: Callable[[str], Any] | None = None
    nargs: str | None = None
    default: Any = None
    metavar: str | None = None
    convert: Callable[[Any, argparse.Namespace], Any] | None = None


def seed_count(default: int, minimum: int = 1, first: str = "seed") -> CliArg:
    """``--seeds N`` -> the tuple ``(SEED, SEED+1, ..., SEED+N-1)``, ``SEED`` from ``--seed``."""
    def convert(n: int, args: argparse.Namespace) -> tuple[int, ...]:
        if n < minimum:
            raise ValueError(f"--seeds must be at least {minimum}, got {n}.")
        start = int(getattr(args, first))
        return tuple(range(start, start + n))

    return CliArg(type=int, default=default, metavar="N", convert=convert)


def symmetric_range(default: float) -> CliArg:
    """``--range R`` (or ``-R R``) -> the half-width R of a range symmetric around 0."""
    return CliArg(type=float, nargs="+", default=[-default, default], metavar="R | LO HI",
                  convert=lambda v, args: parse_range(v, symmetric=True)[1])


def _flag(f: dataclasses.Field, hint: Any) -> str:
    if f.metadata.get("flag"):
        return str(f.metadata["flag"])
    name = f.name.replace("_", "-")
    return f"--no-{name}" if hint is bool and f.default is True else f"--{name}"


def _base(hint: Any) -> Any:
    """``X`` of ``X | None`` / ``Optional[X]``."""
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if typing.get_origin(hint) in (typing.Union, types.UnionType) and len(args) == 1:
        return args[0]
    return hint


def _value_kwargs(f: dataclasses.Field, hint: Any) -> dict[str, Any]:
    """Argparse keywords for a plain field: type, nargs, choices, action."""
    base = _base(hint)
    choices = f.metadata.get("choices")
    if base is bool:
        return {"action": "store_false" if f.default is True else "store_true"}
    kw: dict[str, Any] = {}
    if typing.get_origin(base) is tuple:
        base, kw["nargs"] = typing.get_args(base)[0], "+"
    if typing.get_origin(base) is Literal:
        choices = choices or typing.get_args(base)
        base = type(typing.get_args(base)[0])
    kw["type"] = base if base in (int, float, str) else str
    if choices:
        kw["choices"] = list(choices)
    return kw


def field_default(f: dataclasses.Field) -> Any:
    """A field's default (its factory's product for a factory)."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None if f.default is dataclasses.MISSING else f.default


def add_config_arguments(parser: argparse.ArgumentParser, config: type) -> None:
    """One flag per config field (hidden fields left out), defaults and help text from the field.

    The config's own fields come first, then those it inherits (shared settings such as
    ``TextSettings``), so ``--help`` lists what is particular to the command at the top."""
    hints = typing.get_type_hints(config)
    own = set(vars(config).get("__annotations__", {}))
    for f in sorted(dataclasses.fields(config), key=lambda f: f.name not in own):
        if f.metadata.get("hidden"):
            continue
        help_text = str(f.metadata.get("help", "")).replace("%", "%%")
        default = field_default(f)
        if f.metadata.get("positional"):
            parser.add_argument(f.name, nargs="?", default=default, help=help_text)
            continue
        cli: CliArg | None = f.metadata.get("cli")
        kw: dict[str, Any]
        if cli is not None:
            kw = {k: v for k, v in (("type", cli.type), ("nargs", cli.nargs), ("metavar",
                                                                               cli.metavar)) if v is not None}
            default = cli.default
        else:
            kw = _value_kwargs(f, hints[f.name])
        flag = _flag(f, hints[f.name])
        if kw.get("action") == "store_false":
            help_text = f"turn off: {help_text}"
        elif "action" not in kw:
            shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
            help_text += f" (default: {shown})" if shown not in (None, "") else ""
            kw["default"] = list(default) if isinstance(default, tuple) else default
            kw.setdefault("metavar", None if "choices" in kw else flag[2:].upper().replace("-", "_"))
        parser.add_argument(flag, dest=f.name, help=help_text, **kw)


def config_from_args(config: type, args: argparse.Namespace) -> Any:
    """The config dataclass built from parsed flags (hidden fields keep their defaults)."""
    values: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        if f.metadata.get("hidden") or not f.init:
            continue
        value = getattr(args, f.name)
        cli: CliArg | None = f.metadata.get("cli")
        if cli is not None and cli.convert is not None:
            value = cli.convert(value, args)
        values[f.name] = tuple(value) if type(value) is list else value  # list subclasses (Texts) kept
    return config(**values)
