"""Inference wrapper: VQ-VAE decoder + cross-modal Transformer (face branch) + lip branch -> 70-dim motion."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from emotalker.configs.constants import (
    AUDIO_FRAMES_PER_VIDEO_FRAME,
    EXP_DIM,
    FACE_DIM,
    FACE_INDICES,
    LIP_DIM,
    LIP_INDICES,
    MOTION_DIM,
)
from emotalker.models.lip import LipBranch
from emotalker.models.motion import merge_motion
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    if torch.is_tensor(x):
        return x
    raise ValueError(f"{name} must be a numpy array or torch tensor, got {type(x).__name__}")


def _pad_frames(x: torch.Tensor, n: int) -> torch.Tensor:
    """Pad dim 0 to ``n`` rows by repeating the last row."""
    pad = n - x.shape[0]
    return x if pad <= 0 else torch.cat([x, x[-1:].expand(pad, *x.shape[1:])], dim=0)


class EmoTalker(nn.Module):
    """The full generator; ``face_mean``/``face_std`` (57,) undo the face normalisation used in training."""

    def __init__(
        self,
        vqvae: MotionVQVAE,
        transformer: CrossModalTransformer,
        lip: LipBranch,
        face_mean: torch.Tensor | np.ndarray | None = None,
        face_std: torch.Tensor | np.ndarray | None = None,
        max_context: int | None = 64,
    ) -> None:
        super().__init__()
        if max_context is not None and max_context < 1:
            raise ValueError(f"max_context must be >= 1 token or None, got {max_context}")
        # tokens of sliding decoder context (generation.max_context): decoding stays linear in length
        self.max_context = max_context
        if vqvae.in_dim != FACE_DIM:
            raise ValueError(f"VQ-VAE must model the {FACE_DIM} face coefficients, has in_dim={vqvae.in_dim}")
        if transformer.code_dim != vqvae.code_dim:
            raise ValueError(
                f"transformer code_dim {transformer.code_dim} != VQ-VAE code_dim {vqvae.code_dim}"
            )
        self.vqvae = vqvae
        self.transformer = transformer
        self.lip = lip
        mean = torch.zeros(FACE_DIM) if face_mean is None else _as_tensor(face_mean, "face_mean").float()
        std = torch.ones(FACE_DIM) if face_std is None else _as_tensor(face_std, "face_std").float()
        if mean.shape != (FACE_DIM,) or std.shape != (FACE_DIM,):
            raise ValueError(
                f"face_mean/face_std must be ({FACE_DIM},), got {tuple(mean.shape)}, {tuple(std.shape)}"
            )
        self.register_buffer("face_mean", mean)
        self.register_buffer("face_std", std.clamp(min=1e-6))

    @torch.no_grad()
    def generate(
        self,
        reference: np.ndarray | torch.Tensor,
        emotion_audio_feats: np.ndarray | torch.Tensor,
        content: np.ndarray | torch.Tensor | None,
        mel_windows: np.ndarray | torch.Tensor,
        ratio: np.ndarray | torch.Tensor | None = None,
        lip_batch: int = 256,
        on_token: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Generate (T, 70) motion for the T video frames (25 fps) of ``mel_windows``, any T.

        reference: (70,) motion of the neutral reference frame; the stage-1 encoder encodes its face part
        into the start token (Sec. 3.3). Or (T_d, 70) emotional driving frames (Table 5's setting), which
        stand in for it frame by frame: token i's start/style is the stage-1 encoding of its own first
        frame, and the lip branch's beta takes each frame's lip coefficients from them; driving frames are
        looped when shorter than the audio. emotion_audio_feats: (T'_a, audio_dim) HuBERT features at their
        native ~50 Hz rate (T'_a = floor((N - 400) / 320) + 1, about 2T); content: (T'_a,) k-means tokens
        (None when the transformer has no content branch); mel_windows: (T, 80, 16); ratio: optional
        (T,) or (T, 1) blink ratio. The lip branch's mapping network takes the face branch's generated
        expression frame by frame. ``self.max_context`` tokens of sliding context
        (``generation.max_context``) keep autoregressive decoding linear in T (None = full context).
        ``on_token(done, total)`` is called after each decoded token (a caller's progress bar).
        """
        self.eval()
        dev = self.face_mean.device
        ref = _as_tensor(reference, "reference").float().to(dev)
        if ref.shape[-1:] != (MOTION_DIM,) or ref.ndim not in (1, 2) or ref.numel() == 0:
            raise ValueError(
                f"reference must be ({MOTION_DIM},) motion or (T_d, {MOTION_DIM}) driving frames, "
                f"got {tuple(ref.shape)}"
            )
        mel = _as_tensor(mel_windows, "mel_windows").float().to(dev)
        if mel.ndim != 3 or mel.shape[0] < 1 or mel.shape[1:] != (80, 16):
            raise ValueError(f"mel_windows must be (T, 80, 16) with T >= 1, got {tuple(mel.shape)}")
        t = mel.shape[0]
        rate = AUDIO_FRAMES_PER_VIDEO_FRAME
        audio = _as_tensor(emotion_audio_feats, "emotion_audio_feats").float().to(dev)
        if audio.ndim != 2 or abs(audio.shape[0] - rate * t) > rate:
            raise ValueError(
                f"emotion_audio_feats must be (T'_a, D) HuBERT frames at {rate} per video frame "
                f"(about {rate * t} for {t} mel windows), got {tuple(audio.shape)}"
            )
        tok = None
        if content is not None:
            tok = _as_tensor(content, "content").to(dev)
            if tok.shape != audio.shape[:1]:
                raise ValueError(
                    f"content has {tuple(tok.shape)} tokens, audio features {audio.shape[0]} frames"
                )

        # face branch: pad to whole tokens (audio to `rate` frames per padded video frame, so Eq. 7
        # gives k = rate * l), decode autoregressively from the stage-1 encoding of the reference, crop
        n_tok = self.vqvae.n_tokens(t)
        t_pad = n_tok * self.vqvae.frames_per_token
        audio_p = _pad_frames(audio, rate * t_pad)[: rate * t_pad][None]
        tok_p = _pad_frames(tok, rate * t_pad)[: rate * t_pad][None].long() if tok is not None else None
        if ref.ndim == 2:  # driving frames, looped to the padded length: one frame per video frame
            ref = ref[torch.arange(t_pad, device=dev) % ref.shape[0]]
            token_ref = ref[:: self.vqvae.frames_per_token]  # each token's first frame (n_tok, 70)
            face_ref = (token_ref[:, list(FACE_INDICES)] - self.face_mean) / self.face_std
            start = self.vqvae.encode_reference(face_ref)[None]  # (1, n_tok, code_dim): one per token
        else:
            face_ref = ((ref[list(FACE_INDICES)] - self.face_mean) / self.face_std)[None]
            start = self.vqvae.encode_reference(face_ref)
        _, idx = self.transformer.generate(
            audio_p,
            tok_p,
            n_tok,
            start=start,
            codebook=self.vqvae.quantizer.codebook,
            max_context=self.max_context,
            on_token=on_token,
        )
        assert idx is not None
        face = self.vqvae.decode_indices(idx, t)[0] * self.face_std + self.face_mean  # (T, 57)

        # lip branch, per frame: the mapping network takes the face branch's generated expression
        # (its 51 non-lip coefficients; the 13 lip ones from the reference, or from each driving frame) as
        # beta, frame by frame
        beta = torch.zeros(t, MOTION_DIM, device=dev)
        beta[:, list(FACE_INDICES)] = face
        beta[:, list(LIP_INDICES)] = ref[:t, list(LIP_INDICES)] if ref.ndim == 2 else ref[list(LIP_INDICES)]
        beta = beta[:, :EXP_DIM]
        r = None
        if ratio is not None:
            r = _as_tensor(ratio, "ratio").float().to(dev).reshape(t, 1)
        lips = []
        for s in range(0, t, lip_batch):
            e = min(t, s + lip_batch)
            rr = r[s:e] if r is not None else None
            lips.append(self.lip(mel[s:e, None], beta[s:e], rr)["lip"])
        lip = torch.cat(lips, dim=0)
        assert lip.shape == (t, LIP_DIM)
        return merge_motion(face.cpu().numpy().astype(np.float32), lip.cpu().numpy().astype(np.float32))
