"""``simo-merge demo full=true`` rows for the newer data-free merges, each also realigned (deep, taps)."""

from __future__ import annotations

import json

import pytest

from simo_merge.cli import main
from simo_merge.jobs.demo import DemoConfig
from tests.helpers.demo import TINY


def test_default_demo_has_no_data_free_rows():
    from simo_merge.merging import MERGE_METHODS

    cfg = DemoConfig()
    assert cfg.full is False  # the data-free rows only run with full=true
    assert cfg.data_free.methods == ["lines", "consensus", "tall_masks", "iso_c", "iso_cts", "tsv_m"]
    assert cfg.data_free.realigners == ["deep", "taps"]
    labels = [MERGE_METHODS.facts(m)["label"] for m in cfg.data_free.methods]
    assert labels == ["LiNeS", "Consensus", "TALL masks", "Iso-C", "Iso-CTS", "TSV-M"]


@pytest.mark.slow
def test_full_demo_adds_data_free_rows_and_their_realignments(tmp_path):
    out = tmp_path / "full"
    args = [
        "demo",
        *TINY,
        "full=true",
        "realign.realigners=[]",
        "data_dependent.methods=[]",
        "data_dependent.realign_on=[]",
        "data_free.methods=[lines, iso_cts, tsv_m, tall_masks]",  # the loop is the same for the other two
        "data_free.grids={lines: [0.2, 0.9], iso_cts: [1.5]}",
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
    assert set(rows["TALL masks"]) == set(result["tasks"]) and "TALL masks+deep" not in rows
    assert "TA+deep" not in rows and "AdaMerging" not in rows
    assert "| Iso-CTS+taps |" in (out / "report.md").read_text()
