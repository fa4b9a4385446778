"""Which block and which parameter group (attention / MLP / other) a state-dict key belongs to.

Both functions work on key names alone, so the analysis runs on any pool without building an encoder.
With an encoder at hand, prefer ``encoder.block_of_key`` for blocks (it knows its own prefix).
"""

from __future__ import annotations

import re

#: Parameter groups, in the order tables and plots show them.
PARAM_GROUPS: tuple[str, ...] = ("attention", "mlp", "other")

# A key is "attention" when one of its dotted components names an attention module or one of the
# projections that only attention modules have (timm ``attn.qkv``/``attn.proj``, open_clip / PyTorch
# ``attn.in_proj_weight``/``attn.out_proj``, HF-style ``q_proj``/``k_proj``/``v_proj``). A bare ``proj``
# counts only under an attention module: timm's ``patch_embed.proj`` and open_clip's output ``proj`` are
# "other".
_ATTENTION_PARTS = frozenset(
    {
        "attn",
        "attention",
        "self_attn",
        "qkv",
        "in_proj_weight",
        "in_proj_bias",
        "out_proj",
        "q_proj",
        "k_proj",
        "v_proj",
    }
)
# A key is "mlp" when a component names the feed-forward module or one of its layers (timm ``fc1``/``fc2``,
# open_clip ``c_fc``/``c_proj``).
_MLP_PARTS = frozenset({"mlp", "ffn", "fc1", "fc2", "c_fc", "c_proj"})

_BLOCK_RE = re.compile(r"^(?:.*\.)?(?:blocks|resblocks|layer)\.(\d+)\.")


def param_group(key: str) -> str:
    """``"attention"``, ``"mlp"`` or ``"other"`` (embeddings, norms, layer scales, projections) for ``key``.

    Attention is tested first, so a key under an attention module is attention whatever its leaf name.
    """
    parts = key.split(".")
    if any(p in _ATTENTION_PARTS for p in parts):
        return "attention"
    if any(p in _MLP_PARTS for p in parts):
        return "mlp"
    return "other"


def default_block_of(key: str) -> int | None:
    """Block index from the key name (timm ``blocks.N.``, open_clip ``transformer.resblocks.N.``,
    HF ``encoder.layer.N.``), or None for keys outside the blocks."""
    match = _BLOCK_RE.match(key)
    return int(match.group(1)) if match else None
