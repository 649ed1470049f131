"""The embedded default model: a small BERT pretrained offline on stdlib docstrings.

``load_default()`` returns a cached :class:`DefaultModel`, building it on first use
(WordPiece tokenizer + masked-LM pretraining on CPU, a few minutes).  The cache
lives in ``$LANDSCAPE_CACHE`` or ``~/.cache/landscape`` under
``default-model/<key>``, where ``key`` hashes the config and the corpus hash.
Each cache entry is a loadable Hugging Face checkpoint plus ``metadata.json``
and the tokenized ``train``/``heldout`` sequences; the held-out rows carry the
docstring and module each came from (:meth:`DefaultModel.heldout_groups`), for
bootstrapping over documents rather than rows.  An entry is written to a temporary
directory and renamed into place, so an interrupted build leaves nothing behind.

Builds run in a child process with ``OMP_WAIT_POLICY=PASSIVE``: with the default
(spinning) OpenMP waits, two torch threads sharing two cores with any other busy
process ran pretraining 5-25x slower (a 2.5-minute build took 12 minutes). The
pretraining loop itself is :mod:`landscape.models.pretraining`.
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
from typing import Any, Literal

import torch

from landscape.models import corpus, pretraining
from landscape.models.corpus import build_tokenizer, chunk_texts, unigram_cross_entropy, unigram_entropy
from landscape.models.pretraining import PretrainRecipe
from landscape.util.files import write_text

__all__ = ["DefaultModelConfig", "DefaultModel", "load_default", "cached_path", "cache_root", "heldout_loss"]

CACHE_FORMAT = 2  # 2: held-out rows carry their docstring and module (heldout_groups)
#: Build in a child process with passive OpenMP waits (tests switch this off to monkeypatch).
BUILD_IN_SUBPROCESS = True


@dataclass(frozen=True)
class DefaultModelConfig(PretrainRecipe):
    """Everything that determines the default model (with the corpus hash, the cache key): the
    pretraining recipe it extends (:class:`~landscape.models.pretraining.PretrainRecipe`: seed,
    steps, batch size, learning rate, ...), the architecture and the corpus.

    The defaults were tuned on a 2-core CPU, where dropout 0.1 (as BERT) costs about 25 % more per
    step: 1,150 steps at lr 5e-3, 216 s of pretraining when quiet (3 min 54 s for the whole build),
    reach a held-out masked-LM loss 1.57 nats below the unigram baseline (4.52 against 6.09).
    Short rows (64 tokens) gave the best loss per second (see BENCHMARKS.md).
    """

    vocab_size: int = 2048
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    intermediate_size: int = 512
    max_seq_len: int = 64  # also the model's max_position_embeddings
    dropout: float = 0.1  # hidden and attention dropout while pretraining, as BERT (evaluation: eval mode, none)
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

    def heldout_groups(self, level: Literal["document", "module"]) -> torch.Tensor:
        """Cluster label of every held-out row, int64 ``[n_heldout_rows]``, rows in the order of
        :meth:`heldout_batches`.

        ``"document"``: the index (among the held-out docstrings, in corpus order) of the docstring
        that supplied the row's first real token; ``"module"``: the index of that docstring's module
        in :meth:`heldout_module_names`. Neighbouring rows of the packed stream share a docstring or
        a module, so resample these groups, not rows, to bootstrap over the corpus.
        """
        key = {"document": "doc_index", "module": "module_index"}.get(level)
        if key is None:
            raise ValueError(f"level must be 'document' or 'module', got {level!r}.")
        return self._heldout[key].clone()

    def heldout_module_names(self) -> list[str]:
        """Dotted names of the held-out docstrings' modules (``json.decoder``), indexed by
        ``heldout_groups("module")``, in order of first appearance."""
        return list(self.metadata["heldout_module_names"])


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


def _corpus(cfg: DefaultModelConfig, root: Path,
            fresh: bool = False) -> tuple[list[corpus.Document] | None, str]:
    """Return (documents or None, corpus hash of their texts).

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
    docs = corpus.stdlib_documents(min_chars=cfg.min_chars)
    docs = docs if cfg.max_docstrings is None else docs[: cfg.max_docstrings]
    h = corpus.corpus_hash([d.text for d in docs])
    write_text(index, json.dumps({"corpus_hash": h, "n_docstrings": len(docs)}))
    return docs, h


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
    heldout_modules: list[str]  # names indexed by heldout["module_index"]


