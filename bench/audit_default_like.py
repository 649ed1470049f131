"""Save a checkpoint with the default model's architecture and tokenizer (untrained weights) plus held-out
texts that fill 128 tokens, for timing `landscape audit` when the cached default model is absent.

    python bench/audit_default_like.py OUT_DIR   # writes OUT_DIR/checkpoint and OUT_DIR/texts.txt
"""
import sys
import time
from pathlib import Path
from transformers import BertConfig, BertForMaskedLM
from landscape.models.default_model import DefaultModelConfig
from landscape.models.corpus import build_tokenizer, stdlib_docstrings, split_texts
t = time.time()
cfg = DefaultModelConfig()
texts = stdlib_docstrings(min_chars=cfg.min_chars)
train, held = split_texts(texts, cfg.heldout_fraction)
tok = build_tokenizer(train[:3000], cfg.vocab_size, cfg.lowercase, cfg.max_seq_len)
bc = BertConfig(vocab_size=len(tok), hidden_size=cfg.hidden_size, num_hidden_layers=cfg.num_layers,
                num_attention_heads=cfg.num_heads, intermediate_size=cfg.intermediate_size,
                max_position_embeddings=cfg.max_seq_len, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                attn_implementation="eager")
model = BertForMaskedLM(bc)
root = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/default_like"); out = root / "checkpoint"; model.save_pretrained(out); tok.save_pretrained(out)
# long texts so every sequence fills max_length tokens, like the default model's chunks
chunks, cur = [], ""
for h in held:
    cur += " " + h.replace("\n", " ")
    if len(cur) > 900:
        chunks.append(cur.strip()); cur = ""
(root / "texts.txt").write_text("\n".join(chunks))
print(sum(p.numel() for p in model.parameters()), len(tok), len(chunks), time.time() - t)
