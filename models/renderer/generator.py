"""Dense motion network and occlusion-aware SPADE generator (SadTalker's face renderer).

The generator lifts the source image to a 3D appearance volume, warps it by a dense flow estimated from
source/driving keypoints, and decodes the warped volume with SPADE blocks. Everything that depends only
on the source image (appearance volume after the 3D residual blocks, the dense motion network's
compressed volume and source heatmaps) is computed once by :meth:`OcclusionAwareSPADEGenerator.prepare`;
:meth:`OcclusionAwareSPADEGenerator.render` then only does per-frame work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from emotalker.models.renderer.blocks import (
    DownBlock2d,
    DownBlock3d,
    ResBlock3d,
    SameBlock2d,
    SPADEResnetBlock,
    UpBlock3d,
    coordinate_grid_3d,
    keypoint_gaussians,
)

KP_VARIANCE = 0.01  # Gaussian keypoint heatmaps in the dense motion network
MASK_FLOOR = 1e-3  # softmax weights below this are zeroed (SadTalker)


class Hourglass3d(nn.Module):
    """3D U-Net: ``num_blocks`` (1, 2, 2) down/up blocks with skips; output = input channels + expansion."""

    def __init__(self, block_expansion: int, in_features: int, num_blocks: int, max_features: int) -> None:
        super().__init__()

        def width(i: int) -> int:
            return min(max_features, block_expansion * (2**i))

        self.encoder = nn.Module()
        self.encoder.down_blocks = nn.ModuleList(
            DownBlock3d(in_features if i == 0 else width(i), width(i + 1)) for i in range(num_blocks)
        )
        self.decoder = nn.Module()
        self.decoder.up_blocks = nn.ModuleList(
            UpBlock3d((1 if i == num_blocks - 1 else 2) * width(i + 1), width(i))
            for i in reversed(range(num_blocks))
        )
        self.out_filters = block_expansion + in_features
        self.decoder.conv = nn.Conv3d(self.out_filters, self.out_filters, kernel_size=3, padding=1)
        self.decoder.norm = nn.BatchNorm3d(self.out_filters, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = [x]
        for block in self.encoder.down_blocks:
            skips.append(block(skips[-1]))
        out = skips.pop()
        for block in self.decoder.up_blocks:
            out = torch.cat([block(out), skips.pop()], dim=1)
        return F.relu(self.decoder.norm(self.decoder.conv(out)))


@dataclass
class MotionSource:
    """Source-only inputs of the dense motion network, computed once per source image."""

    kp: torch.Tensor  # (1, K, 3) source keypoints
    grid: torch.Tensor  # (d, h, w, 3) identity sampling grid
    compressed: torch.Tensor  # (1, c, d, h, w) compressed appearance volume
    background: torch.Tensor  # (1, 1, c, d, h, w) the volume sampled at the identity grid
    gaussians: torch.Tensor  # (1, K, d, h, w) source keypoint heatmaps


class DenseMotionNetwork(nn.Module):
    """Sparse keypoint motions -> dense 3D flow (softmax-weighted over K + background) and occlusion."""

    def __init__(
        self,
        *,
        block_expansion: int,
        num_blocks: int,
        max_features: int,
        num_kp: int,
        feature_channel: int,
        reshape_depth: int,
        compress: int,
    ) -> None:
        super().__init__()
        self.hourglass = Hourglass3d(block_expansion, (num_kp + 1) * (compress + 1), num_blocks, max_features)
        self.mask = nn.Conv3d(self.hourglass.out_filters, num_kp + 1, kernel_size=7, padding=3)
        self.compress = nn.Conv3d(feature_channel, compress, kernel_size=1)
        self.norm = nn.BatchNorm3d(compress, affine=True)
        self.occlusion = nn.Conv2d(self.hourglass.out_filters * reshape_depth, 1, kernel_size=7, padding=3)
        self.num_kp = num_kp

    def prepare(self, feature: torch.Tensor, kp_source: torch.Tensor) -> MotionSource:
        """What the flow needs from the source volume (S, C, d, h, w) and keypoints (S, K, 3); S is 1 or B."""
        compressed = F.relu(self.norm(self.compress(feature)))
        _, c, d, h, w = compressed.shape
        grid = coordinate_grid_3d(d, h, w, compressed)
        background = F.grid_sample(compressed, grid.expand(len(compressed), d, h, w, 3), align_corners=False)
        return MotionSource(
            kp=kp_source,
            grid=grid,
            compressed=compressed,
            background=background[:, None],
            gaussians=keypoint_gaussians(kp_source, grid, KP_VARIANCE),
        )

    def forward_driving(
        self, src: MotionSource, kp_driving: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Driving keypoints (B, K, 3) -> deformation (B, d, h, w, 3) and occlusion map (B, 1, h, w)."""
        b, k = kp_driving.shape[:2]
        _, c, d, h, w = src.compressed.shape
        # each keypoint's sparse motion moves the grid by kp_source - kp_driving (no jacobians here)
        shifted = src.grid[None, None] + (src.kp - kp_driving)[:, :, None, None, None, :]
        volume = src.compressed.unsqueeze(1).expand(b, k, c, d, h, w).reshape(b * k, c, d, h, w)
        sampled = F.grid_sample(volume, shifted.reshape(b * k, d, h, w, 3), align_corners=False)
        sampled = sampled.view(b, k, c, d, h, w)
        deformed = torch.cat([src.background.expand(b, 1, c, d, h, w), sampled], dim=1)
        heat = keypoint_gaussians(kp_driving, src.grid, KP_VARIANCE) - src.gaussians
        heat = torch.cat([heat.new_zeros(b, 1, d, h, w), heat], dim=1).unsqueeze(2)
        pred = self.hourglass(torch.cat([heat, deformed], dim=2).view(b, -1, d, h, w))
        mask = F.softmax(self.mask(pred), dim=1)
        mask = torch.where(mask < MASK_FLOOR, torch.zeros_like(mask), mask)
        motions = torch.cat([src.grid[None, None].expand(b, 1, d, h, w, 3), shifted], dim=1)
        deformation = (motions * mask.unsqueeze(-1)).sum(dim=1)
        occlusion = torch.sigmoid(self.occlusion(pred.reshape(b, -1, h, w)))
        return deformation, occlusion


