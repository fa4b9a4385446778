"""benchmarks/realign_speed.py end to end at toy size: every timing reported, identical loss curves.

A correctness check (same batches, same losses with and without the cache, and for the reference loop
of the released code), not a timing test.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from tests.helpers.scripts import load_benchmark

TINY = [
    "--depth", "2", "--width", "32", "--image-size", "32", "--num-inputs", "16",
    "--batch-size", "4", "--noise", "0.3", "--threads", "1",
]  # fmt: skip


def test_cached_and_uncached_runs_agree(tmp_path, capsys):
    out = tmp_path / "speed.json"
    threads = torch.get_num_threads()
    try:  # one thread: a busy 2-core machine makes 2 spinning OpenMP workers very slow
        result = load_benchmark("realign_speed.py").main(
            [*TINY, "--realigners", "surgery", "deep", "taps", "--json", str(out)]
        )
    finally:
        torch.set_num_threads(threads)
    saved = json.loads(out.read_text())
    assert saved["results"] == json.loads(json.dumps(result["results"]))
    rows = {r["realigner"]: r for r in saved["results"]}
    assert list(rows) == ["surgery", "deep", "taps"]
    for name, row in rows.items():
        # default iterations: each of the 16 inputs drawn once per task, 2 batches of 4 per iteration
        assert row["steps"] == 2 and row["updates_per_adapter"] == 4
        assert row["cached_s"] > 0 and row["uncached_s"] > 0
        # the one-off feature computation is part of the cached wall time
        assert 0 < row["cache_build_s"] <= row["cached_s"]
        assert math.isclose(row["speedup_uncached"], row["uncached_s"] / row["cached_s"])
        cached, uncached = row["curve_cached"], row["curve_uncached"]
        assert len(cached) == len(uncached) == 2
        if name == "taps":  # the released code has no taps realigner: no reference loop
            assert row["reference_s"] is None and row["speedup"] is None
        else:
            reference = row["curve_reference"]
            assert math.isclose(row["speedup"], row["reference_s"] / row["cached_s"])
            # the reference loop sees the same batches and initial adapters: the same losses
            assert max(abs(a - b) for a, b in zip(cached, reference, strict=True)) < 1e-4, name
            assert row["loss_rel_diff"] < 1e-3
        # noise 0.3 gives losses well above the tolerance, so agreement is a real check
        assert min(cached) > 1e-2, name
        assert max(abs(a - b) for a, b in zip(cached, uncached, strict=True)) < 1e-4, name
        assert row["max_abs_loss_diff"] < 1e-4
        assert row["final_loss_cached"] == cached[-1]
        # training moved the adapters: the curve is not constant
        assert cached[0] != cached[-1], name
    # surgery: merged last-block tokens + one expert target per task; taps adds head outputs, same count
    assert rows["surgery"]["cache_entries"] == 4
    assert (
        rows["surgery"]["target"] == 3.0 and rows["deep"]["target"] == 1.8 and rows["taps"]["target"] is None
    )
    printed = capsys.readouterr().out
    assert "speed-up" in printed and "reference s" in printed and "≥3x" in printed


def test_bad_arguments_are_named(capsys):
    script = load_benchmark("realign_speed.py")
    with pytest.raises(SystemExit):
        script.parse_args(["--realigners", "surgery", "nonsense"])
    assert "nonsense" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--image-size", "30", "--patch-size", "8"])
    assert "--image-size 30" in capsys.readouterr().err
