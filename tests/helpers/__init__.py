"""Helpers shared by the tests (not test modules): fixture writers, toy states, subprocess runs."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
