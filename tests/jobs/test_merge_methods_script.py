"""benchmarks/merge_methods.py ``--shapes vit_b32``: the experts have open_clip ViT-B-32's visual-tower
shapes (the CLIP benchmarks' experts), and the flag reaches the worker that merges."""

from __future__ import annotations

import json
import math

import open_clip
import torch

from tests.helpers.scripts import load_benchmark


def test_vit_b32_shapes_are_open_clip_vit_b32():
    script = load_benchmark("merge_methods.py")
    clip = open_clip.create_model("ViT-B-32", pretrained=None, device="meta")  # shapes only, no memory
    assert {k: tuple(v.shape) for k, v in clip.visual.state_dict().items()} == script.vit_b32_shapes(12)
    assert round(script.num_params(12, "vit_b32") / 1e6, 1) == 87.8


def test_shapes_flag_reaches_the_worker(tmp_path, capsys):
    script = load_benchmark("merge_methods.py")
    out = tmp_path / "r.json"
    args = ["--shapes", "vit_b32", "--tasks", "3", "--blocks", "1", "--methods", "task_arithmetic"]
    assert script.main([*args, "--threads", "1", "--json", str(out)]) == 0
    assert "3 experts, CLIP ViT-B/32 shapes with 1/12 blocks" in capsys.readouterr().out
    payload = json.loads(out.read_text())
    assert payload["shapes"] == "vit_b32" and payload["tasks"] == 3
    (result,) = payload["results"]
    params = sum(math.prod(s) for s in script.vit_b32_shapes(1).values())
    assert result["output_mib"] == params * 4 / 2**20 != script.num_params(1, "vit_b16") * 4 / 2**20
    assert result["peak_extra_mib"] >= 0
    assert torch.Size(script.vit_b32_shapes(1)["conv1.weight"]) == (768, 3, 32, 32)
