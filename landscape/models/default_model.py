"""The embedded default model: a small BERT pretrained offline on stdlib docstrings.

``load_default()`` returns a cached :class:`DefaultModel`, building it on first use
(WordPiece tokenizer + masked-LM pretraining on CPU, a few minutes).  The cache
lives in ``$LANDSCAPE_CACHE`` or ``~/.cache/landscape`` under
``default-model/<key>``, where ``key`` hashes the config and the corpus hash.
Each cache entry is a loadable Hugging Face checkpoint plus ``metadata.json``
and the tokenized ``train``/``heldout`` sequences; it is written to a temporary
directory and renamed into place, so an interrupted build leaves nothing behind.

Builds run in a child process with ``OMP_WAIT_POLICY=PASSIVE``: with the default
(spinning) OpenMP waits, two torch threads sharing two cores with any other busy
process ran pretraining 5-25x slower (a 2.5-minute build took 12 minutes).

The pretraining loop itself is :mod:`landscape.models.pretraining`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from landscape.models import corpus, pretraining
from landscape.models.corpus import build_tokenizer, chunk_texts, unigram_entropy
from landscape.util.files import write_text

__all__ = ["DefaultModelConfig", "DefaultModel", "load_default", "cached_path", "cache_root", "heldout_loss"]

CACHE_FORMAT = 1
#: Build in a child process with passive OpenMP waits (tests switch this off to monkeypatch).
BUILD_IN_SUBPROCESS = True


@dataclass(frozen=True)
class DefaultModelConfig:
    """Everything that determines the default model (with the corpus hash, the cache key).

    The defaults were tuned on a 2-core CPU: 2.5-3 minutes of pretraining for a held-out
    masked-LM loss about 1.8 nats below the unigram-entropy baseline (see BENCHMARKS.md).
    Large training mask rates (40%) and short rows (64 tokens) gave the best loss per second.
    """

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_seq_len: int = 64  # also the model's max_position_embeddings
    dropout: float = 0.0
    steps: int = 1500
    batch_size: int = 64
    lr: float = 3e-3  # 6e-3 diverges (post-LN BERT)
    warmup_steps: int = 80
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    train_mask_prob: float = 0.4  # pretraining only; evaluation always masks 15%
    seed: int = 0
    heldout_fraction: float = 0.05
    min_chars: int = 40
    max_docstrings: int | None = None  # use only the first N docstrings (tests)
    lowercase: bool = True
    attn_implementation: str = "sdpa"  # used for pretraining only; not saved in the checkpoint

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (JSON-serialisable)."""
        return dataclasses.asdict(self)

    def cache_key(self, corpus_sha256: str) -> str:
        """Short hash of the config, the corpus hash and the cache format."""
        blob = json.dumps({"config": self.to_dict(), "corpus": corpus_sha256, "format": CACHE_FORMAT},
                          sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass
class DefaultModel:
    """A loaded default model with its tokenizer, cache path and data."""

    model: Any  # transformers.BertForMaskedLM, in eval mode
    tokenizer: Any  # transformers.PreTrainedTokenizerFast
    path: Path
    metadata: dict[str, Any]
    from_cache: bool = False
    load_seconds: float = 0.0
    _train: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    _heldout: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    def heldout_batches(self, batch_size: int = 8, max_examples: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Held-out sequences (never trained on) as ``input_ids``/``attention_mask`` batches."""
        return _batches(self._heldout, batch_size, max_examples)

    def train_batches(self, batch_size: int = 8, max_examples: int | None = None) -> list[dict[str, torch.Tensor]]:
        """Training sequences, in corpus order, as ``input_ids``/``attention_mask`` batches."""
        return _batches(self._train, batch_size, max_examples)


def _batches(data: dict[str, torch.Tensor], batch_size: int, max_examples: int | None) -> list[dict[str, torch.Tensor]]:
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    n = data["input_ids"].shape[0]
    if max_examples is not None:
        n = min(n, max_examples)
    return [{k: data[k][i:min(i + batch_size, n)].clone() for k in ("input_ids", "attention_mask")}
            for i in range(0, n, batch_size)]


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The landscape cache directory: ``cache_dir``, ``$LANDSCAPE_CACHE`` or ``~/.cache/landscape``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LANDSCAPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "landscape"


# --------------------------------------------------------------------------- corpus


def _corpus(cfg: DefaultModelConfig, root: Path, fresh: bool = False) -> tuple[list[str] | None, str]:
    """Return (texts or None, corpus hash).

    The corpus hash is memoised under ``root/corpus-index``, keyed by a stat
    fingerprint of the stdlib, so loading a cached model does not re-parse the
    stdlib.  ``fresh=True`` always parses (and refreshes the memo).
    """
    fp = corpus.stdlib_fingerprint()
    tag = hashlib.sha256(f"{fp}|{cfg.min_chars}|{cfg.max_docstrings}".encode()).hexdigest()[:16]
    index = root / "corpus-index" / f"{tag}.json"
    if not fresh:
        try:
            return None, json.loads(index.read_text())["corpus_hash"]
        except (OSError, ValueError, KeyError):
            pass
    texts = _load_texts(cfg)
    h = corpus.corpus_hash(texts)
    write_text(index, json.dumps({"corpus_hash": h, "n_docstrings": len(texts)}))
    return texts, h


def _load_texts(cfg: DefaultModelConfig) -> list[str]:
    texts = corpus.stdlib_docstrings(min_chars=cfg.min_chars)
    return texts if cfg.max_docstrings is None else texts[: cfg.max_docstrings]


def heldout_loss(dm: DefaultModel, batch_size: int = 16) -> float:
    """Held-out MLM loss with fixed masks: ``landscape.objectives.MaskedLM(mask_prob=0.15, seed=0)``."""
    from landscape.objectives import MaskedLM

    tok = dm.tokenizer
    obj = MaskedLM(mask_prob=0.15, seed=0, mask_token_id=tok.mask_token_id,
                   special_token_ids=tok.all_special_ids)
    return float(obj.evaluate(dm.model, dm.heldout_batches(batch_size)))


# --------------------------------------------------------------------------- build / load


@dataclass
class _Trained:
    """What one pretraining run made: the model, its tokenizer, the tokenized splits, the losses."""

    model: Any
    tok: Any
    train: dict[str, torch.Tensor]
    heldout: dict[str, torch.Tensor]
    losses: list[float]
    pretrain_s: float
    n_docs: tuple[int, int, int]  # docstrings: all, train, held-out


def _train(cfg: DefaultModelConfig, texts: list[str], progress: bool) -> _Trained:
    """Tokenizer, tokenized splits and the pretrained model for ``cfg`` (seeded: same weights)."""
    from transformers import BertConfig, BertForMaskedLM

    train_texts, heldout_texts = corpus.split_texts(texts, cfg.heldout_fraction)
    if not train_texts or not heldout_texts:
        raise ValueError("corpus too small: empty train or held-out split")
    tok = build_tokenizer(train_texts, cfg.vocab_size, cfg.lowercase, cfg.max_seq_len)
    train = chunk_texts(tok, train_texts, cfg.max_seq_len)
    heldout = chunk_texts(tok, heldout_texts, cfg.max_seq_len)

    torch.manual_seed(cfg.seed)
    bcfg = BertConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                      num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                      max_position_embeddings=cfg.max_seq_len, type_vocab_size=1,
                      hidden_dropout_prob=cfg.dropout, attention_probs_dropout_prob=cfg.dropout,
                      pad_token_id=tok.pad_token_id,
                      **{"cls_token_id": tok.cls_token_id, "sep_token_id": tok.sep_token_id,
                         "mask_token_id": tok.mask_token_id})  # extra config keys, kept in config.json
    model = BertForMaskedLM._from_config(bcfg, attn_implementation=cfg.attn_implementation)

    t0 = time.perf_counter()
    losses = pretraining.pretrain(model, train, cfg, tok.all_special_ids, tok.mask_token_id, progress)
    return _Trained(model, tok, train, heldout, losses, time.perf_counter() - t0,
                    (len(texts), len(train_texts), len(heldout_texts)))


def _metadata(cfg: DefaultModelConfig, t: _Trained, key: str, chash: str, loss: float,
              t_build: float) -> dict[str, Any]:
    """The cache entry's ``metadata.json``: config, corpus, sizes, losses and versions."""
    import transformers

    special, train, heldout, losses = t.tok.all_special_ids, t.train, t.heldout, t.losses
    return {
        "config": cfg.to_dict(), "cache_key": key, "corpus_hash": chash,
        "n_docstrings": t.n_docs[0], "n_train_docstrings": t.n_docs[1], "n_heldout_docstrings": t.n_docs[2],
        "n_train_sequences": int(train["input_ids"].shape[0]),
        "n_heldout_sequences": int(heldout["input_ids"].shape[0]),
        "n_train_tokens": int(pretraining.maskable(train["input_ids"], train["attention_mask"], special).sum()),
        "n_parameters": int(sum(p.numel() for p in t.model.parameters())),
        "pretrain_seconds": round(t.pretrain_s, 2),
        "build_seconds": round(time.perf_counter() - t_build, 2),
        "final_train_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "train_loss_curve": pretraining.loss_curve(losses),
        "heldout_loss": loss, "heldout_loss_evaluator": "landscape.objectives.MaskedLM(mask_prob=0.15, seed=0)",
        "unigram_entropy": unigram_entropy(train["input_ids"], special),
        "heldout_unigram_xent": _unigram_xent(train["input_ids"], heldout["input_ids"], special, len(t.tok)),
        "seed": cfg.seed, "built_at": time.time(), "python": sys.version.split()[0],
        "torch": torch.__version__, "transformers": transformers.__version__,
    }


def _build(cfg: DefaultModelConfig, texts: list[str], chash: str, final: Path, progress: bool,
           replace: bool = False) -> None:
    """Build the model into a temp dir next to ``final`` and rename it into place
    (``replace``: swap out an existing entry)."""
    from safetensors.torch import save_file

    t_build = time.perf_counter()
    t = _train(cfg, texts, progress)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(final.parent)
    tmp = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stale = tmp
    try:
        tmp.mkdir()
        loss = heldout_loss(DefaultModel(t.model, t.tok, tmp, {}, _train=t.train, _heldout=t.heldout))
        t.model.save_pretrained(tmp, safe_serialization=True)
        t.tok.save_pretrained(tmp)
        save_file(t.train, str(tmp / "train.safetensors"))
        save_file(t.heldout, str(tmp / "heldout.safetensors"))
        meta = _metadata(cfg, t, final.name, chash, loss, t_build)
        (tmp / "metadata.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        stale = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
        if replace and final.exists():
            os.replace(final, stale)  # the old entry stays whole until the new one is complete
        try:
            os.replace(tmp, final)
        except OSError:
            if stale.exists() and not final.exists():
                os.replace(stale, final)  # put the old entry back
            if not (final / "metadata.json").exists():  # not a lost race with a concurrent build
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)


def _unigram_xent(train_ids: torch.Tensor, heldout_ids: torch.Tensor, special: list[int], vocab: int) -> float:
    """Cross-entropy (nats) of held-out non-special tokens under add-one-smoothed train unigram frequencies."""
    sp = torch.tensor(special)
    tr, he = train_ids.flatten(), heldout_ids.flatten()
    counts = torch.bincount(tr[~torch.isin(tr, sp)], minlength=vocab).double() + 1.0
    counts[sp] = 0.0
    logp = (counts / counts.sum()).log()
    return float(-logp[he[~torch.isin(he, sp)]].mean())


def _build_in_subprocess(cfg: DefaultModelConfig, texts: list[str], chash: str, final: Path, progress: bool,
                         replace: bool = False) -> None:
    """Run :func:`_build` in a child Python (``_build_main(JOB)``) with passive OpenMP waits."""
    final.parent.mkdir(parents=True, exist_ok=True)
    job = final.parent / f".job-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    job.write_text(json.dumps({"config": cfg.to_dict(), "texts": texts, "corpus_hash": chash,
                               "final": str(final), "progress": progress, "replace": replace}))
    env = dict(os.environ)
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    package_root = str(Path(__file__).resolve().parents[2])  # the folder holding the landscape package
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    try:
        child = "import sys; from landscape.models.default_model import _build_main; sys.exit(_build_main(sys.argv[1]))"
        proc = subprocess.Popen([sys.executable, "-c", child, str(job)], env=env)
        try:
            rc = proc.wait()
        except BaseException:  # interrupted: let the child clean up its temp dir, then go
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise
    finally:
        job.unlink(missing_ok=True)
    if rc != 0:
        raise RuntimeError(f"building the default model failed in a child process (exit status {rc}); "
                           "its error is printed above")


