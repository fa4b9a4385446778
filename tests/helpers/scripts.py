"""Benchmark scripts (not a package) imported by path, for the tests that check them."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.helpers import REPO


def load_benchmark(filename: str) -> ModuleType:
    """``benchmarks/<filename>`` as a module, registered in ``sys.modules`` before it runs (its
    dataclasses need it) and imported once."""
    name = f"benchmark_{filename.removesuffix('.py')}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REPO / "benchmarks" / filename)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]
