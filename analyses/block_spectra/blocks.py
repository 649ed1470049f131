"""The blocks of a transformer, found by parameter name: one table of name → role rules.

A block is a set of parameter tensors: ``embeddings``, per layer ``layer.<i>.<role>`` for each role
of :data:`ROLES`, and ``head``. The layer comes from :func:`landscape.params.layer_group`; the role
within a layer from the first rule of :data:`ROLE_RULES` whose pattern is found in the name.

What each test architecture gives (``tests/architectures.py``):

- BERT, RoBERTa, ELECTRA, DeBERTa-v2, BERT classifier: query, key, value, attn_out, ffn_in, ffn_out,
  norm (DeBERTa's relative-position ``pos_query_proj`` / ``pos_key_proj`` count as query / key);
- DistilBERT (``q_lin`` … ``ffn.lin1/lin2``), Llama (``q_proj`` … ``gate_proj``/``up_proj`` →
  ffn_in, ``down_proj`` → ffn_out): the same seven roles;
- ALBERT: the same seven roles in one ``layer.shared`` (one set of weights serving every depth);
- GPT-2 (``c_attn``) and ModernBERT (``Wqkv``): query, key and value live in one fused tensor, so
  they give one ``qkv`` role instead of three; the other roles as above.

Tied weights count once, under their first name (GPT-2's ``lm_head`` is ``wte``: ``embeddings``).
A layer tensor no rule matches gets the role ``other`` (none of the test architectures has one).
"""

from __future__ import annotations

import re

from torch import nn

from landscape.params import ParamSpace, layer_group, layer_order

#: roles within a layer, in display order
ROLES = ("query", "key", "value", "qkv", "attn_out", "ffn_in", "ffn_out", "norm", "other")

#: (role, regex searched in the parameter name, case-insensitive); the first match wins, so the
#: norm rule comes before ``attention.output`` and ``attn_out`` before BERT's ``output.dense``
ROLE_RULES: tuple[tuple[str, str], ...] = (
    ("norm", r"\.(\w*norm\w*|ln_?\w*)\.(weight|bias)$"),
    ("qkv", r"\.(wqkv|c_attn|qkv\w*|query_key_value)\."),
    ("query", r"\.(pos_)?(query|query_proj|q_lin|q_proj)\."),
    ("key", r"\.(pos_)?(key|key_proj|k_lin|k_proj)\."),
    ("value", r"\.(value|value_proj|v_lin|v_proj)\."),
    ("attn_out", r"(attention\.output\.dense|attention\.dense|\.out_lin|\.o_proj|attn\.c_proj|attn\.wo|"
                 r"attn\.out_proj)\."),
    ("ffn_out", r"(\.output\.dense|ffn\.lin2|mlp\.c_proj|mlp\.wo|down_proj|ffn_output|\.fc2)\."),
    ("ffn_in", r"(intermediate\.dense|ffn\.lin1|mlp\.c_fc|mlp\.wi|gate_proj|up_proj|\.ffn|\.fc1)\."),
)
_COMPILED = tuple((role, re.compile(pattern, re.IGNORECASE)) for role, pattern in ROLE_RULES)


def role_of(name: str) -> str:
    """The role of a layer parameter ``name`` (:data:`ROLES`; ``other`` when no rule matches)."""
    for role, pattern in _COMPILED:
        if pattern.search(name):
            return role
    return "other"


def block_of(name: str) -> str:
    """``embeddings``, ``head`` or ``<layer>.<role>`` (e.g. ``layer.0.query``, ``layer.shared.norm``)."""
    group = layer_group(name)
    return group if group in ("embeddings", "head") else f"{group}.{role_of(name)}"


def block_order(block: str) -> tuple[int, int, int]:
    """Sort key: embeddings, then layer by layer in :data:`ROLES` order, then head."""
    group, _, role = block.rpartition(".") if block.startswith("layer.") else (block, "", "")
    return (*layer_order(group), ROLES.index(role) if role in ROLES else -1)


def transformer_blocks(model: nn.Module) -> dict[str, list[str]]:
    """Block name -> canonical parameter names (tied weights once), blocks in network order.

    Raises:
        ValueError: the model has no trainable parameters.
    """
    blocks: dict[str, list[str]] = {}
    for name in ParamSpace(model).names:
        blocks.setdefault(block_of(name), []).append(name)
    return {b: blocks[b] for b in sorted(blocks, key=block_order)}


def split_block(block: str) -> tuple[str, str]:
    """``(layer, role)`` of a block name: ``("layer.0", "query")``; ``("embeddings", "")`` outside layers."""
    if block.startswith("layer."):
        group, _, role = block.rpartition(".")
        return group, role
    return block, ""
