"""Attention masks of the cross-modal Transformer (Sec. 3.3, Eq. 4-7), built on demand for any length.

Both masks are *additive*: 0 where attention is allowed and ``-inf`` where it is not, ready for
``torch.nn.functional.scaled_dot_product_attention``. Nothing is cached at a fixed ``max_len``, so
sequences of any length (e.g. 1200 frames / 300 tokens) work.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes m_h (geometric 2^(-8/n)); non-powers of two interleave as in ALiBi."""
    if n_heads < 1:
        raise ValueError(f"n_heads must be >= 1, got {n_heads}")

    def _pow2(n: int) -> list[float]:
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n_heads).is_integer():
        slopes = _pow2(n_heads)
    else:
        closest = 2 ** math.floor(math.log2(n_heads))
        slopes = _pow2(closest) + _pow2(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_biased_mask(
    n_heads: int,
    length: int,
    period: int = 4,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    offset: int = 0,
) -> torch.Tensor:
    """Causal periodic ALiBi bias (Eq. 4-5), shape (n_heads, length, length).

    ``B[h, i, j] = -m_h * floor((i - j) / period)`` for ``j <= i`` and ``-inf`` for ``j > i``:
    the bias depends only on ``i - j``, so ``offset`` (absolute index of row 0, used by sliding-window
    decoding) does not change it; it is accepted for symmetry with :func:`alignment_mask`.
    """
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    if period < 1:
        raise ValueError(f"period (alibi window h) must be >= 1, got {period}")
    del offset
    pos = torch.arange(length, device=device)
    dist = pos[:, None] - pos[None, :]  # i - j
    steps = torch.div(dist.clamp(min=0), period, rounding_mode="floor").to(dtype)  # Eq. 5
    slopes = alibi_slopes(n_heads).to(device=device, dtype=dtype)
    bias = -slopes[:, None, None] * steps[None]
    return bias.masked_fill((dist < 0)[None], float("-inf"))  # Eq. 4: causal


def causal_mask(
    length: int, *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """Plain causal additive mask (1, length, length): the ablation without the ALiBi bias."""
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    upper = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)
    return torch.zeros(length, length, dtype=dtype, device=device).masked_fill(upper, float("-inf"))[None]


def eq7_k(n_audio: int, n_tokens: int) -> int:
    """Eq. 7: k = floor(T'_a / T'_v), HuBERT frames per motion token (8 for 50 Hz audio and l = 4)."""
    if n_tokens < 1:
        raise ValueError(f"need >= 1 motion token, got {n_tokens}")
    k = n_audio // n_tokens
    if k < 1:
        raise ValueError(
            f"audio has {n_audio} frames for {n_tokens} tokens: Eq. 7 needs k = T'_a // T'_v >= 1"
        )
    return k


ALIGNMENT_WINDOWS = ("authors", "eq7")


def alignment_bounds(i: torch.Tensor | int, k: int, window: str = "authors") -> tuple[Any, Any]:
    """Absolute audio frames ``[start, end)`` token ``i`` (0-based) may see, before clamping to the audio.

    ``"authors"``: the official ``enc_dec_mask``, ``[k*i - k, k*i + k)``: the previous and the current
    token's frames. ``"eq7"``: Eq. 7 as written (1-based token j sees frames k(j-1) .. k(j+1)), i.e.
    ``[k*i, k*i + 2k + 1)``: the current and the next token's frames plus one (2k + 1 frames).
    """
    if window == "authors":
        return k * i - k, k * i + k
    if window == "eq7":
        return k * i, k * i + 2 * k + 1  # Eq. 7
    raise ValueError(f"alignment window must be one of {ALIGNMENT_WINDOWS}, got {window!r}")


def alignment_window(
    n_tokens: int,
    n_audio: int,
    k: int = 8,
    *,
    token_offset: int = 0,
    audio_offset: int = 0,
    window: str = "authors",
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean (n_tokens, n_audio) map, True where token i may attend audio frame s (Eq. 6-7).

    Token ``i`` (absolute index ``i + token_offset``) sees the absolute audio frames
    :func:`alignment_bounds` gives (``window``), clamped to ``[0, S)``. Rows whose window falls past the
    end of the audio are given the last frame, so no row is ever fully masked. ``audio_offset`` is the
    absolute index of column 0.
    """
    if n_tokens < 1 or n_audio < 1:
        raise ValueError(f"alignment mask needs >= 1 token and audio frame, got {n_tokens}, {n_audio}")
    if k < 1:
        raise ValueError(f"alignment half-width k must be >= 1, got {k}")
    i = torch.arange(n_tokens, device=device) + token_offset
    lo, hi = alignment_bounds(i, k, window)
    start = (lo.clamp(min=0) - audio_offset).clamp(min=0)  # Eq. 6
    end = hi - audio_offset
    last = n_audio - 1
    start = start.clamp(max=last)  # guarantee at least one visible frame per row
    end = torch.maximum(end.clamp(max=n_audio), start + 1)
    s = torch.arange(n_audio, device=device)
    return (s[None, :] >= start[:, None]) & (s[None, :] < end[:, None])


def alignment_mask(
    n_tokens: int,
    n_audio: int,
    k: int = 8,
    *,
    token_offset: int = 0,
    audio_offset: int = 0,
    window: str = "authors",
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Additive form of :func:`alignment_window`: 0 where allowed, ``-inf`` elsewhere (Eq. 6)."""
    allowed = alignment_window(
        n_tokens,
        n_audio,
        k,
        token_offset=token_offset,
        audio_offset=audio_offset,
        window=window,
        device=device,
    )
    return torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
