"""Lip branch (Sec. 3.4): Wav2Lip-style mel encoder -> SadTalker ExpNet (64 exp) -> 13 lip coefficients.

Parameter names follow SadTalker's ``audio2exp`` network (``audio_encoder.<i>.conv_block.{0,1}``,
``mapping1``) so its checkpoint (``netG.``-prefixed keys under ``model``) loads into :class:`ExpNet`.
Output (Eq. 10), as the authors' ``SimpleWrapperV2``: with ``y_lip = y[LIP_INDICES]``,
``lip = lip_mix * mapping2(y_lip) + (1 - lip_mix) * y_lip`` and ``mapping2 = Linear(13, 13)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from emotalker.configs.constants import EXP_DIM, LIP_DIM, LIP_INDICES
from emotalker.models.weights import CheckpointError, read_safetensors_section, torch_load_weights


class ConvBlock2d(nn.Module):
    """Conv2d + BatchNorm (+ identity) + ReLU, the Wav2Lip building block."""

    def __init__(
        self, cin: int, cout: int, kernel: int, stride: Any, padding: int, residual: bool = False
    ) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding), nn.BatchNorm2d(cout))
        self.residual = residual
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_block(x)
        if self.residual:
            out = out + x
        return self.act(out)


class AudioEncoder(nn.Sequential):
    """(B, 1, 80, 16) mel window -> (B, 512, 1, 1); the layer indices match Wav2Lip/SadTalker."""

    mel_bins = 80
    mel_frames = 16

    def __init__(self) -> None:
        super().__init__(
            ConvBlock2d(1, 32, 3, 1, 1),
            ConvBlock2d(32, 32, 3, 1, 1, residual=True),
            ConvBlock2d(32, 32, 3, 1, 1, residual=True),
            ConvBlock2d(32, 64, 3, (3, 1), 1),
            ConvBlock2d(64, 64, 3, 1, 1, residual=True),
            ConvBlock2d(64, 64, 3, 1, 1, residual=True),
            ConvBlock2d(64, 128, 3, 3, 1),
            ConvBlock2d(128, 128, 3, 1, 1, residual=True),
            ConvBlock2d(128, 128, 3, 1, 1, residual=True),
            ConvBlock2d(128, 256, 3, (3, 2), 1),
            ConvBlock2d(256, 256, 3, 1, 1, residual=True),
            ConvBlock2d(256, 512, 3, 1, 0),
            ConvBlock2d(512, 512, 1, 1, 0),
        )


class ExpNet(nn.Module):
    """SadTalker audio2exp: audio embedding + reference expression (64) + blink ratio (1) -> 64 exp."""

    audio_embed = 512  # the Wav2Lip encoder's output width

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = AudioEncoder()  # Phi_A
        self.mapping1 = nn.Linear(self.audio_embed + EXP_DIM + 1, EXP_DIM)  # Phi_M1
        nn.init.zeros_(self.mapping1.bias)

    def forward(
        self, mel: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor | None = None
    ) -> torch.Tensor:
        """mel (N, 1, 80, 16) or (B, T, 1, 80, 16); ref_exp (N|B, [T,] 64); ratio like ref_exp[..., :1]."""
        lead = mel.shape[:-3]
        if mel.shape[-3:] != (1, AudioEncoder.mel_bins, AudioEncoder.mel_frames):
            raise ValueError(f"mel windows must be (..., 1, 80, 16), got {tuple(mel.shape)}")
        flat = mel.reshape(-1, 1, AudioEncoder.mel_bins, AudioEncoder.mel_frames)
        emb = self.audio_encoder(flat).reshape(flat.shape[0], -1)
        if ref_exp.shape[-1] != EXP_DIM:
            raise ValueError(f"ref_exp must end in {EXP_DIM}, got {tuple(ref_exp.shape)}")
        ref = _broadcast(ref_exp, lead, EXP_DIM, "ref_exp")
        ratio = ref.new_zeros(ref.shape[0], 1) if ratio is None else _broadcast(ratio, lead, 1, "ratio")
        y = self.mapping1(torch.cat([emb, ref.to(emb.dtype), ratio.to(emb.dtype)], dim=1))
        return y.reshape(*lead, EXP_DIM)


def _broadcast(t: torch.Tensor, lead: tuple[int, ...], dim: int, name: str) -> torch.Tensor:
    """Per-clip (B, dim) or per-frame (B, T, dim) conditioning -> flat (N, dim)."""
    while t.ndim < len(lead) + 1:
        t = t.unsqueeze(-2)  # (B, dim) -> (B, 1, dim): one value for every frame of the clip
    try:
        return t.expand(*lead, dim).reshape(-1, dim)
    except RuntimeError as exc:
        raise ValueError(f"{name} {tuple(t.shape)} does not broadcast to {(*lead, dim)}") from exc


def _unwrap_state_dict(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("model", "state_dict", "net"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
        raise CheckpointError(f"{path}: not a state dict (expected tensors, optionally under 'model')")
    out = {}
    for k, v in obj.items():
        for prefix in ("module.", "netG."):
            if k.startswith(prefix):
                k = k[len(prefix) :]
        out[k] = v
    return out


def load_sadtalker_audio2exp(net: ExpNet, path: str | Path, strict: bool = False) -> dict[str, list[str]]:
    """Load SadTalker's ``auido2exp_00300-model.pth``, the ``audio2exp.`` part of
    ``SadTalker_V0.0.2_*.safetensors`` (or any ExpNet state dict) into ``net``.

    Loads with ``torch.load(weights_only=True)``; returns ``{"missing": [...], "unexpected": [...]}``
    and raises :class:`CheckpointError` on shape mismatches, when nothing matched, or (``strict``)
    when any key is missing or unexpected.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SadTalker audio2exp checkpoint not found: {p}")
    if p.suffix == ".safetensors":  # SadTalker_V0.0.2_*.safetensors: ExpNet under audio2exp.netG.
        sd = _unwrap_state_dict(read_safetensors_section(p, "audio2exp."), p)
    else:
        sd = _unwrap_state_dict(torch_load_weights(p), p)
    own = net.state_dict()
    bad = [
        f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in sd.items()
        if k in own and v.shape != own[k].shape
    ]
    if bad:
        raise CheckpointError(f"{p}: shape mismatch for {len(bad)} keys: {bad[:5]}")
    result = net.load_state_dict(sd, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": list(result.unexpected_keys)}
    if not set(sd) & set(own):
        raise CheckpointError(f"{p}: no key matched ExpNet (first keys: {list(sd)[:5]})")
    if strict and (report["missing"] or report["unexpected"]):
        raise CheckpointError(
            f"{p}: missing {report['missing'][:10]}, unexpected {report['unexpected'][:10]}"
        )
    return report


class LipBranch(nn.Module):
    """ExpNet (Phi_A + Phi_M1) followed by mapping2 (Phi_M2, 13 -> 13) and the Eq. 10 mixture.

    ``freeze_audio_encoder``: Phi_A keeps the pretrained weights and BatchNorm statistics (the authors set
    ``requires_grad = False`` on it); only mapping1 and mapping2 train. Hyper-parameters have one home,
    ``configs/schema.py:LipConfig``: build with :meth:`from_config`.
    """

    def __init__(self, *, lip_mix: float, freeze_audio_encoder: bool = True) -> None:
        super().__init__()
        if not 0.0 <= lip_mix <= 1.0:
            raise ValueError(f"lip_mix must be in [0, 1], got {lip_mix}")
        self.lip_mix = lip_mix
        self.freeze_audio_encoder = freeze_audio_encoder
        self.expnet = ExpNet()
        self.mapping2 = nn.Linear(LIP_DIM, LIP_DIM)  # Phi_M2 on the 13 lip entries of Phi_M1's output
        self.register_buffer("lip_indices", torch.tensor(LIP_INDICES, dtype=torch.long), persistent=False)
        with torch.no_grad():  # start as the identity, so Eq. 10 starts as the pretrained ExpNet's lips
            self.mapping2.weight.copy_(torch.eye(LIP_DIM))
            self.mapping2.bias.zero_()
        if freeze_audio_encoder:
            self.expnet.audio_encoder.requires_grad_(False)
            self.expnet.audio_encoder.eval()

    def train(self, mode: bool = True) -> LipBranch:
        """A frozen Phi_A stays in eval mode: its BatchNorm running statistics are pretrained weights too."""
        super().train(mode)
        if self.freeze_audio_encoder:
            self.expnet.audio_encoder.eval()
        return self

    @classmethod
    def from_config(cls, cfg: Any, **overrides: Any) -> LipBranch:
        """Build from :class:`emotalker.configs.schema.LipConfig` (its ``init_checkpoint`` is for the
        training stage, which calls :meth:`load_sadtalker_audio2exp`)."""
        kwargs = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)
        kwargs.pop("init_checkpoint", None)
        kwargs.update(overrides)
        return cls(**kwargs)

    def mix(self, y: torch.Tensor) -> torch.Tensor:
        """Eq. 10 on ExpNet output y (..., 64) -> (..., 13)."""
        y_lip = y[..., self.lip_indices]
        return self.lip_mix * self.mapping2(y_lip) + (1 - self.lip_mix) * y_lip

    def forward(
        self, mel: torch.Tensor, ref_exp: torch.Tensor, ratio: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Returns ``lip`` (..., 13) and the intermediate ``exp`` (..., 64)."""
        y = self.expnet(mel, ref_exp, ratio)
        return {"lip": self.mix(y), "exp": y}

    def load_sadtalker_audio2exp(self, path: str | Path, strict: bool = False) -> dict[str, list[str]]:
        """Initialise the ExpNet part from SadTalker's audio2exp checkpoint (see module function)."""
        return load_sadtalker_audio2exp(self.expnet, path, strict)
