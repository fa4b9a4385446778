"""``bench clip tasks=8|14|20``: the task lists (the TALL masks authors' order), the TALL masks checkpoint
layout, the data-free rows on it, and (once the 20 loaders and their fixture writer exist) the 20-task
bench end to end."""

from __future__ import annotations

import pytest
import torch

from simo_merge.config import ConfigError, load_config
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.io.checkpoint import CheckpointError
from simo_merge.jobs import clip as clip_bench
from simo_merge.jobs.clip import ClipConfig, row_keys
from simo_merge.jobs.clip import run as run_clip
from simo_merge.merging import merge
from simo_merge.pool.clip_layout import detect_layout, load_clip_checkpoints
from tests.helpers.clip8_fixture import ARCH, STANDIN, record_models
from tests.helpers.clip_tall_masks import write_tall_masks

# nik-dim/tall_masks src/utils/variables_and_paths.py ALL_DATASETS (commit d10af8b2), transcribed:
# DATASETS_8/14/20 are its first 8/14/20 entries
TALL_ALL_DATASETS = [
    "Cars", "DTD", "EuroSAT", "GTSRB", "MNIST", "RESISC45", "SVHN", "SUN397", "STL10", "OxfordIIITPet",
    "Flowers102", "CIFAR100", "PCAM", "FER2013", "CIFAR10", "Food101", "FashionMNIST", "RenderedSST2",
    "EMNIST", "KMNIST",
]  # fmt: skip
DATA_FREE = ["task_arithmetic", "ties", "consensus", "tall_masks", "lines", "iso_c", "iso_cts", "tsv_m"]


def _cfg(*overrides: str) -> ClipConfig:
    return load_config(ClipConfig, None, ["checkpoints=a", "data=b", *overrides])


def test_task_counts_are_the_tall_masks_lists():
    assert _cfg().task_list() == list(CLIP8_TASKS)  # the default: the eight, task_vectors' order
    for n in (14, 20):
        names = _cfg(f"tasks={n}").task_list()
        assert [t.lower() for t in TALL_ALL_DATASETS[:n]] == names
    assert set(_cfg("tasks=14").task_list()[:8]) == set(CLIP8_TASKS)
    assert _cfg("tasks=[pcam,mnist]").task_list() == ["pcam", "mnist"]  # an explicit list keeps its order


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9", "tasks: 9 is not a task count"),
        ("[imagenet]", r"tasks: unknown \['imagenet'\]"),
        ("[mnist,mnist]", "tasks: duplicates"),
        ("[]", "tasks: empty list"),
        ("eight", "tasks: 8, 14, 20 or a list of task names, got 'eight'"),
        ("true", "tasks: 8, 14, 20 or a list"),
    ],
)
def test_bad_tasks_name_the_key(value, message):
    with pytest.raises(ConfigError, match=message):
        _cfg(f"tasks={value}")


def test_the_old_command_name_is_gone(capsys):
    from simo_merge.cli import main

    with pytest.raises(SystemExit):
        main(["bench", "clip8", "--config", str(STANDIN)])
    assert "invalid choice: 'clip8'" in capsys.readouterr().err


