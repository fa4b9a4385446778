"""The sample select behind TIES' trim threshold equals ``torch.cat(...).kthvalue`` bit for bit."""

from __future__ import annotations

import pytest
import torch

from simo_merge.merging._select import kth_smallest_magnitude
from simo_merge.merging.ties import magnitude_threshold


def _reference(tensors: list[torch.Tensor], rank: int) -> float:
    return torch.cat([t.abs().reshape(-1) for t in tensors]).kthvalue(rank).values.item()


def test_hand_sized_with_ties_signs_and_zeros() -> None:
    tensors = [
        torch.tensor([0.5, -0.5, 0.25, -0.0, 0.0]),
        torch.tensor([[1.0, -0.25], [0.5, 2.0]]),
        torch.tensor([3.0]),
    ]
    # sorted magnitudes: 0 0 .25 .25 .5 .5 .5 1 2 3
    expected = [0.0, 0.0, 0.25, 0.25, 0.5, 0.5, 0.5, 1.0, 2.0, 3.0]
    for rank in range(1, 11):
        assert kth_smallest_magnitude(tensors, rank) == _reference(tensors, rank) == expected[rank - 1]
    with pytest.raises(ValueError, match=r"rank must be in \[1, 10\]"):
        kth_smallest_magnitude(tensors, 11)


def test_ten_million_entries_with_deliberate_ties() -> None:
    gen = torch.Generator().manual_seed(0)
    big = torch.randn(10_000_000, generator=gen) * 0.01
    big[::7] = 0.003  # a tie of ~1.4M entries near the 20 % threshold
    big[::11] = -0.003
    big[::13] = 0.0
    tensors = [big[:3_000_000].view(1000, 3000), big[3_000_000:]]
    n = big.numel()
    for k in (20.0, 75.0, 100.0):
        rank = n - int(n * (k / 100))
        rank = max(rank, 1)
        assert kth_smallest_magnitude(tensors, rank) == _reference(tensors, rank)
    # a rank inside the tied block returns the tied value
    sorted_mag = big.abs().sort().values
    inside = int((sorted_mag < 0.003).sum()) + 5
    assert kth_smallest_magnitude(tensors, inside) == _reference(tensors, inside) == pytest.approx(0.003)


def test_a_sample_that_misses_still_gives_the_exact_value() -> None:
    """A strided sample that sees only one kind of entry (every 1000th is large) brackets the wrong
    range; the count shows it and the exact selection answers."""
    x = torch.full((100_000,), 1e-3)
    x[::1000] = 5.0
    x[1::1000] = torch.linspace(0.1, 0.2, 100)
    for rank in (1, 50_000, 99_850, 99_950, 100_000):
        assert kth_smallest_magnitude([x], rank, sample_size=100) == _reference([x], rank)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_equal_kthvalue(dtype: torch.dtype) -> None:
    gen = torch.Generator().manual_seed(1)
    tensors = [(torch.randn(5000, generator=gen) * 0.1).to(dtype), torch.zeros(300, dtype=dtype)]
    for rank in (1, 299, 300, 301, 2650, 5300):
        for sample_size in (64, 1 << 20):
            assert kth_smallest_magnitude(tensors, rank, sample_size=sample_size) == _reference(tensors, rank)


def test_ties_threshold_keeps_the_reference_mask() -> None:
    """The trim mask TIES builds from the threshold is the reference's ``kthvalue ... >=`` mask."""
    gen = torch.Generator().manual_seed(2)
    tv = {"a": torch.randn(40, 30, generator=gen), "b": torch.randn(77, generator=gen).round(decimals=1)}
    flat = torch.cat([v.reshape(-1) for v in tv.values()])
    n = flat.numel()
    for k in (5.0, 20.0, 50.0):
        kth = flat.abs().kthvalue(n - int(n * (k / 100))).values  # the TIES authors' topk_values_mask
        expected = flat.abs() >= kth
        threshold = magnitude_threshold(tv, k)
        assert torch.equal(flat.abs() >= threshold, expected)


@pytest.mark.parametrize(("merge_func", "expected"), [("mean", -1.0), ("sum", -1.0), ("max", 0.0)])
def test_ties_with_a_majority_of_exactly_zero_reads_the_negative_values(merge_func, expected) -> None:
    """Every entry's trimmed values sum to 0 and so do the elected signs: the reference's
    ``where(sign > 0, x > 0, x < 0)`` then keeps the negative values, and ``"max"`` multiplies by 0."""
    from simo_merge.merging.ties import ties

    base = {"w": torch.zeros(2)}
    taus = {"a": {"w": torch.tensor([1.0, -1.0])}, "b": {"w": torch.tensor([-1.0, 1.0])}}
    merged = ties(base, taus, k=100, lam=1.0, merge_func=merge_func)
    assert torch.equal(merged["w"], torch.full((2,), expected))
