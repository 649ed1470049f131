"""Dropout sites of Hugging Face models, found by module name and role (never by index).

A *site* is one place where dropout happens in a forward pass, the object that holds its rate, and
the parameter tensors of the sub-layer whose output it drops (the tensors it *guards*, which score
it). Two kinds of site exist in current ``transformers``:

* ``"module"``: an ``nn.Dropout`` whose ``p`` is the rate. It is either called as a module (a
  forward hook fires) or its ``p`` is read at call time and passed to the attention kernel
  (BERT-family attention: ``dropout=self.dropout.p``; no hook fires);
* ``"attribute"``: a float attribute read at call time (Llama/Qwen ``self_attn.attention_dropout``).

Roles: ``embedding``, ``attention_probs``, ``attention_output``, ``ffn_output`` (GPT-2's residual
dropouts are ``attention_output`` and ``ffn_output``), ``relative_position`` and ``conv`` (DeBERTa-v2).
Dropouts outside the backbone (classifier heads) are listed in :attr:`SiteMap.head` and left at their
default. Dropout modules that no rule covers are listed in :attr:`SiteMap.unmatched`, so nothing is
missed silently.

ALBERT shares one layer across all depths: each of its sites serves every depth
(:attr:`DropoutSite.depths`), so one rate applies at all of them. ALBERT's ``AlbertLayer.dropout``
exists but is never called by ``transformers`` 5.x (its feed-forward output has no dropout); it is
listed in ``unmatched`` with that reason, not as a site.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = ["ROLES", "RULES", "DropoutSite", "Rule", "SiteMap", "find_sites", "get_rate", "is_dropout", "set_rate"]

ROLES = ("embedding", "attention_probs", "attention_output", "ffn_output", "relative_position", "conv")


@dataclass(frozen=True)
class Rule:
    """One role in one architecture.

    ``pattern`` matches the full module path of the rate holder; its named group ``base`` anchors
    ``guards``, module-path templates (``"{base}.dense"``) whose parameters the site guards.
    ``attr`` is ``"p"`` for ``nn.Dropout`` modules, else the float attribute's name.
    """

    pattern: str
    role: str
    guards: tuple[str, ...]
    attr: str = "p"


def _bert_like(query: str = "query", key: str = "key", value: str = "value") -> tuple[Rule, ...]:
    return (
        Rule(r"(?P<base>(?:^|.*\.)embeddings)\.dropout", "embedding",
             ("{base}.word_embeddings", "{base}.position_embeddings", "{base}.token_type_embeddings",
              "{base}.LayerNorm", "{base}.embed_proj")),
        Rule(r"(?P<base>.*\.layer\.\d+\.attention\.self)\.dropout", "attention_probs",
             (f"{{base}}.{query}", f"{{base}}.{key}", f"{{base}}.{value}")),
        Rule(r"(?P<base>.*\.layer\.\d+\.attention\.output)\.dropout", "attention_output",
             ("{base}.dense", "{base}.LayerNorm")),
        Rule(r"(?P<base>.*\.layer\.\d+\.output)\.dropout", "ffn_output", ("{base}.dense", "{base}.LayerNorm")),
    )


_LLAMA = (Rule(r"(?P<base>.*\.layers\.\d+\.self_attn)", "attention_probs",
               ("{base}.q_proj", "{base}.k_proj", "{base}.v_proj"), attr="attention_dropout"),)

#: Rules per ``config.model_type``. The paper's BERT mapping, carried to each architecture by role.
RULES: dict[str, tuple[Rule, ...]] = {
    "bert": _bert_like(),
    "roberta": _bert_like(),
    "electra": _bert_like(),
    "deberta-v2": _bert_like("query_proj", "key_proj", "value_proj") + (
        Rule(r"(?P<base>.*\.layer\.\d+\.attention\.self)\.pos_dropout", "relative_position",
             ("{base}.pos_key_proj", "{base}.pos_query_proj", "{base}.__encoder__.rel_embeddings",
              "{base}.__encoder__.LayerNorm")),
        Rule(r"(?P<base>.*\.encoder\.conv)\.dropout", "conv", ("{base}.conv",)),
    ),
    "distilbert": (
        Rule(r"(?P<base>(?:^|.*\.)embeddings)\.dropout", "embedding",
             ("{base}.word_embeddings", "{base}.position_embeddings", "{base}.LayerNorm")),
        Rule(r"(?P<base>.*\.layer\.\d+\.attention)\.dropout", "attention_probs",
             ("{base}.q_lin", "{base}.k_lin", "{base}.v_lin")),
        Rule(r"(?P<base>.*\.layer\.\d+)\.ffn\.dropout", "ffn_output", ("{base}.ffn.lin2", "{base}.output_layer_norm")),
    ),
    "albert": (
        Rule(r"(?P<base>(?:^|.*\.)embeddings)\.dropout", "embedding",
             ("{base}.word_embeddings", "{base}.position_embeddings", "{base}.token_type_embeddings",
              "{base}.LayerNorm")),
        Rule(r"(?P<base>.*\.albert_layers\.\d+\.attention)\.attention_dropout", "attention_probs",
             ("{base}.query", "{base}.key", "{base}.value")),
        Rule(r"(?P<base>.*\.albert_layers\.\d+\.attention)\.output_dropout", "attention_output",
             ("{base}.dense", "{base}.LayerNorm")),
    ),
    "gpt2": (
        Rule(r"(?P<base>(?:.+\.)?transformer|)\.?drop", "embedding", ("{base}.wte", "{base}.wpe")),
        Rule(r"(?P<base>.*\.h\.\d+\.attn)\.attn_dropout", "attention_probs", ("{base}.c_attn",)),
        Rule(r"(?P<base>.*\.h\.\d+\.attn)\.resid_dropout", "attention_output", ("{base}.c_proj",)),
        Rule(r"(?P<base>.*\.h\.\d+\.mlp)\.dropout", "ffn_output", ("{base}.c_proj",)),
    ),
    "llama": _LLAMA,
    "qwen2": _LLAMA,
    "mistral": _LLAMA,
    "qwen3": _LLAMA,
}

#: Dropout modules that exist but that ``transformers`` never calls, by model type: (pattern, reason).
DEAD: dict[str, tuple[tuple[str, str], ...]] = {
    "albert": ((r".*\.albert_layers\.\d+\.dropout",
                "AlbertLayer.dropout is never called in forward (no FFN-output dropout)"),),
}

_BLOCK = re.compile(r"(?:^|\.)(layer|layers|h|albert_layer_groups|albert_layers)\.(\d+)(?=\.|$)")


@dataclass(frozen=True)
class DropoutSite:
    """One dropout site.

    Attributes:
        id: stable name across heads of one backbone: ``"embedding"``, ``"layer.3.ffn_output"``,
            ``"group.0.layer.0.attention_probs"`` (ALBERT).
        role: one of :data:`ROLES`.
        module: path of the module that holds the rate (``""`` is the model itself).
        attr: ``"p"`` (an ``nn.Dropout``) or the float attribute's name.
        kind: ``"module"`` or ``"attribute"``.
        params: names of the guarded parameter tensors.
        layer: the block index, or ``None`` (embeddings, ALBERT's shared layer).
        depths: the depths this site serves (ALBERT: all of them; else ``(layer,)`` or ``()``).
    """

    id: str
    role: str
    module: str
    attr: str
    kind: str
    params: tuple[str, ...]
    layer: int | None = None
    depths: tuple[int, ...] = ()

    @property
    def shared(self) -> bool:
        """Whether one rate serves several depths (ALBERT)."""
        return len(self.depths) > 1

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "role": self.role, "module": self.module, "attr": self.attr, "kind": self.kind,
                "params": list(self.params), "layer": self.layer, "depths": list(self.depths)}


@dataclass
class SiteMap:
    """The sites of one model (``sites``), head dropouts left alone, and uncovered dropouts."""

    model_type: str
    model_class: str
    sites: list[DropoutSite]
    head: list[str] = field(default_factory=list)
    unmatched: list[tuple[str, str]] = field(default_factory=list)  # (module path, reason)

    def __iter__(self) -> Iterator[DropoutSite]:
        return iter(self.sites)

    def __len__(self) -> int:
        return len(self.sites)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.sites]

    def __getitem__(self, site_id: str) -> DropoutSite:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise KeyError(f"no dropout site {site_id!r}; this {self.model_class} has {self.ids}.")

    def to_dict(self) -> dict[str, Any]:
        return {"model_type": self.model_type, "model_class": self.model_class,
                "sites": [s.to_dict() for s in self.sites],
                "head": self.head, "unmatched": [list(u) for u in self.unmatched]}


def _model_type(model: nn.Module) -> str:
    return str(getattr(getattr(model, "config", None), "model_type", "") or "")


def _site_id(path: str, role: str) -> tuple[str, int | None]:
    blocks = _BLOCK.findall(path)
    if not blocks:
        return role, None
    if blocks[0][0] == "albert_layer_groups":
        inner = f".layer.{blocks[1][1]}" if len(blocks) > 1 else ""
        return f"group.{blocks[0][1]}{inner}.{role}", None
    return f"layer.{blocks[-1][1]}.{role}", int(blocks[-1][1])


def _guarded(model: nn.Module, base: str, templates: Sequence[str]) -> tuple[str, ...]:
    names = [n for n, _ in model.named_parameters()]
    encoder = base.split(".encoder.")[0] + ".encoder" if ".encoder." in base else ""
    out: list[str] = []
    for t in templates:
        prefix = t.format(base=base).replace(f"{base}.__encoder__", encoder).lstrip(".")
        out += [n for n in names if n.startswith(prefix + ".") and n not in out]
    return tuple(out)


def _depths(model: nn.Module, model_type: str, layer: int | None, path: str) -> tuple[int, ...]:
    cfg = getattr(model, "config", None)
    if model_type == "albert" and cfg is not None and ".albert_layers." in path:
        return tuple(range(int(cfg.num_hidden_layers))) if int(getattr(cfg, "num_hidden_groups", 1)) == 1 else ()
    return () if layer is None else (layer,)


def is_dropout(m: nn.Module) -> bool:
    """Whether ``m`` is a torch dropout module (``nn.Dropout``, ``Dropout1d/2d/3d``, ``AlphaDropout``)."""
    return isinstance(m, nn.modules.dropout._DropoutNd)


def find_sites(model: nn.Module) -> SiteMap:
    """Every dropout site of ``model`` by module name and role (see :data:`RULES`).

    Works for any head on a supported backbone (``...ForMaskedLM``, ``...ForSequenceClassification``);
    site ids do not depend on the head, so rates made on the MLM model apply to the classifier.

    Raises:
        ValueError: the model has no dropout site (an unsupported architecture without
            ``nn.Dropout`` modules, or an architecture whose rules match nothing).
    """
    mtype = _model_type(model)
    modules = dict(model.named_modules())
    sites = _rule_sites(model, mtype, RULES.get(mtype) or _generic_rules(model), modules)
    head, unmatched = _leftovers(model, mtype, modules, {s.module for s in sites})
    if len({s.id for s in sites}) != len(sites):
        raise ValueError(f"dropout site ids collide in {type(model).__name__}: {[s.id for s in sites]}")
    if not sites:
        raise ValueError(f"{type(model).__name__} (model_type {mtype or 'unknown'!r}) has no dropout sites: "
                         "no nn.Dropout module and no attention_dropout attribute in its backbone.")
    sites.sort(key=_site_order)
    return SiteMap(mtype, type(model).__name__, sites, head, unmatched)


def _holds_rate(rule: Rule, mod: nn.Module) -> bool:
    """An ``nn.Dropout`` for ``attr == "p"``, else a module with a numeric ``rule.attr``."""
    return is_dropout(mod) if rule.attr == "p" else isinstance(getattr(mod, rule.attr, None), (int, float))


def _rule_sites(model: nn.Module, mtype: str, rules: Sequence[Rule],
                modules: dict[str, nn.Module]) -> list[DropoutSite]:
    """The sites the rules match, in rule order then module order."""
    sites: list[DropoutSite] = []
    for rule in rules:
        rx = re.compile(rule.pattern + r"$")
        for path, mod in modules.items():
            m = rx.match(path)
            if not m or not _holds_rate(rule, mod):
                continue
            params = _guarded(model, m.group("base"), rule.guards)
            if not params:
                raise ValueError(f"dropout site {path!r} ({rule.role}) guards no parameter; the {mtype} rules "
                                 f"do not fit this {type(model).__name__}.")
            sid, layer = _site_id(path, rule.role)
            kind = "module" if rule.attr == "p" else "attribute"
            sites.append(DropoutSite(sid, rule.role, path, rule.attr, kind, params, layer,
                                     _depths(model, mtype, layer, path)))
    return sites


def _leftovers(model: nn.Module, mtype: str, modules: dict[str, nn.Module],
               claimed: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Dropout modules no site claims: head dropouts, and the others with the reason (dead or no rule)."""
    backbone = _backbone_prefix(model)
    head: list[str] = []
    unmatched: list[tuple[str, str]] = []
    dead = [(re.compile(p + r"$"), why) for p, why in DEAD.get(mtype, ())]
    for path, mod in modules.items():
        if not is_dropout(mod) or path in claimed:
            continue
        reason = next((why for rx, why in dead if rx.match(path)), None)
        if reason is not None:
            unmatched.append((path, reason))
        elif backbone and not path.startswith(backbone + "."):
            head.append(path)
        else:
            unmatched.append((path, "no rule for this module"))
    return head, unmatched


_ROLE_ORDER = {r: i for i, r in enumerate(ROLES)}


def _site_order(s: DropoutSite) -> tuple[int, int, str]:
    """Embeddings first, then by layer (shared/unplaced last), then role, then id."""
    depth = -1 if s.layer is None and s.role == "embedding" else (s.layer if s.layer is not None else 10**6)
    return depth, _ROLE_ORDER.get(s.role, 99), s.id


def _backbone_prefix(model: nn.Module) -> str:
    prefix = getattr(model, "base_model_prefix", "")
    return prefix if prefix and hasattr(model, prefix) else ""


def _generic_rules(model: nn.Module) -> tuple[Rule, ...]:
    """Unknown architectures: every ``attention_dropout`` float and every backbone ``nn.Dropout``,
    guarding the parameters of the module that owns it (role from its name)."""
    rules: list[Rule] = []
    backbone = _backbone_prefix(model)
    for path, mod in model.named_modules():
        if backbone and path and not path.startswith(backbone + "."):
            continue
        if isinstance(getattr(mod, "attention_dropout", None), float) and not is_dropout(mod.attention_dropout):
            rules.append(Rule(f"(?P<base>{re.escape(path)})", "attention_probs", ("{base}",), attr="attention_dropout"))
        elif is_dropout(mod) and path:
            parent = path.rsplit(".", 1)[0] if "." in path else ""
            attn = "attn" in path or "attention" in path
            role = "attention_probs" if attn else "embedding" if "emb" in path else "ffn_output"
            leaf = re.escape(path.rsplit(".", 1)[-1])
            rules.append(Rule(f"(?P<base>{re.escape(parent)})\\.{leaf}", role, ("{base}",)))
    return tuple(rules)


def _resolve(model: nn.Module, path: str) -> nn.Module:
    return model.get_submodule(path) if path else model


def get_rate(model: nn.Module, site: DropoutSite) -> float:
    """The rate the model uses now at ``site``."""
    return float(getattr(_resolve(model, site.module), site.attr))


def set_rate(model: nn.Module, site: DropoutSite, rate: float) -> None:
    """Set the rate at ``site`` (``nn.Dropout.p`` or the float attribute)."""
    setattr(_resolve(model, site.module), site.attr, float(rate))
