"""EMA vector quantizer (Sec. 3.2): the discrete motion codebook C = {c_k}, k = 1..K.

The codebook is not trained by gradient: it follows exponential moving averages of the encoder
outputs assigned to each code (the codebook term of Eq. 3 is replaced by the EMA update, as in the
official code). Codes whose EMA usage falls below ``dead_threshold`` are re-initialised from random
encoder outputs of the current batch, which keeps codebook usage high.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def code_distances(z: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """||z_n - c_k||^2 (N, K) for flat vectors z (N, D) and codes (K, D), in z's dtype.

    The nearest-code distance of the quantizer (Sec. 3.2), also used to snap Transformer predictions
    to codes; expanded as ||z||^2 - 2 z.c + ||c||^2 so it is one matmul instead of an (N, K, D) tensor.
    """
    cb = codebook.to(z.dtype)
    return z.pow(2).sum(1, keepdim=True) - 2 * z @ cb.t() + cb.pow(2).sum(1)[None, :]


@dataclass
class QuantizerOutput:
    """What one quantization step produces."""

    quantized: torch.Tensor  # (..., D), straight-through: gradients flow to the input
    indices: torch.Tensor  # (...,) long
    commitment_loss: torch.Tensor  # ||z - sg[e]||^2 (Eq. 3, weighted by beta outside)
    codebook_loss: torch.Tensor  # ||sg[z] - e||^2, detached: reported only, EMA does the update
    perplexity: torch.Tensor  # exp(entropy) of the batch code histogram
    usage: torch.Tensor  # fraction of codes used at least once in the batch


class EMAQuantizer(nn.Module):
    """Nearest-neighbour quantizer with EMA codebook updates and dead-code reset."""

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        *,
        decay: float,
        dead_threshold: float,
        eps: float = 1e-5,
        init_from_data: bool = True,
    ) -> None:
        super().__init__()
        if codebook_size < 2 or code_dim < 1:
            raise ValueError(
                f"codebook_size >= 2 and code_dim >= 1 required, got {codebook_size}, {code_dim}"
            )
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.codebook_size = codebook_size
        self.code_dim = code_dim
        self.decay = decay
        self.eps = eps
        self.dead_threshold = dead_threshold
        self.register_buffer("codebook", torch.randn(codebook_size, code_dim) * 0.1)
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # EMA of N_k
        self.register_buffer("embed_sum", self.codebook.clone())  # EMA of sum of z assigned to k
        self.register_buffer("initialised", torch.tensor(not init_from_data))

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distances (N, K) between flat inputs (N, D) and every code."""
        # float32 even under autocast: bf16 distances pick wrong codes
        return code_distances(z.float(), self.codebook)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the closest code for each vector of ``z`` (..., D)."""
        self._check(z)
        flat = z.reshape(-1, self.code_dim)
        return self.distances(flat).argmin(1).reshape(z.shape[:-1])

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """Code vectors c_k for integer ``indices`` (...,) -> (..., D)."""
        if indices.dtype not in (torch.int32, torch.int64):
            raise ValueError(f"indices must be integer, got {indices.dtype}")
        if indices.numel() and (int(indices.min()) < 0 or int(indices.max()) >= self.codebook_size):
            raise ValueError(
                f"indices must lie in [0, {self.codebook_size}), got [{indices.min()}, {indices.max()}]"
            )
        return F.embedding(indices.long(), self.codebook)

    def _check(self, z: torch.Tensor) -> None:
        if z.shape[-1] != self.code_dim:
            raise ValueError(f"quantizer expects last dim {self.code_dim}, got shape {tuple(z.shape)}")

    @torch.no_grad()
    def _init_codebook(self, flat: torch.Tensor) -> None:
        """First training batch: seed codes from random encoder outputs (no initially dead codebook)."""
        picks = _sample_rows(flat, self.codebook_size)
        self.codebook.copy_(picks)
        self.embed_sum.copy_(picks)
        self.cluster_size.fill_(1.0)
        self.initialised.fill_(True)

    @torch.no_grad()
    def _ema_update(self, flat: torch.Tensor, indices: torch.Tensor) -> None:
        onehot = F.one_hot(indices, self.codebook_size).to(flat.dtype)  # (N, K)
        counts = onehot.sum(0)
        sums = onehot.t() @ flat  # (K, D)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(sums, alpha=1 - self.decay)
        n = self.cluster_size.sum()
        smoothed = (self.cluster_size + self.eps) / (n + self.codebook_size * self.eps) * n  # Laplace
        self.codebook.copy_(self.embed_sum / smoothed[:, None])
        dead = self.cluster_size < self.dead_threshold
        n_dead = int(dead.sum())
        if n_dead:
            fresh = _sample_rows(flat, n_dead)
            self.codebook[dead] = fresh
            self.embed_sum[dead] = fresh
            self.cluster_size[dead] = 1.0

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        """Quantize ``z`` (..., D); in training mode also update the codebook by EMA."""
        self._check(z)
        flat = z.reshape(-1, self.code_dim)
        if self.training and not bool(self.initialised):
            self._init_codebook(flat.detach().float())
        indices = self.distances(flat.detach()).argmin(1)
        if self.training:
            self._ema_update(flat.detach().float(), indices)
        q = F.embedding(indices, self.codebook).to(z.dtype)
        commitment = F.mse_loss(flat, q.detach())
        codebook_term = F.mse_loss(q, flat.detach()).detach()
        quantized = flat + (q - flat).detach()  # straight-through estimator
        with torch.no_grad():
            probs = torch.bincount(indices, minlength=self.codebook_size).float() / max(1, indices.numel())
            perplexity = torch.exp(-(probs * torch.log(probs + 1e-10)).sum())
            usage = (probs > 0).float().mean()
        return QuantizerOutput(
            quantized=quantized.reshape(z.shape),
            indices=indices.reshape(z.shape[:-1]),
            commitment_loss=commitment,
            codebook_loss=codebook_term,
            perplexity=perplexity,
            usage=usage,
        )


def _sample_rows(flat: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` random rows of ``flat`` (with replacement if the batch is smaller), plus tiny noise."""
    if flat.shape[0] >= n:
        idx = torch.randperm(flat.shape[0], device=flat.device)[:n]
    else:
        idx = torch.randint(flat.shape[0], (n,), device=flat.device)
    rows = flat[idx]
    return rows + 1e-3 * rows.std().clamp(min=1e-6) * torch.randn_like(rows)
