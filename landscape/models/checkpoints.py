"""Checkpoint loading, offline and without code execution.

Three forms load:

* a local Hugging Face directory (``config.json`` + weights), through
  ``from_pretrained(path, local_files_only=True, trust_remote_code=False)``;
* a ``.safetensors`` state dict, with a ``config.json`` beside it or a config passed in;
* a torch file (``.pt``/``.bin``/``.pth``) read with ``torch.load(weights_only=True)``, which refuses
  pickles that would execute code.

Errors name the problem and the fix: a missing file, an architecture that is not an MLM/causal
LM, a checkpoint without its MLM head, or a pickle needing code execution.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

TASKS = ("mlm", "causal", "auto")
TORCH_SUFFIXES = (".pt", ".pth", ".bin")


@dataclass
class Checkpoint:
    """A loaded model, its tokenizer (``None`` if the checkpoint has none), path and task."""

    model: nn.Module
    tokenizer: Any
    path: Path
    task: str  # "mlm" or "causal"


def _auto_classes(task: str) -> Any:
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM

    return AutoModelForMaskedLM if task == "mlm" else AutoModelForCausalLM


def _infer_task(config: Any) -> str:
    archs = [a.lower() for a in (getattr(config, "architectures", None) or [])]
    if any("causallm" in a or "lmhead" in a for a in archs) or getattr(config, "is_decoder", False):
        return "causal"
    if any("maskedlm" in a or "pretraining" in a for a in archs):
        return "mlm"
    model_type = getattr(config, "model_type", "")
    return "causal" if model_type in {"gpt2", "gpt_neo", "gptj", "llama", "mistral", "opt", "gpt_neox", "qwen2"} else "mlm"


def _load_config(path: Path, config: Any) -> Any:
    from transformers import AutoConfig, PretrainedConfig

    if isinstance(config, PretrainedConfig):
        return config
    source = Path(config) if config is not None else path.parent
    if source.is_file():
        source = source.parent
    if not (source / "config.json").is_file():
        raise FileNotFoundError(
            f"no config for {path}: put config.json beside it or pass config=<dir, config.json or PretrainedConfig>."
        )
    return AutoConfig.from_pretrained(str(source), local_files_only=True, trust_remote_code=False)


def _check_architecture(config: Any, task: str) -> None:
    """Refuse a config with no masked/causal-LM class, from the auto mapping (no model is built)."""
    if type(config) not in _auto_classes(task)._model_mapping:
        raise ValueError(
            f"architecture {getattr(config, 'model_type', '?')!r} has no {'masked' if task == 'mlm' else 'causal'}-LM "
            f"class in transformers; pass task='mlm' or 'causal' to match the checkpoint."
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

        return load_file(str(path))
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise ValueError(
            f"{path} cannot be read with torch.load(weights_only=True): it needs code execution to "
            "unpickle (a pickled module or custom class). Save a plain state dict instead "
            "(torch.save(model.state_dict(), path)) or convert it to .safetensors."
        ) from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise ValueError(f"{path} does not hold a state dict of tensors (got {type(obj).__name__}).")
    return obj


def _check_head(model: nn.Module, missing: Sequence[str], task: str, path: Path) -> None:
    head_words = ("cls.predictions", "lm_head", "vocab_projector", "vocab_transform", "generator_lm_head")
    missing_head = [k for k in missing if any(w in k for w in head_words)]
    tied = {"cls.predictions.decoder.weight", "lm_head.weight", "cls.predictions.decoder.bias"}
    missing_head = [k for k in missing_head if k not in tied]
    if missing_head:
        what = "MLM head" if task == "mlm" else "LM head"
        raise ValueError(
            f"{path} has no {what} (missing {missing_head[:3]}): it is a bare encoder or a model for "
            "another task. Use a checkpoint saved from a ...ForMaskedLM / ...ForCausalLM model."
        )
    body_missing = [k for k in missing if k not in tied and k not in missing_head]
    if body_missing:
        raise ValueError(
            f"{path} does not match the configured architecture: {len(body_missing)} weights missing "
            f"(e.g. {body_missing[:3]}). Check that the config belongs to this checkpoint."
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
        task: ``"mlm"``, ``"causal"`` or ``"auto"`` (from the config's architectures).
        config: for single files, a config directory/file or ``PretrainedConfig``; default: the
            file's directory.
        device, dtype: where and in what precision to put the model.
    """
    from transformers import AutoConfig

    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}.")
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist (give a local directory or file; hubs are not used).")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json: it is not a Hugging Face checkpoint directory.")
        cfg = AutoConfig.from_pretrained(str(path), local_files_only=True, trust_remote_code=False)
        task = _infer_task(cfg) if task == "auto" else task
        auto = _auto_classes(task)
        _check_architecture(cfg, task)  # a clear message before any weights are read
        model, info = auto.from_pretrained(
            str(path), local_files_only=True, trust_remote_code=False, output_loading_info=True
        )
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
        _check_head(model, result.missing_keys, task, path)
        tie = getattr(model, "tie_weights", None)
        if callable(tie):
            tie()
        tok_dir = Path(config) if isinstance(config, (str, Path)) else path.parent
        tokenizer = _load_tokenizer(tok_dir.parent if tok_dir.is_file() else tok_dir)
    model = model.to(device=device, dtype=dtype) if dtype is not None else model.to(device=device)
    model.eval()
    return Checkpoint(model=model, tokenizer=tokenizer, path=path, task=task)


def _load_tokenizer(directory: Path) -> Any:
    from transformers import AutoTokenizer

    if not any((directory / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        return None
    return AutoTokenizer.from_pretrained(str(directory), local_files_only=True, trust_remote_code=False)


def texts_to_batches(tokenizer: Any, texts: Sequence[str], max_length: int = 128, batch_size: int = 8) -> list[dict[str, Tensor]]:
    """Tokenize ``texts`` into padded batches of ``input_ids``/``attention_mask`` (no labels)."""
    if not texts:
        raise ValueError("no texts to tokenize.")
    out = []
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i : i + batch_size]), truncation=True, max_length=max_length, padding=True, return_tensors="pt")
        out.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
    return out