def _build_main(job_path: str) -> int:
    """Child-process entry point: build the cache entry described by a job file."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    job = json.loads(Path(job_path).read_text())
    cfg = DefaultModelConfig(**job["config"])
    _build(cfg, job["texts"], job["corpus_hash"], Path(job["final"]), job["progress"], job["replace"])
    return 0


def _sweep_leftovers(folder: Path, max_age_s: float = 86400.0) -> None:
    """Remove temp/stale dirs that a killed build (SIGKILL, power loss) left over a day ago."""
    for p in [*folder.glob(".tmp-*"), *folder.glob(".old-*"), *folder.glob(".job-*")]:
        try:
            if time.time() - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()
        except OSError:
            pass


def _load(path: Path) -> DefaultModel:
    from safetensors.torch import load_file
    from transformers import BertForMaskedLM, PreTrainedTokenizerFast

    meta = json.loads((path / "metadata.json").read_text())
    model = BertForMaskedLM.from_pretrained(path, local_files_only=True)
    model.eval()
    tok = PreTrainedTokenizerFast.from_pretrained(path, local_files_only=True)
    train = load_file(str(path / "train.safetensors"))
    heldout = load_file(str(path / "heldout.safetensors"))
    return DefaultModel(model, tok, path, meta, _train=train, _heldout=heldout)


def cached_path(config: DefaultModelConfig | None = None, cache_dir: str | os.PathLike | None = None) -> Path | None:
    """Path of the cache entry for ``config`` if it is already built, else ``None`` (never builds)."""
    cfg = config or DefaultModelConfig()
    root = cache_root(cache_dir)
    final = root / "default-model" / cfg.cache_key(_corpus(cfg, root)[1])
    return final if (final / "metadata.json").exists() else None


def load_default(config: DefaultModelConfig | None = None, cache_dir: str | os.PathLike | None = None,
                 rebuild: bool = False, progress: bool = True) -> DefaultModel:
    """Load the default model from the cache, building (and caching) it first if needed.

    ``rebuild=True`` retrains and replaces any cached entry.  The returned
    model is in eval mode; ``from_cache`` tells whether it was loaded without
    training and ``load_seconds`` how long the call took.
    """
    t0 = time.perf_counter()
    cfg = config or DefaultModelConfig()
    root = cache_root(cache_dir)
    texts, chash = _corpus(cfg, root)
    final = root / "default-model" / cfg.cache_key(chash)
    cached = (final / "metadata.json").exists() and not rebuild
    if not cached:
        if texts is None:  # re-parse: never build from a possibly stale memoised hash
            texts, chash = _corpus(cfg, root, fresh=True)
            final = root / "default-model" / cfg.cache_key(chash)
        if rebuild or not (final / "metadata.json").exists():
            build = _build_in_subprocess if BUILD_IN_SUBPROCESS else _build
            build(cfg, list(texts or ()), chash, final, progress, replace=rebuild)
    dm = _load(final)
    dm.from_cache = cached
    dm.load_seconds = time.perf_counter() - t0
    return dm


if __name__ == "__main__":
    from landscape.models.default_model import _build_main as _main  # the canonical module, not __main__

    sys.exit(_main(sys.argv[1]))