class SPADEDecoder(nn.Module):
    """Warped features (ic, 64, 64) -> RGB (256 x 256 at 256 px input), label map = the features."""

    def __init__(self, ic: int = 256, oc: int = 64, hidden: int = 128) -> None:
        super().__init__()
        self.fc = nn.Conv2d(ic, 2 * ic, kernel_size=3, padding=1)
        for i in range(6):
            setattr(self, f"G_middle_{i}", SPADEResnetBlock(2 * ic, 2 * ic, ic, hidden))
        self.up_0 = SPADEResnetBlock(2 * ic, ic, ic, hidden)
        self.up_1 = SPADEResnetBlock(ic, oc, ic, hidden)
        self.conv_img = nn.Conv2d(oc, 3, kernel_size=3, padding=1)
        self.up = nn.Upsample(scale_factor=2)

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        x = self.fc(feature)
        for i in range(6):
            x = getattr(self, f"G_middle_{i}")(x, feature)
        x = self.up_0(self.up(x), feature)
        x = self.up_1(self.up(x), feature)
        return torch.sigmoid(self.conv_img(F.leaky_relu(x, 0.2)))


@dataclass
class GeneratorSource:
    """The source image's appearance volume and dense-motion inputs (computed once)."""

    feature_3d: torch.Tensor  # (1, C, d, h, w) after the 3D residual blocks
    motion: MotionSource


