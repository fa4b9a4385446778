"""Diagonal Fisher information of an expert (its encoder + its frozen head), for Fisher merging.

Fisher merging (Matena & Raffel, NeurIPS 2022) weights each expert's parameters by the diagonal of its
Fisher information ``F = E_x E_{y ~ p_θ(y|x)} [(∇_θ log p_θ(y|x))²]``. The data are the task's unlabelled
inputs, so ``y`` is drawn from the model's *own* predictive distribution (the "true" Fisher estimated by
sampling, not the "empirical" Fisher on labels), one draw per input:

- segmentation (logits ``[1, C, H, W]``): a class per pixel sampled from the softmax; the image's
  log-likelihood is the mean over pixels of ``log softmax(logits)[y]``;
- regression and normals (outputs ``[1, C, H, W]``; normals are the head's unit vectors): a Gaussian with
  unit variance centred on the prediction, ``y = pred + ε, ε ~ N(0, I)``, and
  ``log p = −½‖y − pred‖²`` (summed over channels, averaged over pixels; the constant is dropped). Its
  gradient is ``ε·∇pred``, so its square averages to the squared output Jacobian, as the Gaussian
  Fisher should.

Per-pixel terms are *averaged* per image so that the Fisher of a task does not grow with resolution;
one gradient per image is squared (a per-example Fisher: the square of a batch gradient would be a
different, smaller quantity), and the squares are averaged over the ``num_batches × batch_size`` images.
Gradients are taken w.r.t. the encoder's parameters only; entries of ``model_state()`` that are not
parameters, or that the head does not reach (e.g. open_clip's ``proj`` when no head reads the final
features), get a Fisher of 0. Only floating-point keys are returned.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from simo_merge.encoders import Encoder
from simo_merge.features.sites import head_sites, run_encoder
from simo_merge.io.checkpoint import state_hash
from simo_merge.progress import progress_bar
from simo_merge.runtime import autocast
from simo_merge.tasks import TaskSpec

#: prefix of the cached entries, so that keys such as ``blocks.0...`` survive the feature cache's names
_PREFIX = "fisher:"


def sampled_log_likelihood(spec: TaskSpec, output: Tensor, generator: torch.Generator) -> Tensor:
    """Per-image log-likelihood ``[B]`` of targets sampled from the model's own predictive distribution."""
    if spec.kind == "classification" and output.dim() == 2:  # logits [B, C]: one "pixel" per image
        output = output[:, :, None, None]
    if output.dim() != 4:
        raise ValueError(f"task {spec.name!r}: expected head outputs [B, C, H, W], got {tuple(output.shape)}")
    b, c = output.shape[:2]
    if spec.kind in ("segmentation", "classification"):
        log_p = output.float().log_softmax(1)
        with torch.no_grad():  # inverse-CDF sampling: class k where cdf[k-1] <= u < cdf[k]
            cdf = log_p.exp().permute(0, 2, 3, 1).reshape(-1, c).cumsum(1)
            u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=cdf.dtype).to(cdf.device)
            labels = (cdf <= u).sum(1, keepdim=True).clamp_max(c - 1)
        picked = log_p.permute(0, 2, 3, 1).reshape(-1, c).gather(1, labels)
        return picked.view(b, -1).mean(1)
    pred = output.float()
    with torch.no_grad():
        target = pred + torch.randn(pred.shape, generator=generator, dtype=pred.dtype).to(pred.device)
    return (-0.5 * (target - pred).pow(2).sum(1)).reshape(b, -1).mean(1)


def fisher_of_model(
    encoder: Encoder,
    head: nn.Module,
    batches: Iterable[Tensor],
    generator: torch.Generator,
    progress: bool = False,
    desc: str = "fisher",
) -> dict[str, Tensor]:
    """Diagonal Fisher of ``head ∘ encoder`` over image batches ``[B, 3, H, W]`` (one backward per image).

    The encoder's parameters get ``requires_grad`` for the duration and are restored afterwards; the
    head stays frozen (gradients flow through it). Runs where the encoder is (targets are drawn from the
    CPU ``generator``, so every device draws the same), forwards under the runtime's autocast; squared
    gradients are accumulated in fp32 there. Returns CPU float32 tensors keyed as ``model_state()``.
    """
    spec = getattr(head, "task", None)
    if not isinstance(spec, TaskSpec):
        raise TypeError(f"{desc}: the head must carry its TaskSpec as .task, got {type(spec).__name__}")
    sites = head_sites(head)
    params = {k: p for k, p in encoder.model.named_parameters() if p.is_floating_point()}
    was_trainable = {k: p.requires_grad for k, p in params.items()}
    state = encoder.model_state()
    sums = {
        k: torch.zeros(v.shape, dtype=torch.float32, device=v.device)
        for k, v in state.items()
        if v.is_floating_point()
    }
    names, tensors = list(params), list(params.values())
    count = 0
    try:
        for p in tensors:
            p.requires_grad_(True)
        for images in progress_bar(batches, desc, show=progress):
            for i in range(images.shape[0]):
                with autocast():
                    output = head(run_encoder(encoder, images[i : i + 1], sites))
                log_lik = sampled_log_likelihood(spec, output, generator).sum()
                grads = torch.autograd.grad(log_lik, tensors, allow_unused=True)
                for name, grad in zip(names, grads, strict=True):
                    if grad is not None:
                        sums[name].add_(grad.detach().float().pow(2))
                count += 1
    finally:
        for k, p in params.items():
            p.requires_grad_(was_trainable[k])
    if count == 0:
        raise ValueError(f"{desc}: no images to estimate the Fisher from")
    return {k: (v / count).cpu() for k, v in sums.items()}


def diagonal_fisher(merge_data, task: str, num_batches: int = 8) -> dict[str, Tensor]:
    """The diagonal Fisher of ``task``'s expert (its encoder + its head) from its unlabelled inputs.

    ``merge_data`` is a :class:`~simo_merge.merging.data.MergeData`; ``num_batches`` of
    ``merge_data.batch_size`` images are drawn from ``merge_data.batches(task)`` and target sampling is seeded
    by ``merge_data.seed``, so the result is deterministic. Cached through ``merge_data.cache`` under a key of
    inputs, expert, head, batch count, batch size and seed. Keys are ``encoder.model_state()``'s
    floating-point keys.
    """
    if task not in merge_data.heads:
        raise KeyError(
            f"diagonal_fisher: merge_data has no head for task {task!r}; tasks: {merge_data.tasks}"
        )
    if int(num_batches) < 1:
        raise ValueError(f"diagonal_fisher: num_batches must be >= 1, got {num_batches}")
    head = merge_data.heads[task]
    head_id = state_hash(head.state_dict())[:8]
    what = f"fisher-n{int(num_batches)}x{merge_data.batch_size}-s{merge_data.seed}-h{head_id}"

    def compute() -> dict[str, Tensor]:
        encoder = merge_data.expert_encoder(task)
        drawn = itertools.islice(merge_data.batches(task), int(num_batches))
        batches = (merge_data.read(task, idx) for idx in drawn)  # read when drawn
        generator = torch.Generator().manual_seed(merge_data.seed)
        fisher = fisher_of_model(
            encoder, head, batches, generator, progress=merge_data.progress, desc=f"fisher {task}"
        )
        return {_PREFIX + k: v for k, v in fisher.items()}

    cached = merge_data.cache.get(merge_data.cache_key(task, what), compute)
    return {k[len(_PREFIX) :]: v for k, v in cached.items() if k.startswith(_PREFIX)}
