"""Merge methods: pure functions over state dicts, one file each, one registry.

A method has the signature ``fn(base, task_vectors, **hyperparameters) -> merged`` where ``base`` maps
keys to θ0's float tensors, ``task_vectors`` maps task -> (lazy) mapping key -> τt[key] (float32), and
``merged`` maps every key of ``task_vectors`` to the merged float32 tensor. Non-float buffers and the
output dtype are handled once, by :func:`simo_merge.merging.api.merge`, so methods stay small and
readable next to their papers. Task-vector transforms (DARE) wrap ``task_vectors`` before a method runs.
"""

from simo_merge.registry import Registry

#: Every method declares at registration: ``label`` (its row name in tables), ``scale`` (the hyperparameter
#: swept on val, or None), ``needs_data`` (takes ``merge_data=``, unlabelled inputs), ``progress``
#: (takes ``progress=``); optional: ``keywise`` (a key's merged tensor reads only that key's θ0 and task
#: vectors, so :func:`~simo_merge.merging.api.merge` may run it on a device one key group at a time),
#: ``device`` (takes ``device=`` for its own work, e.g. SVDs), ``grid`` (the scale's default sweep),
#: ``per_task`` (one model per task), ``records`` (fills a ``record=`` dict), ``source`` (the reference
#: implementation).
MERGE_METHODS: Registry = Registry(
    "merge method", package=__name__, required_facts=("label", "scale", "needs_data", "progress")
)
TV_TRANSFORMS: Registry = Registry("task-vector transform", package=__name__)

from simo_merge.merging.api import merge  # noqa: E402

__all__ = ["MERGE_METHODS", "TV_TRANSFORMS", "merge"]
