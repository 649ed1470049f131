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
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from landscape.models.hub_cache import looks_like_hub_name
from landscape.models.hub_cache import resolve as resolve_hub_name
from landscape.models.tokens import find_tokenizer
from landscape.models.weight_files import (
    check_weight_files,
    damaged,
    first_line,
    needs_code,
    read_state_dict,
    weight_names,
)

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
    causal = {"gpt2", "gpt_neo", "gptj", "llama", "mistral", "opt", "gpt_neox", "qwen2"}
    return "causal" if model_type in causal else "mlm"


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
        raise ValueError(f"{file} must hold a JSON object, got {type(raw).__name__}; restore it from the original "
                         "checkpoint.")
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
        raise ValueError(f"{file} cannot be read as a {model_type} config: {first_line(exc)}.") from None


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
    tokenizer: str | Path | None = None,
) -> Checkpoint:
    """Load a model (and tokenizer, when present) from a local checkpoint, in eval mode.

    Args:
        path: a Hugging Face directory, a ``.safetensors`` file, a torch ``.pt``/``.bin`` file, or a hub
            name (``org/name[@revision]``) found in the local Hugging Face cache (never downloaded).
        task: ``"mlm"``, ``"causal"``, ``"cls"`` (sequence classification) or ``"auto"`` (from the
            config's architectures).
        config: for single files, a config directory/file or ``PretrainedConfig``; default: the
            file's directory.
        device, dtype: where and in what precision to put the model.
        tokenizer: a tokenizer folder or file (``tokenizer.json``, ``vocab.txt``); default: the
            checkpoint folder's, else the one a folder up.

    A config naming an architecture ``transformers`` lacks (extra heads of other code) loads the task
    head its weights hold; weights the model has no place for are named in one log line.
    """
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    with quiet_transformers():
        ck = _load(_resolve(Path(path).expanduser(), path), task, config, device, dtype, tokenizer)
    if ck.task == "causal" and ck.tokenizer is not None:
        ensure_pad_token(ck.tokenizer)
    return ck


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No "Loading weights" progress bars and no "LOAD REPORT" tables from ``transformers`` (they end
    up between our output lines); what matters in them is said in one line of ours instead."""
    from transformers.utils import logging as hf_logging

    enabled, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if enabled:
            hf_logging.enable_progress_bar()


def _resolve(path: Path, given: str | Path) -> Path:
    """``path`` itself when it exists, else a hub name resolved from the local cache (offline)."""
    if path.exists() or not looks_like_hub_name(str(given)):
        return path
    return resolve_hub_name(str(given))


def _task_from_weights(config: Any, names: Sequence[str]) -> str:
    """The head a checkpoint's weights hold: an LM head (masked or causal, by the model type), else a
    classifier; for configs naming an architecture ``transformers`` does not have."""
    lm = ("cls.predictions.", "lm_head.", "predictions.", "vocab_projector.", "generator_lm_head.", "decoder.")
    if any(n.startswith(lm) or f".{lm[0]}" in n for n in names):
        from transformers import AutoModelForMaskedLM

        return "mlm" if type(config) in AutoModelForMaskedLM._model_mapping else "causal"
    if any(n.startswith(("classifier.", "score.")) for n in names):
        return "cls"
    return _infer_task(config)


def _unknown_architecture(config: Any) -> str | None:
    import transformers

    names = [a for a in (getattr(config, "architectures", None) or []) if not hasattr(transformers, a)]
    return names[0] if names else None


def _note_ignored(path: Path, model: nn.Module, unexpected: Sequence[str], arch: str | None) -> None:
    """One line naming the weights the loaded model does not use (and the unknown architecture)."""
    if not unexpected and arch is None:
        return
    what = f"config.json names {arch!r}, which transformers does not have; " if arch else ""
    ignored = f"; ignored {len(unexpected)} weights it has no place for: {', '.join(list(unexpected)[:4])}" + (
        ", ..." if len(unexpected) > 4 else "") if unexpected else ""
    log.warning("landscape: note: %s: %sloaded as %s%s.", path, what, type(model).__name__, ignored)


def _load(path: Path, task: str, config: Any, device: str | torch.device, dtype: torch.dtype | None,
          tokenizer: str | Path | None) -> Checkpoint:
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a local directory or file, or a hub name in "
                                "the local Hugging Face cache).")
    if path.is_dir():
        model, cfg, task = _load_dir(path, task)
        tok = find_tokenizer(path, tokenizer, cfg)
    else:
        model, cfg, task = _load_file(path, task, config)
        tok_dir = Path(config) if isinstance(config, (str, Path)) else path.parent
        tok = find_tokenizer(tok_dir.parent if tok_dir.is_file() else tok_dir, tokenizer, cfg)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    model.eval()
    return Checkpoint(model=model, tokenizer=tok, path=path, task=task)


def _load_dir(path: Path, task: str) -> tuple[nn.Module, Any, str]:
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face checkpoint directory.")
    cfg = read_config(path)
    unknown = _unknown_architecture(cfg)
    check_weight_files(path)
    if task == "auto":
        task = _task_from_weights(cfg, weight_names(path)) if unknown else _infer_task(cfg)
    _check_architecture(cfg, task)  # a clear message before any weights are read
    try:
        model, info = _auto_classes(task).from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
    except (OSError, RuntimeError, pickle.UnpicklingError) as exc:  # e.g. a truncated pytorch_model.bin
        if needs_code(exc):
            raise ValueError(f"{path}: the weights need code execution to unpickle; convert them to "
                             ".safetensors.") from None
        raise ValueError(damaged(path, exc)) from None
    _check_head(model, info.get("missing_keys", []), task, path)
    _note_ignored(path, model, sorted(info.get("unexpected_keys", [])), unknown)
    return model, cfg, task


def _load_file(path: Path, task: str, config: Any) -> tuple[nn.Module, Any, str]:
    if path.suffix not in (".safetensors", *TORCH_SUFFIXES):
        raise ValueError(f"{path}: unknown checkpoint format {path.suffix!r}; use a directory, .safetensors or "
                         ".pt/.bin.")
    cfg = _load_config(path, config)
    state = read_state_dict(path)
    unknown = _unknown_architecture(cfg)
    if task == "auto":
        task = _task_from_weights(cfg, list(state)) if unknown else _infer_task(cfg)
    model = _model_from_config(cfg, task)
    result = model.load_state_dict(state, strict=False)
    _check_head(model, result.missing_keys, task, path)  # ties the weights first
    _note_ignored(path, model, sorted(result.unexpected_keys), unknown)
    return model, cfg, task


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
        enc = tokenizer(list(texts[i : i + batch_size]), truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        if labels is not None:
            batch["labels"] = torch.tensor([int(y) for y in labels[i : i + batch_size]], dtype=torch.long)
        out.append(batch)
    return out
