"""Canonical keypoint detector and (for the facevid2vid checkpoint layout) the head-pose estimator."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from emotalker.models.renderer.blocks import (
    AntiAliasDownsample,
    DownBlock2d,
    ResBottleneck,
    UpBlock3d,
    coordinate_grid_3d,
)


class KPHourglass(nn.Module):
    """2D encoder -> 1x1 conv -> reshape to a 3D volume -> 3D decoder (keypoint heatmap features)."""

    def __init__(
        self, block_expansion: int, in_features: int, max_features: int, num_blocks: int, reshape_depth: int
    ) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * (2**i))

        self.down_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.down_blocks.add_module(
                f"down{i}", DownBlock2d(in_features if i == 0 else width(i), width(i + 1))
            )
        bottom = width(num_blocks)
        # the 2D bottleneck is lifted to `bottom` x `reshape_depth` channels (SadTalker: 16384 = 1024 x 16)
        self.conv = nn.Conv2d(bottom, bottom * reshape_depth, kernel_size=1)
        self.up_blocks = nn.Sequential()
        for i in range(num_blocks):
            self.up_blocks.add_module(f"up{i}", UpBlock3d(width(num_blocks - i), width(num_blocks - i - 1)))
        self.reshape_depth = reshape_depth
        self.out_filters = width(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv(self.down_blocks(x))
        b, c, h, w = out.shape
        return self.up_blocks(out.view(b, c // self.reshape_depth, self.reshape_depth, h, w))


class KPDetector(nn.Module):
    """Image -> K canonical 3D keypoints (soft-argmax of per-keypoint heatmaps over the volume)."""

    def __init__(
        self,
        *,
        block_expansion: int,
        max_features: int,
        num_kp: int,
        image_channel: int,
        num_blocks: int,
        reshape_depth: int,
        temperature: float,
        scale_factor: float,
    ) -> None:
        super().__init__()
        self.predictor = KPHourglass(block_expansion, image_channel, max_features, num_blocks, reshape_depth)
        self.kp = nn.Conv3d(self.predictor.out_filters, num_kp, kernel_size=3, padding=1)
        self.temperature = temperature
        self.scale_factor = scale_factor
        if scale_factor != 1:
            self.down = AntiAliasDownsample(image_channel, scale_factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [0, 1] -> (B, K, 3) keypoints in [-1, 1]^3 (x, y, z)."""
        if self.scale_factor != 1:
            x = self.down(x)
        pred = self.kp(self.predictor(x))
        b, k, d, h, w = pred.shape
        heat = F.softmax(pred.view(b, k, -1) / self.temperature, dim=2).view(b, k, d, h, w)
        grid = coordinate_grid_3d(d, h, w, heat)
        return (heat.unsqueeze(-1) * grid).sum(dim=(2, 3, 4))


class HEEstimator(nn.Module):
    """face-vid2vid's head pose / expression estimator (ResNet-style bottlenecks).

    SadTalker drives pose with the mapping network instead; this exists so that the ``he_estimator``
    entry of ``facevid2vid_00189-model.pth.tar`` is checked strictly too. Stage widths are
    max_features / 8, / 4, / 2 and max_features (256 ... 2048 released).
    """

    def __init__(
        self,
        block_expansion: int = 64,
        max_features: int = 2048,
        num_kp: int = 15,
        image_channel: int = 3,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        c1, c2, c3, c4 = (max_features // 8, max_features // 4, max_features // 2, max_features)
        self.conv1 = nn.Conv2d(image_channel, block_expansion, kernel_size=7, padding=3, stride=2)
        self.norm1 = nn.BatchNorm2d(block_expansion, affine=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(block_expansion, c1, kernel_size=1)
        self.norm2 = nn.BatchNorm2d(c1, affine=True)
        self.block1 = _bottlenecks("b1", c1, 3)
        self.conv3 = nn.Conv2d(c1, c2, kernel_size=1)
        self.norm3 = nn.BatchNorm2d(c2, affine=True)
        self.block2 = ResBottleneck(c2, stride=2)
        self.block3 = _bottlenecks("b3", c2, 3)
        self.conv4 = nn.Conv2d(c2, c3, kernel_size=1)
        self.norm4 = nn.BatchNorm2d(c3, affine=True)
        self.block4 = ResBottleneck(c3, stride=2)
        self.block5 = _bottlenecks("b5", c3, 5)
        self.conv5 = nn.Conv2d(c3, c4, kernel_size=1)
        self.norm5 = nn.BatchNorm2d(c4, affine=True)
        self.block6 = ResBottleneck(c4, stride=2)
        self.block7 = _bottlenecks("b7", c4, 2)
        self.fc_roll = nn.Linear(c4, num_bins)
        self.fc_pitch = nn.Linear(c4, num_bins)
        self.fc_yaw = nn.Linear(c4, num_bins)
        self.fc_t = nn.Linear(c4, 3)
        self.fc_exp = nn.Linear(c4, 3 * num_kp)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.maxpool(F.relu(self.norm1(self.conv1(x))))
        out = self.block1(F.relu(self.norm2(self.conv2(out))))
        out = self.block3(self.block2(F.relu(self.norm3(self.conv3(out)))))
        out = self.block5(self.block4(F.relu(self.norm4(self.conv4(out)))))
        out = self.block7(self.block6(F.relu(self.norm5(self.conv5(out)))))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return {
            "yaw": self.fc_yaw(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_roll(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }


def _bottlenecks(prefix: str, channels: int, n: int) -> nn.Sequential:
    seq = nn.Sequential()
    for i in range(n):
        seq.add_module(f"{prefix}_{i}", ResBottleneck(channels, stride=1))
    return seq
