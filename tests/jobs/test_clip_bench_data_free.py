"""``bench clip`` rows for the newer data-free merges, + deep and + taps, and the per-task TALL row."""

from __future__ import annotations

import torch

from simo_merge.config import load_config
from simo_merge.datasets.clip8 import CLIP8_TASKS
from simo_merge.jobs import clip as clip_bench
from simo_merge.jobs.clip import ClipConfig, row_keys
from simo_merge.jobs.clip import run as run_clip
from simo_merge.merging import merge
from tests.helpers.clip8_fixture import STANDIN, record_models
from tests.helpers.clip8_fixture import overrides as _overrides


def test_data_free_rows_with_deep_and_taps(fixture_dirs, tmp_path, monkeypatch):  # noqa: F811
    root, text = fixture_dirs
    extra = ["methods=[{name: iso_cts, params: {lam: 1.5}}, tall_masks]", "realign.realigners=[deep,taps]"]
    cfg = load_config(ClipConfig, STANDIN, _overrides(root, text, tmp_path / "run", *extra))
    assert list(row_keys(cfg)) == [
        "Pretrained", "Individual", "iso_cts", "iso_cts+deep", "iso_cts+taps", "tall_masks",
    ]  # fmt: skip
    states, realigned = record_models(monkeypatch)
    result = run_clip(cfg)
    assert list(result["rows"]) == list(row_keys(cfg))
    assert [r for _, r in realigned] == ["deep", "taps"]
    # models evaluated: θ0, 8 experts, Iso-CTS (λ = 1.5 from its params), then one TALL model per task
    assert len(states) == 1 + 8 + 1 + 8
    pool = clip_bench.ExpertPool(states[0], dict(zip(CLIP8_TASKS, states[1:9], strict=True)))
    key = "transformer.resblocks.1.mlp.c_fc.weight"
    torch.testing.assert_close(states[9][key], merge(pool, "iso_cts", lam=1.5)[key])
    for t, state in zip(CLIP8_TASKS, states[10:], strict=True):
        torch.testing.assert_close(state[key], merge(pool, "tall_masks", task=t)[key])
    assert not torch.equal(states[10][key], states[11][key])  # a different model per task
    for row in result["rows"].values():
        assert list(row["accuracy"]) == list(CLIP8_TASKS)
