"""Building blocks of the face-vid2vid / SadTalker renderer (2D and 3D conv blocks, SPADE, grids).

Module and parameter names follow SadTalker's ``src/facerender/modules`` so released state dicts load
as they are: ``conv`` / ``norm`` / ``pool`` inside blocks, ``conv1``/``norm1`` in residual blocks,
``mlp_shared.0`` / ``mlp_gamma`` / ``mlp_beta`` in SPADE and spectral-normalised convs
(``weight_orig`` / ``weight_u`` / ``weight_v``) in SPADE residual blocks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def coordinate_grid_3d(d: int, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
    """(d, h, w, 3) grid of (x, y, z) in [-1, 1], x along width: ``grid_sample``'s convention."""
    kw = {"device": like.device, "dtype": like.dtype}
    x = torch.linspace(-1.0, 1.0, w, **kw) if w > 1 else torch.zeros(1, **kw)
    y = torch.linspace(-1.0, 1.0, h, **kw) if h > 1 else torch.zeros(1, **kw)
    z = torch.linspace(-1.0, 1.0, d, **kw) if d > 1 else torch.zeros(1, **kw)
    zz, yy, xx = torch.meshgrid(z, y, x, indexing="ij")
    return torch.stack([xx, yy, zz], dim=-1)


def keypoint_gaussians(kp: torch.Tensor, grid: torch.Tensor, variance: float = 0.01) -> torch.Tensor:
    """Keypoints (B, K, 3) -> Gaussian heatmaps (B, K, d, h, w) on ``grid`` (d, h, w, 3)."""
    diff = grid[None, None] - kp[:, :, None, None, None, :]
    return torch.exp(-0.5 * diff.pow(2).sum(-1) / variance)


