"""Weights files read without executing code: ``.safetensors`` and torch state dicts
(``torch.load(weights_only=True)``), their tensor names, and one-line errors for damaged files."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["check_weight_files", "damaged", "first_line", "needs_code", "read_state_dict", "weight_names"]


def first_line(exc: BaseException) -> str:
    """The first line of an exception message, without hub URLs (they mean nothing for local files)."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return re.sub(r"\s*\(?https?://\S+\)?", "", line).rstrip(" .:") or type(exc).__name__


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Read a ``.safetensors`` or torch state dict without executing code."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"checkpoint file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as exc:  # safetensors' SafetensorError: truncated or not a safetensors file
            raise ValueError(damaged(path, exc)) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, a truncated zip archive, ...
        if not needs_code(exc):
            raise ValueError(damaged(path, exc)) from None
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): it needs code execution to "
            "unpickle (a pickled module or custom class). Save a plain state dict instead "
            "(torch.save(model.state_dict(), path)) or convert it to .safetensors."
        ) from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__}).")
    return obj


def needs_code(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a well-formed pickle for naming a global
    (a class or function it would have to import and run), as opposed to failing on damaged bytes."""
    return "global" in str(exc).lower()


def damaged(path: Path, exc: BaseException) -> str:
    """The one-line message for a truncated or foreign weights file."""
    return (f"{path} is damaged or incomplete ({first_line(exc)}): the weights file was truncated or is not a "
            "checkpoint; copy or save it again.")


def check_weight_files(directory: Path) -> None:
    """Read the header of every ``*.safetensors`` weights file in ``directory`` (cheap: no tensor
    data), so a truncated or garbage file is refused with one line before ``from_pretrained``."""
    from safetensors import safe_open

    for f in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # SafetensorError
            raise ValueError(damaged(f, exc)) from None


def weight_names(directory: Path) -> list[str]:
    """Tensor names of a checkpoint folder's weights, read without loading the tensors."""
    from safetensors import safe_open

    index = next((f for f in sorted(directory.glob("*.index.json"))), None)
    if index is not None:
        return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
    names: list[str] = []
    for f in sorted(directory.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as handle:
            names.extend(handle.keys())
    for f in sorted(directory.glob("*.bin")) if not names else []:
        names.extend(read_state_dict(f))
    return names
