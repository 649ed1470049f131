"""Checkpoint loading, offline and without code execution.

Three forms load:

* a local Hugging Face directory (``config.json`` + weights), through
  ``from_pretrained(path, local_files_only=True, trust_remote_code=False)``;
* a ``.safetensors`` state dict, with a ``config.json`` beside it or a config passed in;
* a torch file (``.pt``/``.bin``/``.pth``) read with ``torch.load(weights_only=True)``, which refuses
  pickles that would execute code.

Masked LMs, causal LMs and sequence classifiers (``task="cls"``) load. Errors are one line of
ours naming the problem and the fix: a missing file, a ``config.json`` that is not JSON or names an
unknown or custom-code architecture, a damaged weights file, an architecture that is not the task's,
a checkpoint without its head (tied heads count as present), or a pickle needing code execution.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

TASKS = ("mlm", "causal", "cls", "auto")
log = logging.getLogger("landscape.models")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass
class Checkpoint:
    """A loaded model, its tokenizer (``None`` if the checkpoint has none), path and task."""

    model: nn.Module
    tokenizer: Any
    path: Path
    task: str  # "mlm", "causal" or "cls"


def _auto_classes(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoModelForSequenceClassification

    return {"mlm": AutoModelForMaskedLM, "causal": AutoModelForCausalLM}.get(task, AutoModelForSequenceClassification)


_TASK_WORDS = {"mlm": "masked-LM", "causal": "causal-LM", "cls": "sequence-classification"}


def _infer_task(config: Any) -> str:
    archs = [a.lower() for a in (getattr(config, "architectures", None) or [])]
    if any("forsequenceclassification" in a for a in archs):
        return "cls"
    if any("causallm" in a or "lmhead" in a for a in archs) or getattr(config, "is_decoder", False):
        return "causal"
    if any("maskedlm" in a or "pretraining" in a for a in archs):
        return "mlm"
    model_type = getattr(config, "model_type", "")
    return "causal" if model_type in {"gpt2", "gpt_neo", "gptj", "llama", "mistral", "opt", "gpt_neox", "qwen2"} else "mlm"


def _load_config(path: Path, config: Any) -> Any:
    from transformers import PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    source = Path(config) if config is not None else path.parent
    if source.is_file():
        source = source.parent
    if not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"no config for {path}: put config.json beside it or pass config=<dir, config.json or PretrainedConfig>."
        )
    return read_config(source)


def _first_line(exc: BaseException) -> str:
    """The first line of an exception message, without hub URLs (they mean nothing for local files)."""
    line = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)
    return re.sub(r"\s*\(?https?://\S+\)?", "", line).rstrip(" .:") or type(exc).__name__


def read_config(directory: str | Path) -> Any:
    """``AutoConfig`` of a local checkpoint directory, with one-line errors of ours for a
    ``config.json`` that is not JSON, names an unknown ``model_type`` or needs custom code."""
    from transformers import CONFIG_MAPPING, AutoConfig, __version__

    directory = Path(directory)
    file = directory / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = f" ({exc.msg} at line {exc.lineno})" if isinstance(exc, json.JSONDecodeError) else ""
        raise ValueError(f"{file} is not valid JSON{where}; restore it from the original checkpoint "
                         "(save_pretrained writes it).") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}; restore it from the original checkpoint.")
    model_type = raw.get("model_type")
    if model_type not in CONFIG_MAPPING:
        if raw.get("auto_map"):
            raise ValueError(f"{file} names custom model code (auto_map, model_type {model_type!r}), which landscape "
                             "never runs; convert the checkpoint to a built-in transformers architecture.")
        raise ValueError(f"{file}: model_type {model_type!r} is unknown to transformers {__version__}; fix "
                         "config.json or install a transformers version that has this architecture.")
    try:
        return AutoConfig.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{file} cannot be read as a {model_type} config: {_first_line(exc)}.") from None


def _check_architecture(config: Any, task: str) -> None:
    """Refuse a config with no masked/causal-LM class, from the auto mapping (no model is built)."""
    if type(config) not in _auto_classes(task)._model_mapping:
        raise ValueError(
            f"architecture {getattr(config, 'model_type', '?')!r} has no {_TASK_WORDS[task]} class in transformers; "
            "pass task='mlm', 'causal' or 'cls' to match the checkpoint."
        )


def _model_from_config(config: Any, task: str) -> nn.Module:
    _check_architecture(config, task)
    return _auto_classes(task).from_config(config, trust_remote_code=False)


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
            raise ValueError(_damaged(path, exc)) from None
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError, a truncated zip archive, ...
        if not _needs_code(exc):
            raise ValueError(_damaged(path, exc)) from None
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


def _needs_code(exc: BaseException) -> bool:
    """Whether ``torch.load(weights_only=True)`` refused a well-formed pickle for naming a global
    (a class or function it would have to import and run), as opposed to failing on damaged bytes."""
    return "global" in str(exc).lower()


def _damaged(path: Path, exc: BaseException) -> str:
    return (f"{path} is damaged or incomplete ({_first_line(exc)}): the weights file was truncated or is not a "
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
            raise ValueError(_damaged(f, exc)) from None


def tied_groups(model: nn.Module) -> dict[str, list[str]]:
    """Each parameter name -> every name sharing its tensor (itself included), from the model's own
    tying (``tie_weights()``): BERT's, RoBERTa's, ALBERT's, ModernBERT's ... decoder weights."""
    by_id: dict[int, list[str]] = defaultdict(list)
    for name, p in model.named_parameters(remove_duplicate=False):
        by_id[id(p)].append(name)
    return {n: names for names in by_id.values() for n in names}


_HEAD_WORDS = ("cls.", "lm_head", "vocab_", "predictions.", "classifier", "score", "head.", "decoder.")


def _is_head(model: nn.Module, name: str, names: Iterable[str]) -> bool:
    """Whether parameter ``name`` belongs to the task head: outside the base model
    (``base_model_prefix``), or, for a model without one, named like a head."""
    prefix = (getattr(model, "base_model_prefix", "") or "") + "."
    if prefix != "." and any(n.startswith(prefix) for n in names):
        return not name.startswith(prefix)
    return any(w in name for w in _HEAD_WORDS)


def _check_head(model: nn.Module, missing: Sequence[str], task: str, path: Path) -> None:
    """Refuse a checkpoint without the task's head, or with body weights missing. A missing name
    tied to a loaded tensor (the model's own tying) is present; the head is whatever lies outside
    the base model (``base_model_prefix``)."""
    tie = getattr(model, "tie_weights", None)
    if callable(tie):
        tie()
    groups = tied_groups(model)
    missing_set = set(missing)
    missing = [k for k in missing if not any(o not in missing_set for o in groups.get(k, [k]))]
    missing_head = [k for k in missing if _is_head(model, k, groups)]
    if missing_head:
        what = {"mlm": "MLM head", "causal": "LM head", "cls": "classification head"}[task]
        raise ValueError(
            f"{path} has no {what} (missing {missing_head[:3]}): it is a bare encoder or a model for another task. "
            "Use a checkpoint saved from a ...ForMaskedLM / ...ForCausalLM / ...ForSequenceClassification model "
            "(or pass the matching task)."
        )
    if missing:
        raise ValueError(
            f"{path} does not match the configured architecture: {len(missing)} weights missing "
            f"(e.g. {missing[:3]}). Check that the config belongs to this checkpoint."
        )


def load_checkpoint(
    path: str | Path,
    task: str = "auto",
    config: Any = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> Checkpoint:
    """Load a model (and tokenizer, when present) from a local checkpoint, in eval mode.

    Args:
        path: a Hugging Face directory, a ``.safetensors`` file or a torch ``.pt``/``.bin`` file.
        task: ``"mlm"``, ``"causal"``, ``"cls"`` (sequence classification) or ``"auto"`` (from the
            config's architectures).
        config: for single files, a config directory/file or ``PretrainedConfig``; default: the
            file's directory.
        device, dtype: where and in what precision to put the model.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    with _quiet_transformers():
        return _load(Path(path).expanduser(), task, config, device, dtype)


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bars from ``transformers`` (they end up between our output lines)."""
    from transformers.utils import logging as hf_logging

    enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if enabled:
            hf_logging.enable_progress_bar()


def _load(path: Path, task: str, config: Any, device: str | torch.device, dtype: torch.dtype | None) -> Checkpoint:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a local directory or file; hubs are not used).")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face checkpoint directory.")
        cfg = read_config(path)
        task = _infer_task(cfg) if task == "auto" else task
        auto = _auto_classes(task)
        _check_architecture(cfg, task)  # a clear message before any weights are read
        check_weight_files(path)
        try:
            model, info = auto.from_pretrained(
                str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True
            )
        except (OSError, RuntimeError, pickle.UnpicklingError) as exc:  # e.g. a truncated pytorch_model.bin
            if _needs_code(exc):
                raise ValueError(f"{path}: the weights need code execution to unpickle; convert them to .safetensors.") from None
            raise ValueError(_damaged(path, exc)) from None
        _check_head(model, info.get("missing_keys", []), task, path)
        tokenizer = _load_tokenizer(path)
    else:
        if path.suffix not in (".safetensors", *TORCH_SUFFIXES):
            raise ValueError(f"{path}: unknown checkpoint format {path.suffix!r}; use a directory, .safetensors or .pt/.bin.")
        cfg = _load_config(path, config)
        task = _infer_task(cfg) if task == "auto" else task
        model = _model_from_config(cfg, task)
        state = read_state_dict(path)
        result = model.load_state_dict(state, strict=False)
        _check_head(model, result.missing_keys, task, path)  # ties the weights first
        tok_dir = Path(config) if isinstance(config, (str, Path)) else path.parent
        tokenizer = _load_tokenizer(tok_dir.parent if tok_dir.is_file() else tok_dir)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    model.eval()
    if task == "causal" and tokenizer is not None:
        ensure_pad_token(tokenizer)
    return Checkpoint(model=model, tokenizer=tokenizer, path=path, task=task)


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)


def ensure_pad_token(tokenizer: Any) -> None:
    """Give a tokenizer without a pad token (GPT-2's) pad = eos, and say so once in the log.

    Safe for the causal-LM loss: padded positions have attention 0 and label -100."""
    if getattr(tokenizer, "pad_token", None) is not None or getattr(tokenizer, "eos_token", None) is None:
        return
    tokenizer.pad_token = tokenizer.eos_token
    from landscape.util import log_once

    log_once(f"landscape: the tokenizer has no pad token; padding with eos ({tokenizer.eos_token!r}), "
             "which carries no loss (attention mask 0, label -100).", logging.WARNING)


def max_positions(model: nn.Module) -> int | None:
    """Longest input ``model`` embeds: ``config.max_position_embeddings`` (GPT-2: ``n_positions``),
    less RoBERTa-style position offsets (positions start after the pad id); ``None`` if unknown."""
    config = getattr(model, "config", None)
    n = getattr(config, "max_position_embeddings", None)
    if not isinstance(n, int) or n <= 0:
        return None
    if getattr(config, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "longformer", "xlm-roberta-xl"}:
        n -= int(getattr(config, "pad_token_id", 1) or 0) + 1
    return n


def texts_to_batches(tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 8,
                     labels: Sequence[int] | None = None) -> list[dict[str, Tensor]]:
    """Tokenize ``texts`` into padded batches of ``input_ids``/``attention_mask`` (plus ``labels``
    ``[B]`` when class labels are given, one per text)."""
    if not texts:
        raise ValueError("no texts to tokenize.")
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"{len(labels)} labels for {len(texts)} texts; give one label per text.")
    if getattr(tokenizer, "pad_token", None) is None:
        ensure_pad_token(tokenizer)
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i : i + batch_size]), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if labels is not None:
            batch["labels"] = torch.tensor([int(y) for y in labels[i : i + batch_size]], dtype=torch.long)
        out.append(batch)
    return out
