"""Per-stage random streams: each stage of a run (θ0, each expert, MTL, each realigner) draws from its
own seed derived from (run seed, stage, task), so reusing a cached stage never shifts the draws of the
next one, and a resumed run trains exactly what an uninterrupted run would."""

from __future__ import annotations

import hashlib


def stage_seed(seed: int, stage: str, task: str = "") -> int:
    """A 63-bit seed determined only by ``(seed, stage, task)``."""
    digest = hashlib.sha256(f"{seed}|{stage}|{task}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
