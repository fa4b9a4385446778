"""Per-layer input Gram matrices of an expert encoder, for RegMean.

RegMean (Jin et al., ICLR 2023) merges every linear layer ``y = x Wᵀ + b`` by least squares on the
experts' inputs to that layer, which needs only ``G = Σ x xᵀ`` per layer and expert. Here every
``nn.Linear`` inside ``encoder.model`` is recorded with a forward pre-hook while the *expert* encoder
runs on its task's unlabelled inputs. Rows ``x`` are all tokens of all images (the input is flattened to
``[-1, D_in]``, whatever the token layout). Per batch, ``xᵀx`` is computed in float64 and added to a
``D_in × D_in`` float64 accumulator, with the row count: memory is bounded by the Grams, activations are
never kept. The result is ``G / n`` (the mean outer product): dividing by the count keeps magnitudes
independent of the number of images and tokens, and does not change RegMean's solution when all tasks
see the same number of rows (same ``num_batches``, batch size and image size).

``nn.MultiheadAttention`` (open_clip) keeps its input projection as a raw ``in_proj_weight`` and never
calls its ``out_proj`` (an ``nn.Linear`` subclass) as a module, so a forward pre-hook on the attention
module records both: the Gram of its (self-attention) input under ``f"{name}.in_proj_weight"``, and the
Gram of the attention context (the heads' outputs, concatenated, i.e. what ``out_proj`` multiplies)
under ``f"{name}.out_proj.weight"``; the context is recomputed in the hook with the module's own weights.
Layers that never run during the pass get no Gram (RegMean then treats them like other parameters).
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.progress import progress_bar
from simo_merge.runtime import autocast

_GRAM = "gram:"
_COUNT = "count:"
_MHA_SIGNATURE = inspect.signature(nn.MultiheadAttention.forward)


def _additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A float mask to add to attention scores: bool masks (True = not allowed) become −inf there."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def attention_context(module: nn.MultiheadAttention, *args: Any, **kwargs: Any) -> Tensor:
    """What ``module.out_proj`` multiplies in ``module(*args, **kwargs)``: the concatenated heads' outputs,
    batch first ``[B, L, E]`` (``[1, L, E]`` for unbatched inputs). Eval-mode (no dropout) semantics."""
    bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    query, key, value = a["query"], a["key"], a["value"]
    if not module._qkv_same_embed_dim or module.in_proj_weight is None:
        raise NotImplementedError("attention_context: separate q/k/v projection weights are not supported")
    if module.bias_k is not None or module.add_zero_attn:
        raise NotImplementedError("attention_context: bias_k/bias_v/add_zero_attn are not supported")
    unbatched = query.dim() == 2
    if unbatched:
        query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
    elif not module.batch_first:
        query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
    b, n_q, e = query.shape
    n_k = key.shape[1]
    h = module.num_heads
    w_q, w_k, w_v = module.in_proj_weight.chunk(3)
    b_q, b_k, b_v = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None,) * 3
    q = F.linear(query, w_q, b_q).view(b, n_q, h, e // h).transpose(1, 2)
    k = F.linear(key, w_k, b_k).view(b, n_k, h, e // h).transpose(1, 2)
    v = F.linear(value, w_v, b_v).view(b, n_k, h, e // h).transpose(1, 2)
    mask = _additive_mask(a["attn_mask"], q.dtype)
    if mask is not None:
        mask = mask.view(1, 1, n_q, n_k) if mask.dim() == 2 else mask.view(b, h, n_q, n_k)
    padding = _additive_mask(a["key_padding_mask"], q.dtype)
    if padding is not None:
        padding = padding.view(b, 1, 1, n_k)
        mask = padding if mask is None else mask + padding
    causal = bool(a["is_causal"]) and mask is None
    context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return context.transpose(1, 2).reshape(b, n_q, e)


class GramRecorder:
    """Context manager: while active, accumulates the input Grams of every linear map in ``model``.

    ``sums[key]`` (float64 ``[D_in, D_in]``) and ``counts[key]`` (rows seen) use ``model_state()`` keys:
    ``f"{name}.weight"`` for ``nn.Linear`` modules and ``f"{name}.in_proj_weight"`` /
    ``f"{name}.out_proj.weight"`` for ``nn.MultiheadAttention``. All hooks are removed on exit.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.sums: dict[str, Tensor] = {}
        self.counts: dict[str, int] = {}
        self._handles: list = []
        state_keys = set(model.state_dict())
        self.linears: dict[str, nn.Linear] = {}
        self.attentions: dict[str, nn.MultiheadAttention] = {}
        inside_attention = set()
        for name, module in model.named_modules():
            if isinstance(module, nn.MultiheadAttention):
                self.attentions[name] = module
                inside_attention.add(id(module.out_proj))
        for name, module in model.named_modules():
            if isinstance(module, nn.Linear) and id(module) not in inside_attention:
                self.linears[f"{name}.weight"] = module
        for name in self.attentions:
            self.linears[f"{name}.out_proj.weight"] = self.attentions[name].out_proj
        for key in [*self.linears, *(f"{n}.in_proj_weight" for n in self.attentions)]:
            if key not in state_keys:
                raise KeyError(f"GramRecorder: weight key {key!r} is not in the model's state dict")

    @property
    def keys(self) -> list[str]:
        """Every weight key a Gram is recorded for (whether or not it has run yet)."""
        return sorted([*self.linears, *(f"{n}.in_proj_weight" for n in self.attentions)])

    def _add(self, key: str, inputs: Tensor) -> None:
        x = inputs.detach()
        x = x.reshape(-1, x.shape[-1])
        x = (x.cpu() if x.device.type == "mps" else x).to(torch.float64)  # MPS has no float64
        gram = x.T @ x
        if key in self.sums:
            self.sums[key].add_(gram)
            self.counts[key] += x.shape[0]
        else:
            self.sums[key] = gram
            self.counts[key] = x.shape[0]

    def _linear_hook(self, key: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._add(key, args[0] if args else kwargs["input"])

        return hook

    def _attention_hook(self, name: str):
        def hook(module: nn.MultiheadAttention, args: tuple, kwargs: dict) -> None:
            bound = _MHA_SIGNATURE.bind(module, *args, **kwargs)
            query, key, value = (bound.arguments[k] for k in ("query", "key", "value"))
            if not (query is key is value or (torch.equal(query, key) and torch.equal(query, value))):
                raise NotImplementedError(
                    f"GramRecorder: {name!r} is cross-attention; its in_proj rows see different inputs"
                )
            self._add(f"{name}.in_proj_weight", query)
            with torch.no_grad():
                self._add(f"{name}.out_proj.weight", attention_context(module, *args, **kwargs))

        return hook

    def __enter__(self) -> GramRecorder:
        try:
            inside = {f"{n}.out_proj.weight" for n in self.attentions}  # recorded by the attention hook
            for key, module in self.linears.items():
                if key not in inside:
                    handle = module.register_forward_pre_hook(self._linear_hook(key), with_kwargs=True)
                    self._handles.append(handle)
            for name, module in self.attentions.items():
                handle = module.register_forward_pre_hook(self._attention_hook(name), with_kwargs=True)
                self._handles.append(handle)
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def grams(self) -> dict[str, Tensor]:
        """``G / n`` per recorded key (float64); layers that never ran are left out."""
        return {k: self.sums[k] / self.counts[k] for k in sorted(self.sums)}


@torch.no_grad()
def collect_grams(
    encoder: Encoder, batches: Iterable[Tensor], progress: bool = False, desc: str = "grams"
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Run ``encoder`` over image batches (where they are, under the runtime's autocast); return the summed
    float64 Grams (on the CPU; accumulated in float64 on the encoder's device) and row counts per key."""
    with GramRecorder(encoder.model) as recorder:
        for images in progress_bar(batches, desc, show=progress):
            with autocast():
                encoder(images)
    if not recorder.sums:
        raise ValueError(f"{desc}: no linear layer ran (no batches, or no nn.Linear in the model)")
    return {k: v.cpu() for k, v in recorder.sums.items()}, recorder.counts


def gram_matrices(merge_data, task: str, num_batches: int = 8) -> dict[str, Tensor]:
    """RegMean's per-layer Gram matrices ``G = Σ x xᵀ / n`` (float64) of ``task``'s expert encoder.

    ``merge_data`` is a :class:`~simo_merge.merging.data.MergeData`; its expert encoder runs on
    ``num_batches`` of ``merge_data.batches(task)``. Keys are weight keys of ``model_state()`` (``[D_out,
    D_in]`` weights get a ``[D_in, D_in]`` Gram). Cached through ``merge_data.cache`` (sums and counts, so
    both stay available).
    """
    if task not in merge_data.expert_states:
        raise KeyError(
            f"gram_matrices: merge_data has no expert for task {task!r}; tasks: {merge_data.tasks}"
        )
    if int(num_batches) < 1:
        raise ValueError(f"gram_matrices: num_batches must be >= 1, got {num_batches}")
    what = f"gram-n{int(num_batches)}x{merge_data.batch_size}-s{merge_data.seed}"

    def compute() -> dict[str, Tensor]:
        encoder = merge_data.expert_encoder(task)
        drawn = itertools.islice(merge_data.batches(task), int(num_batches))
        batches = (merge_data.read(task, idx) for idx in drawn)  # read when drawn
        sums, counts = collect_grams(encoder, batches, progress=merge_data.progress, desc=f"grams {task}")
        out = {_GRAM + k: v for k, v in sums.items()}
        out.update({_COUNT + k: torch.tensor(n, dtype=torch.int64) for k, n in counts.items()})
        return out

    cached = merge_data.cache.get(merge_data.cache_key(task, what), compute)
    return {
        k[len(_GRAM) :]: v / cached[_COUNT + k[len(_GRAM) :]].to(v.dtype)
        for k, v in cached.items()
        if k.startswith(_GRAM)
    }
