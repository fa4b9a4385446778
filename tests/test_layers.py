"""The layer rule of ARCHITECTURE.md, checked on the source: a module imports from its own floor or below.

Floors, top to bottom (a higher floor may import a lower one, never the reverse; no exception list):

    9  cli
    8  jobs        (no job imports another job; jobs/_*.py are shared private helpers)
    7  taskpool    (data + heads -> evaluate(state); Individual rows, tables, probes' data)
    6  realign, affinity
    5  training, merging
    4  pool
    3  features
    2  model, heads, encoders, and the configs they are built from (config, data)
    1  datasets, metrics, report, plotting
    0  io, runtime, peers, registry, tasks, seeding, finite, protocols, progress

Function-level (lazy) imports count as much as module-level ones: they hide a dependency, they do not
remove it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Source folder of each installed package (pyproject's package-dir maps heads/, datasets/, configs/ into
# simo_merge).
SOURCE_DIRS = {
    "simo_merge": ROOT / "simo_merge",
    "simo_merge.heads": ROOT / "heads",
    "simo_merge.datasets": ROOT / "datasets",
    "simo_merge.configs": ROOT / "configs",
}

FLOORS: dict[str, int] = {
    "cli": 9,
    "jobs": 8,
    "taskpool": 7,
    "realign": 6,
    "affinity": 6,
    "training": 5,
    "merging": 5,
    "pool": 4,
    "features": 3,
    "model": 2,
    "heads": 2,
    "encoders": 2,
    "config": 2,  # builds and checks encoder configs
    "data": 2,  # dataset sections -> datasets
    "configs": 2,
    "datasets": 1,
    "metrics": 1,
    "report": 1,  # results tables over metrics
    "plotting": 1,
    "io": 0,  # checkpoint, atomic writes, unpickler, lock, outputs, provenance
    "runtime": 0,  # devices, processes, precision (Lightning Fabric)
    "peers": 0,  # what the processes of one run owe each other (launcher count, shared folder, lost peers)
    "registry": 0,
    "tasks": 0,
    "seeding": 0,
    "finite": 0,
    "protocols": 0,  # named evaluation protocols (what data.protocol selects)
    "progress": 0,  # the one progress display (bar on a terminal, plain lines in logs)
    "__init__": 0,  # the package itself: only __version__
}


def _modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    found = {}
    for package, folder in SOURCE_DIRS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join([package, *parts])] = path
    return found


def _imports(module: str, path: Path) -> set[str]:
    """Every simo_merge module `module` imports, at any depth of its code (resolving relative imports)."""
    is_package = path.name == "__init__.py"
    package = module if is_package else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            # `from simo_merge.pool import spec` imports the submodule when there is one.
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return {name for name in names if name == "simo_merge" or name.startswith("simo_merge.")}


def _layer(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    if top not in FLOORS:
        raise KeyError(f"{module}: no floor declared for simo_merge.{top} in tests/test_layers.py")
    return FLOORS[top]


def _violations() -> set[tuple[str, str]]:
    modules = _modules()
    found = set()
    for module, path in modules.items():
        own = _layer(module)
        for target in _imports(module, path):
            if target not in modules:
                continue  # a name imported from a module, not a module
            if _layer(target) > own:
                found.add((module, target))
            in_jobs = module.startswith("simo_merge.jobs.") and target.startswith("simo_merge.jobs.")
            private = target.rpartition(".")[2].startswith("_")
            if in_jobs and target != module and not private and target != "simo_merge.jobs":
                found.add((module, target))
    return found


def test_every_module_has_a_layer() -> None:
    for module in _modules():
        _layer(module)


def test_modules_import_only_their_layer_or_below() -> None:
    new = sorted(_violations())
    assert not new, "imports against the layer rule:\n" + "\n".join(f"  {a} -> {b}" for a, b in new)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from simo_merge.pool import spec\n", {"simo_merge.pool", "simo_merge.pool.spec"}),
        ("def f():\n    from ..jobs import demo\n", {"simo_merge.jobs", "simo_merge.jobs.demo"}),
        ("import simo_merge.report as r\n", {"simo_merge.report"}),
    ],
)
def test_imports_are_found_lazy_and_relative(tmp_path: Path, source: str, expected: set[str]) -> None:
    path = tmp_path / "x.py"
    path.write_text(source)
    assert _imports("simo_merge.affinity.x", path) == expected


def test_an_upward_import_is_a_violation() -> None:
    assert _layer("simo_merge.io.atomic") < _layer("simo_merge.datasets.nyuv2") < _layer("simo_merge.model")
    assert (
        _layer("simo_merge.features.cache")
        < _layer("simo_merge.pool.spec")
        < _layer("simo_merge.merging.api")
    )
    assert _layer("simo_merge.realign.train") < _layer("simo_merge.taskpool") < _layer("simo_merge.jobs.demo")
