"""Stage 1 (Sec. 3.2): motion VQ-VAE over the 57 face coefficients with an emotion classifier head.

Encoder E: 1D convolutions with dilated residual blocks and ``down_t`` stride-``stride_t`` downsamplings,
so one token covers ``l = stride_t ** down_t`` frames (4 by default). Decoder D mirrors it with
nearest-neighbour upsampling. The quantizer is :class:`EMAQuantizer`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emotalker.configs.constants import EMOTIONS
from emotalker.models.quantizer import EMAQuantizer


class ResBlock1d(nn.Module):
    """ReLU -> dilated conv(k=3) -> ReLU -> conv(k=1), plus the identity."""

    def __init__(self, width: int, dilation: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.conv2 = nn.Conv1d(width, width, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _res_stack(width: int, depth: int, growth: int, reverse: bool) -> nn.Sequential:
    dilations = [growth**i for i in range(depth)]
    if reverse:
        dilations = dilations[::-1]
    return nn.Sequential(*[ResBlock1d(width, d) for d in dilations])


class MotionEncoder(nn.Module):
    """(B, in_dim, T) -> (B, code_dim, T / l)."""

    def __init__(
        self,
        *,
        in_dim: int,
        code_dim: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        dilation_growth: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(in_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):
            layers += [
                nn.Conv1d(width, width, 2 * stride_t, stride=stride_t, padding=stride_t // 2),
                _res_stack(width, depth, dilation_growth, reverse=False),
            ]
        layers.append(nn.Conv1d(width, code_dim, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MotionDecoder(nn.Module):
    """(B, code_dim, T / l) -> (B, in_dim, T)."""

    def __init__(
        self,
        *,
        in_dim: int,
        code_dim: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        dilation_growth: int,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv1d(code_dim, width, 3, padding=1), nn.ReLU()]
        for _ in range(down_t):
            layers += [
                _res_stack(width, depth, dilation_growth, reverse=True),
                nn.Upsample(scale_factor=stride_t, mode="nearest"),
                nn.Conv1d(width, width, 3, padding=1),
            ]
        layers += [nn.Conv1d(width, width, 3, padding=1), nn.ReLU(), nn.Conv1d(width, in_dim, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


class MotionVQVAE(nn.Module):
    """Face-motion VQ-VAE; all tensors at the public API are channels-last: motion (B, T, in_dim),
    latents (B, T/l, code_dim), indices (B, T/l).

    Hyper-parameters have one home, ``configs/schema.py:VQVAEConfig``: build with :meth:`from_config`.
    """

    def __init__(
        self,
        *,
        in_dim: int,
        codebook_size: int,
        code_dim: int,
        down_t: int,
        stride_t: int,
        width: int,
        depth: int,
        dilation_growth: int,
        ema_decay: float,
        commitment_beta: float,
        emotion_weight: float,
        emotion_head: bool,
        num_emotions: int = len(EMOTIONS),  # MEAD's 8: L_cls's labels index EMOTIONS
        dead_threshold: float,
    ) -> None:
        super().__init__()
        if stride_t < 2 or stride_t % 2:
            raise ValueError(f"stride_t must be an even number >= 2 (conv padding), got {stride_t}")
        if down_t < 0:
            raise ValueError(f"down_t must be >= 0, got {down_t}")
        self.in_dim = in_dim
        self.code_dim = code_dim
        self.frames_per_token = stride_t**down_t  # l
        self.commitment_beta = commitment_beta
        self.emotion_weight = emotion_weight
        self.num_emotions = num_emotions
        shape = dict(
            in_dim=in_dim, code_dim=code_dim, down_t=down_t, stride_t=stride_t, width=width, depth=depth
        )
        self.encoder = MotionEncoder(**shape, dilation_growth=dilation_growth)
        self.decoder = MotionDecoder(**shape, dilation_growth=dilation_growth)
        self.quantizer = EMAQuantizer(codebook_size, code_dim, decay=ema_decay, dead_threshold=dead_threshold)
        self.emotion_classifier: nn.Module | None = None
        if emotion_head:
            self.emotion_classifier = nn.Sequential(
                nn.Linear(code_dim, code_dim), nn.ReLU(), nn.Linear(code_dim, num_emotions)
            )

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> MotionVQVAE:
        """Build from :class:`emotalker.configs.schema.VQVAEConfig` (extra kwargs override)."""
        kwargs = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
        kwargs.update(overrides)
        return cls(**kwargs)

    # ---- helpers -------------------------------------------------------------------------------------
    def n_tokens(self, n_frames: int) -> int:
        """Tokens needed for ``n_frames`` (ceil(T / l))."""
        return -(-n_frames // self.frames_per_token)

    def _pad(self, x: torch.Tensor) -> tuple[torch.Tensor, int]:
        if x.ndim != 3 or x.shape[-1] != self.in_dim:
            raise ValueError(f"motion must be (B, T, {self.in_dim}), got {tuple(x.shape)}")
        t = x.shape[1]
        if t < 1:
            raise ValueError("motion has no frames")
        pad = self.n_tokens(t) * self.frames_per_token - t
        if pad:  # replicate the last frame so padding looks like a held pose
            x = torch.cat([x, x[:, -1:].expand(-1, pad, -1)], dim=1)
        return x, t

    # ---- public API --------------------------------------------------------------------------------
    def encode_latent(self, x: torch.Tensor) -> torch.Tensor:
        """Continuous encoder output z = E(x): (B, T, in_dim) -> (B, ceil(T/l), code_dim)."""
        x, _ = self._pad(x)
        return self.encoder(x.transpose(1, 2)).transpose(1, 2)

    def encode_reference(self, reference: torch.Tensor) -> torch.Tensor:
        """Stage-1 encoding (B, code_dim) of one reference frame (B, in_dim), held for l frames.

        Sec. 3.3: "the pre-trained autoencoder from the first stage encodes the 3DMM representation
        extracted from the reference image"; the result is the Transformer's start token.
        """
        if reference.ndim != 2 or reference.shape[-1] != self.in_dim:
            raise ValueError(f"reference must be (B, {self.in_dim}), got {tuple(reference.shape)}")
        held = reference[:, None].expand(-1, self.frames_per_token, -1)
        return self.encode_latent(held)[:, 0]

    def quantize(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Nearest codes of latents z (B, N, code_dim) -> (z_q, indices); no EMA update."""
        idx = self.quantizer.nearest(z)
        return self.quantizer.lookup(idx), idx

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Motion -> (continuous z, code indices)."""
        z = self.encode_latent(x)
        return z, self.quantizer.nearest(z)

    def decode_latent(self, z_q: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """(B, N, code_dim) -> motion (B, N*l, in_dim), cropped to ``n_frames`` when given."""
        if z_q.ndim != 3 or z_q.shape[-1] != self.code_dim:
            raise ValueError(f"latents must be (B, N, {self.code_dim}), got {tuple(z_q.shape)}")
        out = self.decoder(z_q.transpose(1, 2)).transpose(1, 2)
        return out if n_frames is None else out[:, :n_frames]

    def decode_indices(self, indices: torch.Tensor, n_frames: int | None = None) -> torch.Tensor:
        """Code indices (B, N) -> motion (B, N*l or n_frames, in_dim)."""
        return self.decode_latent(self.quantizer.lookup(indices), n_frames)

    def forward(self, x: torch.Tensor, emotion: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Reconstruct ``x`` (B, T, in_dim) and compute the Eq. 3 loss terms.

        total = SmoothL1(x_hat, x) + beta * ||z - sg[e]||^2 + emotion_weight * CE(emotion logits, emotion).
        The codebook term ||sg[z] - e||^2 is handled by the EMA update; it is reported (``loss_codebook``)
        but carries no gradient and is not part of ``loss``.
        """
        xp, t = self._pad(x)
        z = self.encoder(xp.transpose(1, 2)).transpose(1, 2)  # (B, N, D)
        q = self.quantizer(z)
        recon = self.decode_latent(q.quantized, t)
        loss_recon = F.smooth_l1_loss(recon, x)
        zero = recon.new_zeros(())
        logits = None
        loss_emotion = zero
        emotion_acc = zero
        if self.emotion_classifier is not None:
            logits = self.emotion_classifier(z.mean(dim=1))  # pooled over time
            if emotion is not None:
                emotion = emotion.long().reshape(-1)
                if emotion.numel() and (int(emotion.min()) < 0 or int(emotion.max()) >= self.num_emotions):
                    raise ValueError(f"emotion labels must lie in [0, {self.num_emotions})")
                loss_emotion = F.cross_entropy(logits, emotion)
                emotion_acc = (logits.argmax(1) == emotion).float().mean()
        loss = loss_recon + self.commitment_beta * q.commitment_loss
        if self.emotion_classifier is not None and emotion is not None:
            loss = loss + self.emotion_weight * loss_emotion
        out = {
            "recon": recon,
            "z": z,
            "z_q": q.quantized,
            "indices": q.indices,
            "loss": loss,
            "loss_recon": loss_recon,
            "loss_commit": q.commitment_loss,
            "loss_codebook": q.codebook_loss,
            "loss_emotion": loss_emotion,
            "emotion_acc": emotion_acc,
            "perplexity": q.perplexity,
            "usage": q.usage,
        }
        if logits is not None:
            out["emotion_logits"] = logits
        return out