def test_tall_masks_layout_read_as_published(fixture_dirs, tmp_path):
    root, _ = fixture_dirs
    tasks = ["mnist", "svhn"]
    written = write_tall_masks(tmp_path / "tm", root / "data", tasks, skip_head="svhn")
    base = tmp_path / "tm" / ARCH
    assert (base / "MNISTVal" / "nonlinear_finetuned.pt").is_file() and (base / "head_MNISTVal.pt").is_file()
    assert detect_layout(tmp_path / "tm", ARCH, tasks) == "tall_masks"
    ckpt = load_clip_checkpoints(tmp_path / "tm", ARCH, tasks, allow_pickle=True)
    assert ckpt.layout == "tall_masks" and ckpt.activation == "quick_gelu"  # open_clip's "openai" model
    assert ckpt.base.keys() == written["base"].keys()
    for key in ("conv1.weight", "transformer.resblocks.0.mlp.c_fc.weight"):
        torch.testing.assert_close(ckpt.base[key], written["base"][key])
        for t in tasks:
            torch.testing.assert_close(ckpt.experts[t][key], written[t][key])
    assert ckpt.head_weights["svhn"] is None and ckpt.head_weights["mnist"][0].shape[0] == 10
    assert ckpt.sources["mnist"].endswith("MNISTVal/nonlinear_finetuned.pt")
    with pytest.raises(CheckpointError, match="allow_pickle"):  # the experts are state dicts, heads pickles
        load_clip_checkpoints(tmp_path / "tm", ARCH, tasks)
    (base / "MNISTVal" / "nonlinear_finetuned.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"tall_masks finetuned checkpoint of mnist.*MNISTVal"):
        load_clip_checkpoints(tmp_path / "tm", ARCH, tasks, layout="tall_masks", allow_pickle=True)


@pytest.mark.slow
def test_data_free_rows_on_the_tall_masks_layout(fixture_dirs, tmp_path, monkeypatch):
    """Every data-free merge + a realigner on the released checkpoints' layout, one row each."""
    root, text = fixture_dirs
    tasks = ["mnist", "svhn", "gtsrb"]
    write_tall_masks(tmp_path / "tm", root / "data", tasks)
    methods = "methods=[" + ",".join(DATA_FREE) + "]"
    over = [f"checkpoints={tmp_path / 'tm'}", f"data={root / 'data'}", f"output_dir={tmp_path / 'run'}"]
    over += ["tasks=[mnist,svhn,gtsrb]", methods, "realign.realigners=[surgery]"]
    cfg = load_config(ClipConfig, STANDIN, over)
    expected = ["Pretrained", "Individual"]
    for m in DATA_FREE:
        expected += [m] if m == "tall_masks" else [m, f"{m}+surgery"]
    assert list(row_keys(cfg)) == expected
    states, realigned = record_models(monkeypatch)
    result = run_clip(cfg)
    assert result["layout"] == "tall_masks" and result["quick_gelu"] is True
    assert list(result["rows"]) == expected and result["datasets"] == ["MNIST", "SVHN", "GTSRB"]
    assert [r for _, r in realigned] == ["surgery"] * (len(DATA_FREE) - 1)
    for name, row in result["rows"].items():
        assert list(row["accuracy"]) == tasks
        assert all(v in (0.0, 25.0, 50.0, 75.0, 100.0) for v in row["accuracy"].values()), name
    # θ0, 3 experts, then the merged states in DATA_FREE's order (tall_masks: one per task)
    pool = clip_bench.ExpertPool(states[0], dict(zip(tasks, states[1:4], strict=True)))
    key = "transformer.resblocks.1.mlp.c_fc.weight"
    at = 4
    for m in DATA_FREE:
        params = clip_bench.method_params(cfg, m)
        if m == "tall_masks":
            for t in tasks:
                torch.testing.assert_close(states[at][key], merge(pool, m, task=t, **params)[key])
                at += 1
        else:
            torch.testing.assert_close(states[at][key], merge(pool, m, **params)[key])
            at += 1
    assert at == len(states)


@pytest.mark.slow
def test_bench_clip_tasks_20_end_to_end(tmp_path, capsys):
    """``bench clip tasks=20`` on stand-in folders of the 20 data sets (their fixture writer) and tiny
    checkpoints in the TALL masks layout, through the CLI."""
    clip20 = pytest.importorskip(
        "tests.helpers.clip20_fixture", reason="needs the 20 loaders' fixture writer (branch h29a)"
    )
    from simo_merge.cli import main
    from simo_merge.datasets.clip8 import CLIP20_TASKS

    torch.set_num_threads(1)
    clip20.write_clip20_data(tmp_path / "data")
    write_tall_masks(tmp_path / "ckpt", tmp_path / "data", list(CLIP20_TASKS))
    out = tmp_path / "run"
    methods = "methods=[task_arithmetic,ties,tsv_m,iso_cts,tall_masks]"
    args = ["bench", "clip", "--config", str(STANDIN), "--checkpoints", str(tmp_path / "ckpt")]
    args += ["--data", str(tmp_path / "data"), "tasks=20", methods, "realign.realigners=[surgery]"]
    assert main([*args, f"output_dir={out}", "max_unlabelled=2"]) == 0
    import json

    result = json.loads((out / "results.json").read_text())
    assert result["layout"] == "tall_masks" and result["datasets"] == TALL_ALL_DATASETS
    rows = ["Pretrained", "Individual", "task_arithmetic", "task_arithmetic+surgery", "ties", "ties+surgery"]
    rows += ["tsv_m", "tsv_m+surgery", "iso_cts", "iso_cts+surgery", "tall_masks"]
    assert list(result["rows"]) == rows
    for row in result["rows"].values():
        assert len(row["accuracy"]) == 20
    assert "| Method | " + " | ".join(TALL_ALL_DATASETS) + " | Avg. |" in (out / "results.md").read_text()
