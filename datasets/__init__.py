"""Dataset loaders, installed as ``simo_merge.datasets`` (never as a top-level ``datasets``).

Every loader is a ``torch.utils.data.Dataset`` registered in :data:`DATASETS`; samples follow the
contract in :mod:`simo_merge.tasks`. In particular ``sample["image"]`` is a float ``[3, H, W]`` in [0, 1],
not mean/std-normalised: the :class:`~simo_merge.encoders.Encoder` normalises with its own statistics
(and warns on a batch clearly outside [0, 1]).
"""

from simo_merge.registry import Registry

DATASETS: Registry = Registry("dataset", package=__name__)


def build_dataset(name: str, **kwargs):
    """Instantiate the registered dataset ``name`` with ``kwargs`` (root, split, tasks, ...)."""
    return DATASETS.get(name)(**kwargs)


__all__ = ["DATASETS", "build_dataset"]
