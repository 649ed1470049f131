"""The analysis skeleton: one way to declare settings, resume, save a result and register a command.

An analysis is a :class:`Study` record: a config dataclass whose fields are declared with
:func:`setting` (default, help text, and whether the field changes numbers), a function
``run(config) -> result`` made of named stages, and a result dataclass that mixes in
:class:`FolderResult` (``result.json`` in the run's folder, arrays beside it). :func:`register` makes
it ``landscape analyze NAME``; the flags are generated from the config fields
(:mod:`analyses.cli.config_flags`). Settings every checkpoint analysis shares come from
:class:`TextSettings`.

Resume is one mechanism, :class:`Resume`: the hash of every field that changes numbers (plus what
the study adds: weights, data) is written to ``out/settings.json``; a resumed run under other
settings is refused with every differing field named; a fresh run clears the finished parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from analyses.cli.config_flags import CliArg
from landscape.util.files import read_json, write_json
from landscape.util.fingerprints import settings_fingerprint
from landscape.util.results import as_dict

#: ``result``: changes numbers (hashed); ``grid``: chooses which parts run, each part's numbers do not
#: depend on it (not hashed, so a grid can grow on resume); ``nothing``: where/how to run (not hashed).
Affects = Literal["result", "grid", "nothing"]

R = TypeVar("R", bound="FolderResult")


def setting(default: Any = MISSING, help: str = "", *, affects: Affects = "result", flag: str | None = None,
            cli: CliArg | None = None, choices: tuple[Any, ...] | None = None, positional: bool = False,
            hidden: bool = False) -> Any:
    """A config field with its command-line help and whether it changes numbers.

    ``flag`` renames the option (default ``--field-name``); ``hidden`` keeps it off the command line."""
    meta = {"help": help, "affects": affects, "flag": flag, "cli": cli, "choices": choices, "positional": positional,
            "hidden": hidden}
    if isinstance(default, (list, dict, set)):
        raise TypeError("give a tuple (immutable) as a setting's default.")
    return field(default=default, metadata=meta)


def affects(f: dataclasses.Field) -> Affects:
    """What a config field changes (``result`` unless declared otherwise)."""
    return f.metadata.get("affects", "result")


def result_settings(config: Any) -> dict[str, Any]:
    """Every config field that changes numbers, as JSON values (tuples as lists)."""
    keep = {f.name: getattr(config, f.name) for f in dataclasses.fields(config) if affects(f) == "result"}
    return json.loads(json.dumps(keep, default=str))


def differing(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """``name=OLD (now NEW)`` for every key whose value differs between two settings records."""
    def norm(v: Any) -> str:
        return json.dumps(v, sort_keys=True, default=str)

    keys = sorted(k for k in set(old) | set(new) if norm(old.get(k)) != norm(new.get(k)))
    return [f"{k}={old.get(k)!r} (now {new.get(k)!r})" for k in keys]


@dataclass
class TextSettings:
    """Settings shared by every analysis that reads a checkpoint and texts (mix into the config)."""

    tokenizer: str | None = setting(None, "tokenizer folder, tokenizer.json or vocab.txt for a checkpoint saved "
                                    "without one (it changes the tokens, so the numbers)", cli=CliArg(type=str,
                                    metavar="DIR|FILE"))
    allow_unk: bool = setting(False, "accept texts that tokenize to over 5 percent [UNK] tokens", affects="nothing")
    progress: bool = setting(True, "show progress bars", affects="nothing")


class Resume:
    """The one resume mechanism: ``out/settings.json`` records the settings hash; parts live in ``out/parts``.

    ``resume=False`` starts over (old parts deleted); ``resume=True`` refuses a folder made under other
    settings, naming every field that differs, and then :meth:`get` returns finished parts."""

    RECORD = "settings.json"

    def __init__(self, out: str | Path, settings: dict[str, Any], resume: bool) -> None:
        self.out, self.resume = Path(out), resume
        self.settings = json.loads(json.dumps(settings, default=str))
        self.hash = settings_fingerprint(self.settings)
        self.parts = self.out / "parts"
        self.parts.mkdir(parents=True, exist_ok=True)
        self._open()

    def _open(self) -> None:
        record = self.out / self.RECORD
        if self.resume and record.is_file():
            doc = read_json(record, what="settings record")
            if doc.get("settings_hash") != self.hash:
                changed = differing(doc.get("settings") or {}, self.settings)
                raise ValueError(f"cannot resume from {self.out}: it was computed with other settings "
                                 f"({'; '.join(changed) or 'a different settings hash'}); use another --out, or drop "
                                 "--resume to recompute everything.")
            return
        if self.resume and any(self.parts.iterdir()):
            raise ValueError(f"cannot resume from {self.out}: its parts carry no settings record; run without --resume "
                             "(or use another --out).")
        for p in self.parts.iterdir():
            if p.is_file():
                p.unlink()
        write_json(record, {"settings_hash": self.hash, "settings": self.settings})

    def get(self, key: str) -> Any:
        """The finished part ``key`` when resuming, else None."""
        path = self.parts / f"{key}.json"
        return read_json(path, what="part file")["data"] if self.resume and path.is_file() else None

    def put(self, key: str, data: Any) -> None:
        """Record the finished part ``key``."""
        write_json(self.parts / f"{key}.json", {"settings_hash": self.hash, "data": data})


class FolderResult:
    """Mixin for every analysis result dataclass: ``to_dict()``, ``save(out)`` writes ``out/result.json``,
    ``load(out)`` reads it (``out``: the run's folder, or its result.json). Arrays live beside it."""

    #: fields left out of result.json (kept elsewhere, e.g. runs.jsonl)
    _not_saved: ClassVar[tuple[str, ...]] = ()

    def to_dict(self) -> dict[str, Any]:
        """The result as JSON-able values."""
        d = asdict(self)  # type: ignore[call-overload]
        return {k: v for k, v in d.items() if k not in self._not_saved}

    def save(self, out: str | Path | None = None) -> Path:
        """Write ``result.json`` under ``out`` (default: the result's own ``out`` field)."""
        return write_json(Path(out or str(getattr(self, "out", ""))) / "result.json", self.to_dict())

    @classmethod
    def load(cls: type[R], out: str | Path) -> R:
        """Read ``out/result.json`` back."""
        d = as_dict(out)
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        missing = [f.name for f in dataclasses.fields(cls)  # type: ignore[arg-type]
                   if f.default is MISSING and f.default_factory is MISSING and f.name not in d]
        if missing:
            raise ValueError(f"{out} is not a {cls.__name__} of this version (no {', '.join(missing)}); rerun the "
                             "analysis.")
        return cls(**{k: v for k, v in d.items() if k in names})


def wrote_line(out: str | Path, files: str, seconds: float) -> str:
    """The last line every analysis prints: ``wrote OUT/FILES in N s``."""
    return f"wrote {out}/{files} in {seconds:.0f} s"


def _no_summary(result: Any) -> str:
    """Nothing beyond the ``wrote ...`` line."""
    return ""


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    """No flags beyond the config fields."""


def _no_adjustment(args: argparse.Namespace) -> None:
    """Leave the parsed flags as they are."""


@dataclass(frozen=True)
class Study:
    """An analysis, declared once: ``register(Study(name=..., help=..., config=..., run=..., summary=...))``.

    ``name``: its ``landscape analyze NAME`` command; ``help``: one line for ``--help`` lists;
    ``description``: the command's long help; ``config``: the settings dataclass (flags generated from
    it); ``run(config) -> result``: computes and writes under ``config.out``; ``summary(result) -> str``:
    what the command prints when done (``landscape analyze`` adds :func:`wrote_line` with ``files`` and
    the measured time); ``add_arguments``/``adjust``: extra flags, and a rewrite of the parsed flags
    before the config is built (e.g. a preset)."""

    name: str
    help: str
    config: type
    run: Callable[[Any], Any]
    summary: Callable[[Any], str] = _no_summary
    files: str = "result.json"
    description: str = ""
    add_arguments: Callable[[argparse.ArgumentParser], None] = _no_arguments
    adjust: Callable[[argparse.Namespace], None] = _no_adjustment


#: name -> Study, in registration order (``landscape analyze --help`` lists them so)
STUDIES: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Make ``study`` a ``landscape analyze NAME`` subcommand (flags from its config fields)."""
    if not dataclasses.is_dataclass(study.config):
        raise TypeError(f"{study.name}: config must be a dataclass, got {study.config!r}.")
    STUDIES[study.name] = study
    return study
