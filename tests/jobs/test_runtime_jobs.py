"""``demo``, ``bench clip`` and ``affinity`` on 2 gloo CPU processes against one process.

Each several-process run is a subprocess (Fabric's launcher re-runs the command line) with a timeout, so
a rank left alone in a collective fails the test instead of hanging it. Reuse of cached models and rows
is decided by all ranks together, so reruns on 2 processes skip training without deadlock.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from simo_merge.cli import main
from tests.helpers import subprocess_runs
from tests.helpers.demo import TINY

pytestmark = pytest.mark.slow  # several processes (gloo)

TWO = ["runtime.accelerator=cpu", "runtime.devices=2", "runtime.strategy=ddp", "runtime.num_workers=0"]
TRAINED = ("pretrained θ0", "fine-tuned the", "trained the MTL")
DEMO_ROWS = ["Individual", "MTL", "Pretrained θ0 + expert heads", "WA", "TA", "TIES"]
DEMO_ROWS += [f"TA+{r}" for r in ("surgery", "deep", "shared-deep", "taps", "heads")]


def run_cli(*args: str, timeout: int = 240) -> str:
    """``simo-merge <args>`` in a child process (a deadlock times out after ``timeout``); its stdout."""
    return subprocess_runs.run_cli(*args, timeout=timeout)


def assert_close(one: Any, two: Any, rel: float, where: str = "") -> None:
    """Nested JSON values equal, floats within ``rel`` (relative) or 1e-9 (absolute)."""
    if isinstance(one, dict):
        assert list(one) == list(two), where
        for key in one:
            assert_close(one[key], two[key], rel, f"{where}/{key}")
    elif isinstance(one, list):
        assert len(one) == len(two), where
        for i, (a, b) in enumerate(zip(one, two, strict=True)):
            assert_close(a, b, rel, f"{where}[{i}]")
    elif isinstance(one, float):
        assert two == pytest.approx(one, rel=rel, abs=1e-9, nan_ok=True), where
    else:
        assert one == two, where


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------ demo
@pytest.fixture(scope="module")
def demo_two(tmp_path_factory):
    """The tiny demo trained and evaluated on 2 processes: (folder, log, metrics, files)."""
    out = tmp_path_factory.mktemp("demo2")
    log = run_cli("demo", *TINY, "threads=1", f"output_dir={out}", *TWO)
    return out, log, json.loads((out / "metrics.json").read_text()), tree(out)


def test_demo_on_two_processes_trains_once_and_writes_one_set_of_files(demo_two):
    out, log, metrics, files = demo_two
    assert log.count("runtime: cpu x2") == 1 and log.count("| TA+heads |") == 1  # the table, once
    assert log.count("pretrained θ0") == log.count("trained the MTL baseline") == 1
    for task in ("semseg", "depth", "normal"):
        assert log.count(f"fine-tuned the {task} expert") == 1
    assert log.count("global batch 16 = 8 per device x 2 processes") == 9  # θ0, 4 x (probe, tune)
    assert list(metrics["rows"]) == DEMO_ROWS
    top = {f.split("/")[0] for f in files}
    written = {"cache", "config.yaml", "experts", "metrics.json", "mtl", "report.md", "results.png"}
    assert top == written | {".simo_merge.lock"}  # the run lock, as a one-process run leaves it
    assert not [f for f in files if f.endswith(".tmp")]


def test_demo_rerun_on_two_processes_reuses_every_model_and_repeats_every_row(demo_two):
    """Every cached model is reused (no training line) and every row comes out bit-identical: the MTL model
    evaluated from its file equals the one just trained (BatchNorm statistics shared from rank 0)."""
    out, _, first, _ = demo_two
    log = run_cli("demo", *TINY, "threads=1", f"output_dir={out}", *TWO)
    assert not [line for line in log.splitlines() if line.startswith(TRAINED)]
    again = json.loads((out / "metrics.json").read_text())
    assert again["rows"] == first["rows"] and again["merge_params"] == first["merge_params"]
    assert again["representation_bias"] == first["representation_bias"]


def test_demo_on_one_process_over_the_same_models_gives_the_same_rows(demo_two, capsys):
    """The models trained on 2 processes, reused by a one-process run: merges, realigners and evaluation
    agree (evaluation sums metric states over ranks: within 1e-6, measured ~3e-16)."""
    out, _, two, _ = demo_two
    assert main(["demo", *TINY, "threads=1", f"output_dir={out}", "runtime.accelerator=cpu"]) == 0
    assert not [line for line in capsys.readouterr().out.splitlines() if line.startswith(TRAINED)]
    one = json.loads((out / "metrics.json").read_text())
    assert one["merge_params"] == two["merge_params"]
    for key in ("rows", "summary", "representation_bias", "realign_trained_on"):
        assert_close(one[key], two[key], 1e-6, key)


def test_affinity_on_two_processes_equals_one(demo_two, tmp_path):
    pool = demo_two[0] / "experts"
    args = [
        "affinity",
        f"pool.dir={pool}",
        "data.size=[32,32]",
        "data.num_samples={val: 8, test: 8}",
        "transfer_lambdas=[0.0,0.5,1.0]",
        "select_lambdas=[0.5,1.0]",
        "threads=1",
        "progress=false",
    ]
    run_cli(*args, f"output_dir={tmp_path / 'one'}", "runtime.accelerator=cpu")
    log = run_cli(*args, f"output_dir={tmp_path / 'two'}", *TWO)
    assert log.count("wrote ") == 1 and log.count("agreement ") >= 1
    one, two = (json.loads((tmp_path / r / "affinity.json").read_text()) for r in ("one", "two"))
    assert_close(one, two, 1e-6)
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


# ------------------------------------------------------------------------------------ bench clip
@pytest.fixture(scope="module")
def clip8_dirs(tmp_path_factory):
    from tests.helpers.clip8_fixture import write_clip8_data, write_task_vectors

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("clip8mp")
    write_clip8_data(root / "data")
    return root, write_task_vectors(root / "ckpt", root / "data")


def test_clip_bench_on_two_processes_equals_one_and_resumes_together(clip8_dirs, tmp_path):
    from tests.helpers.clip8_fixture import STANDIN

    root, text = clip8_dirs
    args = ["bench", "clip", "--config", str(STANDIN), "--checkpoints", str(root / "ckpt")]
    args += ["--data", str(root / "data"), f"text_checkpoint={text}", "methods=[task_arithmetic]"]
    assert main([*args, f"output_dir={tmp_path / 'one'}", "runtime.accelerator=cpu"]) == 0
    two = tmp_path / "two"
    log = run_cli(*args, f"output_dir={two}", *TWO)
    assert log.count("### Accuracy (%)") == 1  # rank 0 alone prints the tables
    one, first = (json.loads((tmp_path / r / "results.json").read_text()) for r in ("one", "two"))
    assert first["rows"] == one["rows"] and first["computed"] == one["computed"]  # counts: exact
    assert tree(tmp_path / "one") == tree(two)
    (two / "rows" / "Pretrained.json").unlink()  # rank 0 decides what is reused, every rank follows
    run_cli(*args, f"output_dir={two}", *TWO)
    again = json.loads((two / "results.json").read_text())
    assert again["computed"] == ["Pretrained"] and again["rows"] == one["rows"]
