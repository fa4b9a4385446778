"""Evaluations of unchanged checkpoints are reused; any change in what they depend on recomputes."""

from __future__ import annotations

import torch

from simo_merge.training.eval_cache import EvaluationCache, module_hash


def test_reuse_only_for_identical_parts(tmp_path):
    calls = []

    def compute(value):
        return lambda: calls.append(value) or {"semseg": {"miou": value}}

    cache = EvaluationCache(tmp_path)
    parts = {"encoder_state": "abc", "data": {"size": [32, 32]}, "split": "test"}
    assert cache.get(parts, compute(1.0)) == {"semseg": {"miou": 1.0}}
    again = EvaluationCache(tmp_path)  # a later run: from disk
    assert again.get(dict(parts), compute(2.0)) == {"semseg": {"miou": 1.0}}
    assert (again.hits, again.misses, calls) == (1, 0, [1.0])
    assert again.get({**parts, "split": "val"}, compute(3.0)) == {"semseg": {"miou": 3.0}}
    assert again.get({**parts, "data": {"size": [64, 64]}}, compute(4.0))["semseg"]["miou"] == 4.0
    for path in tmp_path.glob("*.json"):
        path.write_text("{not json")  # a damaged file is recomputed, not trusted
    assert again.get(parts, compute(5.0))["semseg"]["miou"] == 5.0
    off = EvaluationCache(None)
    off.get(parts, compute(6.0))
    off.get(parts, compute(7.0))
    assert calls == [1.0, 3.0, 4.0, 5.0, 6.0, 7.0] and off.hits == 0


def test_module_hash_follows_the_weights():
    head = torch.nn.Linear(3, 2)
    before = module_hash(head)
    assert module_hash(head) == before
    with torch.no_grad():
        head.weight[0, 0] += 1
    assert module_hash(head) != before
