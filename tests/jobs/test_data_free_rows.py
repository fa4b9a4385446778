"""Demo rows for the newer data-free merges (their scale chosen on val from an entry's grid, else the
registered grid; TALL masks one model per task), each realigned with the realigners its
``realign.apply_to`` entry names (``full=true``'s preset: deep and taps)."""

from __future__ import annotations

import json

import pytest

from simo_merge.cli import main
from simo_merge.jobs.demo import DemoConfig
from tests.helpers.demo import TINY


def test_default_demo_has_no_data_free_rows():
    from simo_merge.merging import MERGE_METHODS

    cfg = DemoConfig()
    assert cfg.full is False and cfg.merge.methods is None  # the data-free rows are full=true's preset
    assert not any(MERGE_METHODS.facts(s.name).get("grid") for s in cfg.merge.specs(cfg.full))
    labels = [MERGE_METHODS.facts(s.name)["label"] for s in cfg.merge.specs(True)]
    assert labels[-6:] == ["LiNeS", "Consensus", "TALL masks", "Iso-C", "Iso-CTS", "TSV-M"]


@pytest.mark.slow
def test_data_free_rows_and_their_realignments(tmp_path):
    out = tmp_path / "free"
    on = "realigners: [deep, taps]"
    args = [
        "demo",
        *TINY,
        "realign.realigners=[]",  # an apply_to entry's realigners need not be in realign.realigners
        "merge.methods=[task_arithmetic, {name: lines, grid: [0.2, 0.9]}, {name: iso_cts, grid: [1.5]},"
        " tsv_m, tall_masks]",  # the loop is the same for the other two
        f"realign.apply_to=[{{row: LiNeS, {on}}}, {{row: Iso-CTS, {on}}}, {{row: TSV-M, {on}}}]",
        f"output_dir={out}",
    ]
    assert main(args) == 0
    result = json.loads((out / "metrics.json").read_text())
    rows = result["rows"]
    for label in ("LiNeS", "Iso-CTS", "TSV-M"):
        for row in (label, f"{label}+deep", f"{label}+taps"):
            assert row in rows, row
            assert set(rows[row]) == set(result["tasks"])
    chosen = result["merge_params"]
    assert chosen["LiNeS"]["beta"] in (0.2, 0.9)  # β swept on the configured grid
    assert chosen["Iso-CTS"]["lam"] == 1.5
    assert chosen["TSV-M"]["lam"] in (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # the registered grid
    assert chosen["TA"]["lam"] in (0.3, 1.0)  # no grid of its own: merge.lam_grid
    assert set(rows["TALL masks"]) == set(result["tasks"]) and "TALL masks+deep" not in rows
    assert "TA+deep" not in rows and "AdaMerging" not in rows
    assert list(rows)[3:8] == ["TA", "LiNeS", "Iso-CTS", "TSV-M", "TALL masks"]  # in merge.methods order
    assert "| Iso-CTS+taps |" in (out / "report.md").read_text()