class OcclusionAwareSPADEGenerator(nn.Module):
    """Source image + source/driving keypoints -> driven image (face-vid2vid with a SPADE decoder)."""

    def __init__(
        self,
        *,
        image_channel: int,
        num_kp: int,
        block_expansion: int,
        max_features: int,
        num_down_blocks: int,
        reshape_depth: int,
        num_resblocks: int,
        dense_block_expansion: int,
        dense_max_features: int,
        dense_num_blocks: int,
        dense_compress: int,
        spade_hidden: int,
    ) -> None:
        super().__init__()
        if max_features % reshape_depth:
            raise ValueError(
                f"max_features {max_features} must be a multiple of reshape_depth {reshape_depth}"
            )
        if num_down_blocks != 2:
            raise ValueError("the SPADE decoder upsamples twice: num_down_blocks must be 2")
        self.reshape_channel = max_features // reshape_depth  # the appearance volume's channels (32)
        self.reshape_depth = reshape_depth
        self.dense_motion_network = DenseMotionNetwork(
            block_expansion=dense_block_expansion,
            num_blocks=dense_num_blocks,
            max_features=dense_max_features,
            num_kp=num_kp,
            feature_channel=self.reshape_channel,
            reshape_depth=reshape_depth,
            compress=dense_compress,
        )
        self.first = SameBlock2d(image_channel, block_expansion, kernel_size=3)
        self.down_blocks = nn.ModuleList(
            DownBlock2d(
                min(max_features, block_expansion * 2**i), min(max_features, block_expansion * 2 ** (i + 1))
            )
            for i in range(num_down_blocks)
        )
        down_out = min(max_features, block_expansion * 2**num_down_blocks)
        self.second = nn.Conv2d(down_out, max_features, kernel_size=1)
        self.resblocks_3d = nn.Sequential()
        for i in range(num_resblocks):
            self.resblocks_3d.add_module(f"3dr{i}", ResBlock3d(self.reshape_channel))
        out_features = block_expansion * 2**num_down_blocks
        self.third = SameBlock2d(max_features, out_features, kernel_size=3, lrelu=True)
        self.fourth = nn.Conv2d(out_features, out_features, kernel_size=1)
        self.decoder = SPADEDecoder(out_features, block_expansion, spade_hidden)

    def prepare(self, source_image: torch.Tensor, kp_source: torch.Tensor) -> GeneratorSource:
        """Encoder + 3D residual blocks + dense-motion source inputs, once per source image (1, 3, H, W)."""
        out = self.first(source_image)
        for block in self.down_blocks:
            out = block(out)
        out = self.second(out)
        b, _, h, w = out.shape
        feature_3d = self.resblocks_3d(out.view(b, self.reshape_channel, self.reshape_depth, h, w))
        return GeneratorSource(feature_3d, self.dense_motion_network.prepare(feature_3d, kp_source))

    @property
    def image_dtype(self) -> torch.dtype:
        """Precision of the image-space layers (``third``, ``fourth`` and the SPADE decoder)."""
        return self.fourth.weight.dtype

    def set_image_precision(self, dtype: torch.dtype) -> None:
        """Run the image-space layers, most of a frame's arithmetic, in ``dtype`` (float16 or bfloat16 where
        the device computes it natively); the warp (keypoints, dense motion, grid sampling) stays float32,
        since small errors in the deformation field move whole regions of the face."""
        for module in (self.third, self.fourth, self.decoder):
            module.to(dtype)

    def render(self, src: GeneratorSource, kp_driving: torch.Tensor) -> torch.Tensor:
        """Driving keypoints (B, K, 3) -> float32 images (B, 3, H, W) in [0, 1]."""
        deformation, occlusion = self.dense_motion_network.forward_driving(src.motion, kp_driving)
        b = kp_driving.shape[0]
        _, c, d, h, w = src.feature_3d.shape
        warped = F.grid_sample(src.feature_3d.expand(b, c, d, h, w), deformation, align_corners=False)
        dt = self.image_dtype
        out = self.fourth(self.third(warped.reshape(b, c * d, h, w).to(dt)))
        if out.shape[2:] != occlusion.shape[2:]:
            occlusion = F.interpolate(occlusion, size=out.shape[2:], mode="bilinear")
        return self.decoder(out * occlusion.to(dt)).float()

    def forward(
        self, source_image: torch.Tensor, kp_driving: torch.Tensor, kp_source: torch.Tensor
    ) -> torch.Tensor:
        """SadTalker's call: the (repeated) source volume is recomputed for every batch of frames."""
        return self.render(self.prepare(source_image, kp_source), kp_driving)
