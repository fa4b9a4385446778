"""What the realignment loss compares against: the experts' features (or head outputs) and, for post-hoc
plans, the frozen merged encoder's features, each on the inputs a batch draws.

Both are computed once per sampled input and kept in the feature cache (``use_cache=True``), or
recomputed per batch as the reference implementations do. Encoders run on the current runtime's device
(under the caller's autocast); cached features stay on the CPU in fp32 (:func:`~simo_merge.features.cache.
stored`) and each batch's rows are moved to the device when read. The cache holds only the inputs of each
task's sampler pool, read from the task's source in batches, under deterministic keys.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.features.cache import FeatureCache, FeatureTable, index_hash
from simo_merge.features.inputs import RealignInputs
from simo_merge.features.sites import Features, Site, head_sites, run_encoder
from simo_merge.heads.base import head_output
from simo_merge.io.checkpoint import state_hash
from simo_merge.realign.model import RealignedModel
from simo_merge.runtime import current


def on_device(feats: Features, device: torch.device) -> Features:
    """Features moved to ``device`` (the same tensors when already there)."""
    return {s: v.to(device) for s, v in feats.items()}


class LossTargets:
    """Expert targets and frozen merged features per task, on the inputs ``pools[task]`` (sorted indices)."""

    def __init__(
        self,
        make_encoder: Callable[[], Encoder],
        expert_states: dict[str, dict[str, Tensor]],
        expert_heads: dict[str, nn.Module],
        model: RealignedModel,
        merged_hash: str,
        inputs: RealignInputs,
        pools: dict[str, Tensor],
        cache: FeatureCache,
        use_cache: bool,
    ) -> None:
        self.make_encoder = make_encoder
        self.expert_states = expert_states
        self.expert_heads = expert_heads
        self.model = model
        self.plan = model.plan
        self.merged_hash = merged_hash
        self.inputs = inputs
        self.pools = pools
        self.cache = cache
        self.use_cache = use_cache
        self._experts: dict[str, Encoder] = {}
        self._hashes: dict = {}
        self.runtime = current()
        self.device = self.runtime.device

    def expert_encoder(self, task: str) -> Encoder:
        if task not in self._experts:
            enc = self.make_encoder()
            enc.load_model_state(self.expert_states[task])
            self._experts[task] = enc.eval().requires_grad_(False).to(self.device)
        return self._experts[task]

    def target_sites(self, task: str) -> tuple[list[Site], bool]:
        """Expert feature sites the loss compares, and whether it also needs the expert's head outputs."""
        if self.plan.trains_heads:
            return [], True
        sites = [] if self.plan.match == "outputs" else list(self.plan.loss_sites[task])
        return sites, self.plan.match in ("outputs", "both")

    def reduces_tokens(self) -> bool:
        """The loss reads token means of block features (deep's default): targets are stored reduced."""
        return self.plan.token_reduce == "mean"

    def _expert_targets_fn(self, task: str) -> Callable[[Tensor], Features]:
        encoder = self.expert_encoder(task)
        head = self.expert_heads[task]
        sites, outputs = self.target_sites(task)
        reduce = self.reduces_tokens()

        def targets(x: Tensor) -> Features:
            feats = run_encoder(encoder, x, sites + (head_sites(head) if outputs else []))
            # keep only what the loss reads: [B, D] token means instead of [B, N, D] maps when it reads means
            found = {s: feats[s].mean(1) if reduce and feats[s].dim() == 3 else feats[s] for s in sites}
            if outputs:
                found["output"] = head_output(head, feats, tuple(x.shape[-2:]))
            return found

        return targets

    def cache_key(self, task: str, state: dict[str, Tensor] | None, what: str) -> str:
        """(inputs name, input fingerprint, checkpoint hash, what[, sampled rows]); hashes computed once."""
        source, pool = self.inputs.sources[task], self.pools[task]
        if id(source) not in self._hashes:
            self._hashes[id(source)] = source.fingerprint(pool)
        if state is None:
            checkpoint = self.merged_hash
        else:
            if task not in self._hashes:
                self._hashes[task] = state_hash(state)
            checkpoint = self._hashes[task]
        rows = "" if len(pool) == len(source) else f"-rows{index_hash(pool)}"
        tag = self.runtime.precision_tag()  # "" under fp32: the keys of earlier runs stay valid
        return (
            f"{self.inputs.name.replace('/', '_')}-{self._hashes[id(source)]}-{checkpoint}-{what}{rows}{tag}"
        )

    def _table(self, task: str, key: str, fn: Callable[[Tensor], Features]) -> FeatureTable:
        source = self.inputs.sources[task]
        return self.cache.table(key, self.pools[task], lambda idx: fn(source.images(idx).to(self.device)))

    def expert_targets(self, task: str, idx: Tensor, images: Callable[[], Tensor]) -> Features:
        """The expert's targets on inputs ``idx``; ``images()`` reads them when they are not cached."""
        if not self.use_cache:
            with torch.no_grad():
                return self._expert_targets_fn(task)(images())
        sites, outputs = self.target_sites(task)
        reduced = "-tokenmean" if self.reduces_tokens() else ""
        what = f"{'_'.join(map(str, sites))}-{int(outputs)}-{task}{reduced}"
        key = self.cache_key(task, self.expert_states[task], what)
        return on_device(self._table(task, key, self._expert_targets_fn(task)).rows(idx), self.device)

    def merged_sites(self) -> list[Site]:
        return sorted({s for t in self.model.tasks for s in self.model.sites_needed(t)}, key=str)

    def merged_features(self, task: str, idx: Tensor, images: Callable[[], Tensor]) -> Features | None:
        """Frozen merged features (post-hoc plans only), cached unless ``use_cache=False``."""
        if self.plan.feed_forward and self.plan.owner(task) is not None:
            return None
        sites = self.merged_sites()
        if not self.use_cache:
            with torch.no_grad():
                return run_encoder(self.model.encoder, images(), sites)
        key = self.cache_key(task, None, f"{'_'.join(map(str, sites))}-merged")
        table = self._table(task, key, lambda x: run_encoder(self.model.encoder, x, sites))
        return on_device(table.rows(idx), self.device)
