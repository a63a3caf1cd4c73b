"""SyncNet (Chung & Zisserman 2016), the audio-visual sync scorer behind the papers' "Sync" metric.

The module and parameter names follow the public ``syncnet_v2.model`` state dict (``netcnnaud.*``,
``netfcaud.*``, ``netcnnlip.*``, ``netfclip.*``) so the released weights load with ``strict=True``.
Inputs as that model was trained on: lips are 5 consecutive 224x224 BGR face frames in 0..255, audio is
20 MFCC frames (13 coefficients, 100 Hz) covering the same 0.2 s.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from emotalker.models.weights import CheckpointError, load_strict, torch_load_weights

SYNCNET_HELP = (
    "get syncnet_v2.model with syncnet_python's download_model.sh "
    "(http://www.robots.ox.ac.uk/~vgg/software/lipsync/data/syncnet_v2.model) and set eval.syncnet_checkpoint"
)
EMBED_DIM = 1024

# (out_channels, kernel, stride, padding, pool after: (kernel, stride, padding) or None)
_AUDIO_CONVS = [
    (64, (3, 3), (1, 1), (1, 1), ((1, 1), (1, 1), (0, 0))),
    (192, (3, 3), (1, 1), (1, 1), ((3, 3), (1, 2), (0, 0))),
    (384, (3, 3), (1, 1), (1, 1), None),
    (256, (3, 3), (1, 1), (1, 1), None),
    (256, (3, 3), (1, 1), (1, 1), ((3, 3), (2, 2), (0, 0))),
    (512, (5, 4), (1, 1), (0, 0), None),
]
_LIP_CONVS = [
    (96, (5, 7, 7), (1, 2, 2), (0, 0, 0), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (256, (1, 5, 5), (1, 2, 2), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 1, 1))),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), None),
    (256, (1, 3, 3), (1, 1, 1), (0, 1, 1), ((1, 3, 3), (1, 2, 2), (0, 0, 0))),
    (512, (1, 6, 6), (1, 1, 1), (0, 0, 0), None),
]


def _conv_stack(in_ch: int, spec: list, dims: int) -> nn.Sequential:
    """conv -> batch norm -> ReLU (-> max pool) per entry, in the checkpoint's layer order."""
    conv, norm, pool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else (nn.Conv3d, nn.BatchNorm3d, nn.MaxPool3d)
    )
    layers: list[nn.Module] = []
    for out_ch, kernel, stride, padding, pooling in spec:
        layers += [conv(in_ch, out_ch, kernel, stride, padding), norm(out_ch), nn.ReLU()]
        if pooling is not None:
            layers.append(pool(pooling[0], stride=pooling[1], padding=pooling[2]))
        in_ch = out_ch
    return nn.Sequential(*layers)


def _head(embed_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(), nn.Linear(512, embed_dim))


class SyncNet(nn.Module):
    """Two-stream embedding: audio and lip windows land in one space where distance means off-sync."""

    def __init__(self, embed_dim: int = EMBED_DIM) -> None:
        super().__init__()
        self.netcnnaud = _conv_stack(1, _AUDIO_CONVS, dims=2)
        self.netfcaud = _head(embed_dim)
        self.netcnnlip = _conv_stack(3, _LIP_CONVS, dims=3)
        self.netfclip = _head(embed_dim)

    def embed_audio(self, mfcc: torch.Tensor) -> torch.Tensor:
        """(B, 1, 13, 20) MFCC windows -> (B, embed_dim)."""
        return self.netfcaud(self.netcnnaud(mfcc).flatten(1))

    def embed_lips(self, frames: torch.Tensor) -> torch.Tensor:
        """(B, 3, 5, 224, 224) BGR frames in 0..255 -> (B, embed_dim)."""
        return self.netfclip(self.netcnnlip(frames).flatten(1))


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """The released ``syncnet_v2.model`` (a state dict), loaded tensors-only, in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SyncNet checkpoint not found at {path}: {SYNCNET_HELP}")
    try:
        state = torch_load_weights(path)
    except CheckpointError as exc:
        raise ValueError(f"{path} is not a SyncNet state dict ({exc.__cause__}); {SYNCNET_HELP}") from exc
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a SyncNet state dict; {SYNCNET_HELP}")
    state = {k.removeprefix("module.").removeprefix("__S__."): v for k, v in state.items()}
    model = SyncNet()
    try:
        load_strict(model, state, "the checkpoint")
    except CheckpointError as exc:
        raise ValueError(f"{path} does not match the SyncNet architecture: {exc}") from exc
    return model.to(device).eval()
