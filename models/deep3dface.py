"""Deep3DFace (Deng et al. 2019) coefficient regressor: ResNet-50 + seven 1x1 heads -> 257 coefficients.

The module and parameter names mirror torchvision's ``resnet50`` and Deep3DFace_pytorch's
``ReconNetWrapper`` so that the released ``epoch_20.pth`` (``net_recon``) loads without renaming.
torchvision is not importable here, hence the own ResNet-50.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from emotalker.configs.constants import COEFF_DIM
from emotalker.models.weights import (
    CheckpointError,
    load_strict,
    read_safetensors_section,
    torch_load_weights,
)

# Head widths in Deep3DFace's output order: id, exp, tex, angle, gamma, trans xy, trans z.
HEAD_DIMS: tuple[int, ...] = (80, 64, 80, 3, 27, 2, 1)
assert sum(HEAD_DIMS) == COEFF_DIM
CHECKPOINT_HELP = (
    "download the Deep3DFace_pytorch release checkpoint 'epoch_20.pth' "
    "(https://github.com/sicxu/Deep3DFaceRecon_pytorch, model 'face_recon_feat0.2_augment') "
    "and set face.deep3dface_checkpoint to its path"
)


class Bottleneck(nn.Module):
    """torchvision-compatible ResNet bottleneck (stride on the 3x3 conv, v1.5)."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


class ResNet50Backbone(nn.Module):
    """ResNet-50 without the final fc; returns the (B, 2048, 1, 1) pooled feature map."""

    def __init__(self, layers: tuple[int, int, int, int] = (3, 4, 6, 3)):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(64, layers[0])
        self.layer2 = self._make_layer(128, layers[1], stride=2)
        self.layer3 = self._make_layer(256, layers[2], stride=2)
        self.layer4 = self._make_layer(512, layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, planes: int, blocks: int, stride: int = 1) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * Bottleneck.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * Bottleneck.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * Bottleneck.expansion),
            )
        layers = [Bottleneck(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x)


class ReconNet(nn.Module):
    """Deep3DFace regressor: RGB in [0, 1], (B, 3, 224, 224) -> (B, 257) coefficients."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = ResNet50Backbone()
        self.final_layers = nn.ModuleList([nn.Conv2d(2048, d, 1, bias=True) for d in HEAD_DIMS])
        for layer in self.final_layers:  # Deep3DFace starts from the mean face
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.backbone(x)
        out = torch.cat([layer(feat) for layer in self.final_layers], dim=1)
        return torch.flatten(out, 1)


def _strip_module(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def recon_state_dict_from_checkpoint(ckpt: object, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Pull the ``net_recon`` state dict out of a loaded checkpoint object, with clear errors."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointError(f"{where}: expected a dict with key 'net_recon', got {type(ckpt).__name__}")
    if "net_recon" not in ckpt:
        raise CheckpointError(
            f"{where}: no 'net_recon' key (found keys {sorted(map(str, ckpt))[:20]}); "
            "expected a Deep3DFace_pytorch checkpoint such as epoch_20.pth"
        )
    state = ckpt["net_recon"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"{where}: 'net_recon' is a {type(state).__name__}, not a state dict")
    return _strip_module(state)


SADTALKER_PREFIX = "face_3drecon."


def load_recon_net(path: str | Path, device: str | torch.device = "cpu") -> ReconNet:
    """Build a :class:`ReconNet` in eval mode from Deep3DFace's ``epoch_20.pth`` or a SadTalker
    ``SadTalker_V0.0.2_*.safetensors`` (its ``face_3drecon.`` tensors)."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Deep3DFace checkpoint not found at {p}: {CHECKPOINT_HELP}")
    if p.suffix == ".safetensors":  # SadTalker_V0.0.2_*.safetensors holds net_recon under face_3drecon.
        state = read_safetensors_section(p, SADTALKER_PREFIX)
    else:
        state = recon_state_dict_from_checkpoint(torch_load_weights(p), str(p))
    net = ReconNet()
    load_strict(net, state, f"{p}: 'net_recon' of the Deep3DFace ReconNet")
    return net.to(device).eval()
