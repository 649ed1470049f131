"""Models: local checkpoint loading (no hub, no code execution) and the embedded default model.

- ``checkpoints``: :func:`load_checkpoint` for a Hugging Face directory, ``.safetensors`` (+config)
  or ``.pt`` (``weights_only``) or a hub name in the local cache (``hub_cache``), and batching helpers.
- ``weight_files``: weights read without executing code; ``tokens``: finding a tokenizer and
  checking that it reads the texts (the share of ``[UNK]``).
- ``default_model``: a small BERT pretrained offline on the standard library's docstrings, cached.
- ``corpus``: those docstrings, parsed with ``ast`` (never imported), each with its module, and a
  held-out split whose rows know their docstring and module (for a bootstrap over documents).
"""

from landscape.models.checkpoints import Checkpoint, load_checkpoint
from landscape.models.default_model import DefaultModel, DefaultModelConfig, load_default
from landscape.models.weight_files import read_state_dict

__all__ = ["Checkpoint", "load_checkpoint", "read_state_dict", "DefaultModel", "DefaultModelConfig", "load_default"]
