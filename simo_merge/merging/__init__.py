"""Merge methods: pure functions over state dicts, one file each, one registry.

A method has the signature ``fn(base, task_vectors, **hyperparameters) -> merged`` where ``base`` maps
keys to θ0's float tensors, ``task_vectors`` maps task -> (lazy) mapping key -> τt[key] (float32), and
``merged`` maps every key of ``task_vectors`` to the merged float32 tensor. Non-float buffers and the
output dtype are handled once, by :func:`simo_merge.merging.api.merge`, so methods stay small and
readable next to their papers. Task-vector transforms (DARE) wrap ``task_vectors`` before a method runs.
"""

import inspect
from collections.abc import Callable

from simo_merge.registry import Registry

#: The runtime arguments a method may take, read off its parameters when it registers (never declared):
#: fact -> parameter. ``needs_data``: ``merge_data=`` (unlabelled inputs); ``progress``: ``progress=``;
#: ``records``: fills a ``record=`` dict; ``device``: ``device=`` for its own work (e.g. SVDs).
SIGNATURE_FACTS = {
    "needs_data": "merge_data",
    "progress": "progress",
    "records": "record",
    "device": "device",
}


def signature_facts(fn: Callable) -> dict[str, bool]:
    """Which of :data:`SIGNATURE_FACTS`' runtime arguments ``fn`` takes."""
    params = inspect.signature(fn).parameters
    return {fact: param in params for fact, param in SIGNATURE_FACTS.items()}


#: Every method declares at registration what its signature cannot say: ``label`` (its row name in
#: tables) and ``scale`` (the hyperparameter swept on val, or None); optional: ``keywise`` (a key's merged
#: tensor reads only that key's θ0 and task vectors, so :func:`~simo_merge.merging.api.merge` may run it on
#: a device one key group at a time), ``grid`` (the scale's default sweep), ``per_task`` (one model per
#: task), ``source`` (the reference implementation). :data:`SIGNATURE_FACTS` are added from its signature.
MERGE_METHODS: Registry = Registry(
    "merge method", package=__name__, required_facts=("label", "scale"), derive_facts=signature_facts
)
TV_TRANSFORMS: Registry = Registry("task-vector transform", package=__name__)

from simo_merge.merging.api import merge  # noqa: E402

__all__ = ["MERGE_METHODS", "TV_TRANSFORMS", "merge"]
