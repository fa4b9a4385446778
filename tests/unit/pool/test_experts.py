"""Expert pool validation and lazy task vectors."""

from __future__ import annotations

import pytest
import torch

from simo_merge.io.checkpoint import save_state
from simo_merge.pool.expert_pool import ExpertMismatchError, ExpertPool


def base_state():
    return {"w": torch.ones(3, 2), "b": torch.zeros(3), "ids": torch.arange(4)}


def test_task_vectors_are_lazy_differences_over_float_keys():
    base = base_state()
    expert = {"w": torch.full((3, 2), 3.0), "b": torch.ones(3), "ids": torch.arange(4)}
    pool = ExpertPool(base, {"seg": expert})
    tv = pool.task_vector("seg")
    assert sorted(tv) == ["b", "w"]
    torch.testing.assert_close(tv["w"], torch.full((3, 2), 2.0))
    with pytest.raises(KeyError):
        tv["ids"]
    with pytest.raises(KeyError, match="no expert for task 'depth'"):
        pool.task_vector("depth")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda s: s.pop("b"), "missing from the expert"),
        (lambda s: s.__setitem__("w", torch.ones(2, 3)), r"shape \(2, 3\)"),
        (lambda s: s.__setitem__("w", torch.ones(3, 2, dtype=torch.float16)), "dtype torch.float16"),
        (lambda s: s.__setitem__("extra", torch.ones(1)), "unexpected key"),
    ],
)
def test_mismatched_expert_names_task_file_and_key(tmp_path, mutate, reason):
    base = base_state()
    good = base_state()
    bad = base_state()
    mutate(bad)
    save_state(tmp_path / "base.safetensors", base)
    save_state(tmp_path / "seg.safetensors", good)
    save_state(tmp_path / "depth.safetensors", bad)
    with pytest.raises(ExpertMismatchError, match=reason) as info:
        ExpertPool.from_files(
            tmp_path / "base.safetensors",
            {"seg": tmp_path / "seg.safetensors", "depth": tmp_path / "depth.safetensors"},
        )
    err = info.value
    assert err.task == "depth"
    assert err.source.endswith("depth.safetensors")
    assert "depth.safetensors" in str(err) and repr(err.key) in str(err)


def test_subset_keeps_only_named_tasks():
    base = base_state()
    pool = ExpertPool(base, {"a": base_state(), "b": base_state(), "c": base_state()})
    assert pool.subset(["c", "a"]).tasks == ["c", "a"]
    with pytest.raises(KeyError, match="not in the pool"):
        pool.subset(["z"])


def test_keys_and_shapes_are_checked_before_any_value_is_read():
    base = base_state()
    base["w"] = torch.full_like(base["w"], float("nan"))  # a value pass over θ0 would fail first
    bad = base_state()
    bad["w"] = torch.zeros(1).expand(4096, 4096)  # 1 stored value, 16M once materialised
    with pytest.raises(ExpertMismatchError, match=r"shape \(4096, 4096\)"):
        ExpertPool(base, {"a": bad})
