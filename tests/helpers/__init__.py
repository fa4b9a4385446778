"""Helpers shared by the tests (not test modules): fixture writers, toy states, subprocess runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: every file a full affinity report writes (the job and the report writer are both checked against it)
AFFINITY_FILES = {
    "affinity.json",
    "affinity.md",
    "cosine.png",
    "cosine_blocks.png",
    "sign_conflict.png",
    "dendrogram.png",
    "interference.png",
    "transfer_curves.png",
}
