"""Size limits on the package's code: no class over 150 lines, no function over 60 lines.

A long function is several steps without names; splitting it into named steps is what makes it readable and
testable. The jobs' ``run`` functions are exempt: each is the one place that reads top to bottom as the
command's recipe.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("simo_merge", "heads", "datasets")
MAX_CLASS_LINES = 150
MAX_FUNCTION_LINES = 60


def _is_job_run(path: Path, name: str) -> bool:
    return path.parent.name == "jobs" and path.parent.parent.name == "simo_merge" and name == "run"


def _oversized(path: Path) -> dict[str, int]:
    """``{qualified name: lines}`` of the classes and functions of ``path`` over their limit."""
    found: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = f"{prefix}{child.name}"
                lines = child.end_lineno - child.lineno + 1
                is_class = isinstance(child, ast.ClassDef)
                limit = MAX_CLASS_LINES if is_class else MAX_FUNCTION_LINES
                if lines > limit and not (not is_class and _is_job_run(path, name)):
                    found[name] = lines
                visit(child, f"{name}.")
            else:
                visit(child, prefix)

    visit(ast.parse(path.read_text(), filename=str(path)), "")
    return found


def _all_oversized() -> dict[str, int]:
    found = {}
    for folder in SOURCE_DIRS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT).as_posix()
            found.update({f"{rel}:{name}": lines for name, lines in _oversized(path).items()})
    return found


def test_no_class_or_function_over_its_limit() -> None:
    new = _all_oversized()
    assert not new, (
        f"over {MAX_CLASS_LINES} lines (class) / {MAX_FUNCTION_LINES} lines (function):\n"
        + "\n".join(f"  {k} ({v} lines)" for k, v in sorted(new.items()))
    )


def test_sizes_are_measured_on_nested_definitions(tmp_path: Path) -> None:
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    path = tmp_path / "m.py"
    path.write_text(f"class A:\n    def long(self):\n    {body.replace(chr(10), chr(10) + '    ')}\n")
    assert _oversized(path) == {"A.long": MAX_FUNCTION_LINES + 1}