def _heldout_modules(docs: list[corpus.Document], doc_index: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Module index of each row (``[n_rows]``) and the module names, in order of first appearance."""
    names = list(dict.fromkeys(d.module for d in docs))
    of_doc = torch.tensor([names.index(d.module) for d in docs], dtype=torch.long)
    return of_doc[doc_index], names


def _train(cfg: DefaultModelConfig, docs: list[corpus.Document], progress: bool) -> _Trained:
    """Tokenizer, tokenized splits and the pretrained model for ``cfg`` (seeded: same weights)."""
    from transformers import BertConfig, BertForMaskedLM

    held = [corpus.is_heldout(d.text, cfg.heldout_fraction) for d in docs]
    train_texts = [d.text for d, h in zip(docs, held) if not h]
    heldout_docs = [d for d, h in zip(docs, held) if h]
    if not train_texts or not heldout_docs:
        raise ValueError("corpus too small: empty train or held-out split")
    tok = build_tokenizer(train_texts, cfg.vocab_size, cfg.lowercase, cfg.max_seq_len)
    train = chunk_texts(tok, train_texts, cfg.max_seq_len)
    heldout = chunk_texts(tok, [d.text for d in heldout_docs], cfg.max_seq_len)
    heldout["module_index"], modules = _heldout_modules(heldout_docs, heldout["doc_index"])

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
                    (len(docs), len(train_texts), len(heldout_docs)), modules)


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
        "n_heldout_modules": len(t.heldout_modules), "heldout_module_names": t.heldout_modules,
        "n_train_tokens": int(pretraining.maskable(train["input_ids"], train["attention_mask"], special).sum()),
        "n_parameters": int(sum(p.numel() for p in t.model.parameters())),
        "pretrain_seconds": round(t.pretrain_s, 2),
        "build_seconds": round(time.perf_counter() - t_build, 2),
        "final_train_loss": sum(losses[-20:]) / max(1, len(losses[-20:])),
        "train_loss_curve": pretraining.loss_curve(losses),
        "heldout_loss": loss, "heldout_loss_evaluator": "landscape.objectives.MaskedLM(mask_prob=0.15, seed=0)",
        "unigram_entropy": unigram_entropy(train["input_ids"], special),
        "heldout_unigram_xent": unigram_cross_entropy(train["input_ids"], heldout["input_ids"], special, len(t.tok)),
        "seed": cfg.seed, "built_at": time.time(), "python": sys.version.split()[0],
        "torch": torch.__version__, "transformers": transformers.__version__,
    }


def _build(cfg: DefaultModelConfig, docs: list[corpus.Document], chash: str, final: Path, progress: bool,
           replace: bool = False) -> None:
    """Build the model into a temp dir next to ``final`` and rename it into place
    (``replace``: swap out an existing entry)."""
    from safetensors.torch import save_file

    from landscape.models.checkpoints import quiet_transformers

    t_build = time.perf_counter()
    t = _train(cfg, docs, progress)
    final.parent.mkdir(parents=True, exist_ok=True)
    _sweep_leftovers(final.parent)
    tmp = stale = final.parent / f".tmp-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        loss = heldout_loss(DefaultModel(t.model, t.tok, tmp, {}, _train=t.train, _heldout=t.heldout))
        with quiet_transformers():  # no "Writing model shards" bar between our lines
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


def _build_in_subprocess(cfg: DefaultModelConfig, docs: list[corpus.Document], chash: str, final: Path, progress: bool,
                         replace: bool = False) -> None:
    """Run :func:`_build` in a child Python (``_build_main(JOB)``) with passive OpenMP waits."""
    final.parent.mkdir(parents=True, exist_ok=True)
    job = final.parent / f".job-{final.name}-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    job.write_text(json.dumps({"config": cfg.to_dict(), "documents": [[d.module, d.text] for d in docs],
                               "corpus_hash": chash,
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
    docs = [corpus.Document(module, text) for module, text in job["documents"]]
    _build(cfg, docs, job["corpus_hash"], Path(job["final"]), job["progress"], job["replace"])
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
    docs, chash = _corpus(cfg, root)
    final = root / "default-model" / cfg.cache_key(chash)
    cached = (final / "metadata.json").exists() and not rebuild
    if not cached:
        if docs is None:  # re-parse: never build from a possibly stale memoised hash
            docs, chash = _corpus(cfg, root, fresh=True)
            final = root / "default-model" / cfg.cache_key(chash)
        if rebuild or not (final / "metadata.json").exists():
            build = _build_in_subprocess if BUILD_IN_SUBPROCESS else _build
            build(cfg, list(docs or ()), chash, final, progress, replace=rebuild)
    dm = _load(final)
    dm.from_cache = cached
    dm.load_seconds = time.perf_counter() - t0
    return dm


if __name__ == "__main__":
    from landscape.models.default_model import _build_main as _main  # the canonical module, not __main__

    sys.exit(_main(sys.argv[1]))
