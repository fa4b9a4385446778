"""`heads/`, `datasets/` and `configs/` install under `simo_merge`, never as top-level imports."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str, cwd: Path) -> str:
    result = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True)
    return result.stdout.strip()


def test_installed_mapping_and_no_top_level_shadowing(tmp_path):
    out = run_python(
        "import importlib.util, simo_merge.datasets as d, simo_merge.heads as h, simo_merge.configs as c;"
        "print(d.__name__, h.__name__, c.builtin_config('merge_toy').name);"
        "s = importlib.util.find_spec('heads'); print(s.origin if s else None)",
        cwd=tmp_path,
    )
    first, second = out.splitlines()
    assert first == "simo_merge.datasets simo_merge.heads merge_toy.yaml"
    assert second == "None"  # no top-level `heads` was installed


def test_import_datasets_is_hugging_face(tmp_path):
    pytest.importorskip("datasets")
    origin = run_python("import datasets, simo_merge.datasets; print(datasets.__file__)", cwd=tmp_path)
    assert "site-packages" in origin and not origin.startswith(str(REPO / "datasets")), origin
    assert run_python("import datasets; print(hasattr(datasets, 'load_dataset'))", cwd=tmp_path) == "True"


def test_wheel_contains_only_the_simo_merge_namespace(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO),
        ],
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    wheel = next(tmp_path.glob("simo_merge-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names}
    assert all(t == "simo_merge" or t.startswith("simo_merge-") for t in top), top
    for required in (
        "simo_merge/datasets/__init__.py",
        "simo_merge/heads/__init__.py",
        "simo_merge/configs/merge_toy.yaml",
        "simo_merge/encoders/open_clip_configs/ViT-Tiny-8.json",
    ):
        assert required in names
    for init in (REPO / "simo_merge").rglob("__init__.py"):  # every subpackage is shipped
        assert f"simo_merge/{init.relative_to(REPO / 'simo_merge').as_posix()}" in names, init
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "simo-merge = simo_merge.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
