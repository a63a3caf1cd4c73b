"""Eq. 4-7 masks against hand-computed small cases and long sequences."""

from __future__ import annotations

import math

import pytest
import torch

from emotalker.configs.schema import TransformerConfig
from emotalker.models.masks import (
    alibi_biased_mask,
    alibi_slopes,
    alignment_bounds,
    alignment_mask,
    alignment_window,
    causal_mask,
    eq7_k,
)

INF = float("-inf")


def test_alibi_matches_hand_computed_eq5() -> None:
    m = alibi_biased_mask(n_heads=2, length=5, period=2)
    assert m.shape == (2, 5, 5)
    slopes = alibi_slopes(2)
    assert torch.allclose(slopes, torch.tensor([2**-4, 2**-8]))
    # -floor((i - j) / 2) on and below the diagonal, -inf above
    expected = torch.tensor(
        [
            [0, INF, INF, INF, INF],
            [0, 0, INF, INF, INF],
            [-1, 0, 0, INF, INF],
            [-1, -1, 0, 0, INF],
            [-2, -1, -1, 0, 0],
        ]
    )
    for h in range(2):
        finite = torch.isfinite(expected)
        assert torch.equal(torch.isfinite(m[h]), finite)
        assert torch.allclose(m[h][finite], slopes[h] * expected[finite])


def test_alibi_slopes_non_power_of_two() -> None:
    s = alibi_slopes(6)
    assert s.shape == (6,) and bool((s > 0).all()) and bool((s <= 1).all())
    assert len(set(s.tolist())) == 6


def test_causal_mask_plain() -> None:
    m = causal_mask(3)[0]
    assert torch.equal(torch.isfinite(m), torch.tril(torch.ones(3, 3, dtype=torch.bool)))


def test_alignment_official_eq7() -> None:
    # k = 8, 8 audio frames per token (official 50 Hz layout): token i sees [max(0, 8i-8), min(S, 8i+8))
    allowed = alignment_window(4, 30, k=8)
    for i in range(4):
        lo, hi = max(0, 8 * i - 8), min(30, 8 * i + 8)
        row = torch.zeros(30, dtype=torch.bool)
        row[lo:hi] = True
        assert torch.equal(allowed[i], row), i
    add = alignment_mask(4, 30, k=8)
    assert torch.equal(add == 0, allowed) and bool(torch.isinf(add[~allowed]).all())


def test_eq7_k_is_hubert_frames_per_token() -> None:
    # Eq. 7: k = floor(T'_a / T'_v). 96 video frames -> 192 native HuBERT frames, T'_v = 96 / 4 = 24 -> 8
    assert eq7_k(192, 24) == 8
    assert eq7_k(96, 24) == 4  # audio resampled to 25 fps (the old layout) would give k = 4
    allowed = alignment_window(3, 12, k=eq7_k(12, 3))
    expected = torch.zeros(3, 12, dtype=torch.bool)
    expected[0, 0:4] = True
    expected[1, 0:8] = True
    expected[2, 4:12] = True
    assert torch.equal(allowed, expected)
    with pytest.raises(ValueError, match="Eq. 7"):
        eq7_k(3, 4)


def test_no_fully_masked_rows_even_with_short_audio() -> None:
    allowed = alignment_window(10, 5, k=8)  # audio much shorter than the tokens need
    assert bool(allowed.any(dim=1).all())
    assert bool(allowed[-1, -1])


def test_long_sequences_1200_frames() -> None:
    t_tok = 1200 // 4
    m = alibi_biased_mask(4, t_tok, 4)
    assert m.shape == (4, 300, 300)
    assert bool(torch.isfinite(m.diagonal(dim1=1, dim2=2)).all())
    assert m[0, 299, 0].item() == pytest.approx(-alibi_slopes(4)[0].item() * math.floor(299 / 4))
    a = alignment_window(t_tok, 2400, k=8)
    assert bool(a.any(dim=1).all())
    assert a.sum(1).max().item() == 16


def test_offsets_equal_slice_of_full_mask() -> None:
    full = alignment_window(20, 160, k=8)
    part = alignment_window(5, 60, k=8, token_offset=10, audio_offset=72)
    assert torch.equal(part, full[10:15, 72:132])


def test_dtype_and_bad_input() -> None:
    m = alignment_mask(3, 24, dtype=torch.float16)
    assert m.dtype == torch.float16
    with pytest.raises(ValueError):
        alignment_mask(0, 10)
    with pytest.raises(ValueError):
        alibi_biased_mask(4, 10, period=0)


@pytest.mark.parametrize(
    ("window", "frames"),
    [
        # the authors' enc_dec_mask (the default): the previous and the current token, [8i - 8, 8i + 8)
        ("authors", [(0, 8), (0, 16), (8, 24)]),
        # Eq. 7 read 1-based: token j sees frames k(j-1) .. k(j+1), the current and the next token plus one
        # frame (2k + 1 = 17 frames, 160 ms look-ahead)
        ("eq7", [(0, 17), (8, 25), (16, 33)]),
    ],
)
def test_alignment_window_frames_of_tokens_1_to_3(window: str, frames: list[tuple[int, int]]) -> None:
    allowed = alignment_window(3, 100, k=8, window=window)
    for i, (lo, hi) in enumerate(frames):  # tokens 1-3 are rows 0-2
        assert torch.nonzero(allowed[i]).flatten().tolist() == list(range(lo, hi)), (window, i + 1)
        assert max(0, alignment_bounds(i, 8, window)[0]) == lo and alignment_bounds(i, 8, window)[1] == hi
    assert TransformerConfig().alignment_window == "authors"