class DownBlock2d(nn.Module):
    """conv -> BN -> ReLU -> 2x2 average pool."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.pool = nn.AvgPool2d(kernel_size=(2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.norm(self.conv(x))))


class DownBlock3d(nn.Module):
    """3D conv -> BN -> ReLU -> (1, 2, 2) average pool: depth is kept."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)
        self.pool = nn.AvgPool3d(kernel_size=(1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm(self.conv(x)))
        if out.dtype == torch.bfloat16 and out.device.type == "cpu":  # no bfloat16 3D pooling on CPU
            return self.pool(out.float()).to(out.dtype)
        return self.pool(out)


class UpBlock2d(nn.Module):
    """Nearest 2x upsampling -> conv -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm2d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=2.0))))


class UpBlock3d(nn.Module):
    """Nearest (1, 2, 2) upsampling -> 3D conv -> BN -> ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv3d(cin, cout, kernel_size=3, padding=1)
        self.norm = nn.BatchNorm3d(cout, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.norm(self.conv(F.interpolate(x, scale_factor=(1.0, 2.0, 2.0)))))


class SameBlock2d(nn.Module):
    """conv -> BN -> ReLU (or LeakyReLU) at the input resolution."""

    def __init__(self, cin: int, cout: int, kernel_size: int = 3, lrelu: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel_size=kernel_size, padding=kernel_size // 2)
        self.norm = nn.BatchNorm2d(cout, affine=True)
        self.ac = nn.LeakyReLU() if lrelu else nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ac(self.norm(self.conv(x)))


class ResBlock2d(nn.Module):
    """Pre-activation residual block (BN -> ReLU -> conv, twice)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm2d(channels, affine=True)
        self.norm2 = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class ResBlock3d(nn.Module):
    """Pre-activation 3D residual block; the generator's appearance volume goes through six of them."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.conv2 = nn.Conv3d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.BatchNorm3d(channels, affine=True)
        self.norm2 = nn.BatchNorm3d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(F.relu(self.norm1(x)))
        return x + self.conv2(F.relu(self.norm2(out)))


class ResBottleneck(nn.Module):
    """1x1 -> 3x3 (strided) -> 1x1 bottleneck with a strided 1x1 skip (head-pose estimator)."""

    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        mid = channels // 4
        self.conv1 = nn.Conv2d(channels, mid, kernel_size=1)
        self.conv2 = nn.Conv2d(mid, mid, kernel_size=3, padding=1, stride=stride)
        self.conv3 = nn.Conv2d(mid, channels, kernel_size=1)
        self.norm1 = nn.BatchNorm2d(mid, affine=True)
        self.norm2 = nn.BatchNorm2d(mid, affine=True)
        self.norm3 = nn.BatchNorm2d(channels, affine=True)
        self.stride = stride
        if stride != 1:
            self.skip = nn.Conv2d(channels, channels, kernel_size=1, stride=stride)
            self.norm4 = nn.BatchNorm2d(channels, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = F.relu(self.norm2(self.conv2(out)))
        out = self.norm3(self.conv3(out))
        if self.stride != 1:
            x = self.norm4(self.skip(x))
        return F.relu(out + x)


class AntiAliasDownsample(nn.Module):
    """Gaussian blur then stride: band-limited downscaling of the image for the keypoint detector."""

    def __init__(self, channels: int, scale: float) -> None:
        super().__init__()
        sigma = (1 / scale - 1) / 2
        size = 2 * round(sigma * 4) + 1
        self.ka = size // 2
        self.kb = self.ka - 1 if size % 2 == 0 else self.ka
        coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
        g = torch.exp(-(coords**2) / (2 * sigma**2))
        kernel = g[:, None] * g[None, :]
        kernel = (kernel / kernel.sum()).expand(channels, 1, size, size).contiguous()
        self.register_buffer("weight", kernel)  # saved in the released checkpoints
        self.groups = channels
        self.step = int(1 / scale)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.scale == 1.0:
            return x
        out = F.pad(x, (self.ka, self.kb, self.ka, self.kb))
        out = F.conv2d(out, self.weight.to(out.dtype), groups=self.groups)
        return out[:, :, :: self.step, :: self.step]


class SPADE(nn.Module):
    """Spatially-adaptive normalisation: instance norm modulated by gamma/beta maps from a label map."""

    def __init__(self, norm_nc: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        self.param_free_norm = nn.InstanceNorm2d(norm_nc, affine=False)
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, kernel_size=3, padding=1), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor, segmap: torch.Tensor) -> torch.Tensor:
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        actv = self.mlp_shared(segmap)
        return self.param_free_norm(x) * (1 + self.mlp_gamma(actv)) + self.mlp_beta(actv)


class SPADEResnetBlock(nn.Module):
    """SPADE residual block with spectral-normalised convs (norm_G ``spadespectralinstance``)."""

    def __init__(self, fin: int, fout: int, label_nc: int, hidden: int = 128) -> None:
        super().__init__()
        sn = nn.utils.spectral_norm
        self.learned_shortcut = fin != fout
        fmid = min(fin, fout)
        self.conv_0 = sn(nn.Conv2d(fin, fmid, kernel_size=3, padding=1))
        self.conv_1 = sn(nn.Conv2d(fmid, fout, kernel_size=3, padding=1))
        if self.learned_shortcut:
            self.conv_s = sn(nn.Conv2d(fin, fout, kernel_size=1, bias=False))
        self.norm_0 = SPADE(fin, label_nc, hidden)
        self.norm_1 = SPADE(fmid, label_nc, hidden)
        if self.learned_shortcut:
            self.norm_s = SPADE(fin, label_nc, hidden)

    def forward(self, x: torch.Tensor, seg: torch.Tensor) -> torch.Tensor:
        x_s = self.conv_s(self.norm_s(x, seg)) if self.learned_shortcut else x
        dx = self.conv_0(F.leaky_relu(self.norm_0(x, seg), 0.2))
        dx = self.conv_1(F.leaky_relu(self.norm_1(dx, seg), 0.2))
        return x_s + dx


def bake_spectral_norm(module: nn.Module) -> nn.Module:
    """Replace spectral-norm reparametrisations by the plain normalised weight (inference only).

    In eval mode spectral norm divides by sigma = u^T W v with the stored u, v on every forward; baking
    does that once. The state dict then has ``weight`` instead of ``weight_orig/_u/_v``.
    """
    for m in list(module.modules()):
        if "weight_orig" in dict(m.named_parameters(recurse=False)):  # what spectral_norm registers
            nn.utils.remove_spectral_norm(m)
    return module


def fold_batchnorm(module: nn.Module) -> nn.Module:
    """Fold eval-mode BatchNorm into the conv before it (conv -> norm blocks), in place (inference only).

    Same outputs up to float rounding, one pass over each feature map fewer; pre-activation residual
    blocks (norm before conv) are left as they are.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    bn = nn.modules.batchnorm._BatchNorm
    for m in list(module.modules()):
        for conv_name in ("conv", "compress"):  # blocks: conv -> norm; dense motion: compress -> norm
            conv, norm = getattr(m, conv_name, None), getattr(m, "norm", None)
            if isinstance(conv, (nn.Conv2d, nn.Conv3d)) and isinstance(norm, bn):
                setattr(m, conv_name, fuse_conv_bn_eval(conv.eval(), norm.eval()))
                m.norm = nn.Identity()
    return module
