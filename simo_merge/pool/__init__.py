"""The expert pool and everything that builds or finds one.

:class:`ExpertPool` (θ0, experts, frozen heads) rebuilds the pool's encoder (``pool.encoder(state)``) and
its frozen heads (a state's model is the task pool's, :mod:`simo_merge.taskpool`); ``folder`` reads and
writes pool folders, ``spec`` resolves a job's ``pool`` section, ``toy`` generates small pools,
``clip_layout`` reads the published CLIP checkpoint layouts.
"""

from simo_merge.pool.expert_pool import ExpertMismatchError, ExpertPool, TaskVector

__all__ = ["ExpertMismatchError", "ExpertPool", "TaskVector"]
