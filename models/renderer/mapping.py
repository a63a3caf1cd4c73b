"""SadTalker's MappingNet: a 27-frame window of 3DMM coefficients -> head pose bins, translation and
expression deltas of the canonical keypoints (replaces face-vid2vid's image head-pose estimator)."""

from __future__ import annotations

import torch
from torch import nn


class MappingNet(nn.Module):
    """(B, coeff_nc, 27) -> yaw/pitch/roll logits over ``num_bins`` (3 degree bins), t (3), exp (3K).

    A 7-tap conv then ``layer`` dilated (3) residual convs shrink the 27-frame window 27 -> 21 -> 15 ->
    9 -> 3 frames, averaged to one descriptor.
    """

    def __init__(
        self,
        coeff_nc: int = 70,
        descriptor_nc: int = 1024,
        layer: int = 3,
        num_kp: int = 15,
        num_bins: int = 66,
    ) -> None:
        super().__init__()
        self.layer = layer
        self.first = nn.Sequential(nn.Conv1d(coeff_nc, descriptor_nc, kernel_size=7, padding=0, bias=True))
        for i in range(layer):
            block = nn.Sequential(
                nn.LeakyReLU(0.1),
                nn.Conv1d(descriptor_nc, descriptor_nc, kernel_size=3, padding=0, dilation=3),
            )
            setattr(self, f"encoder{i}", block)
        self.pooling = nn.AdaptiveAvgPool1d(1)
        self.fc_roll = nn.Linear(descriptor_nc, num_bins)
        self.fc_pitch = nn.Linear(descriptor_nc, num_bins)
        self.fc_yaw = nn.Linear(descriptor_nc, num_bins)
        self.fc_t = nn.Linear(descriptor_nc, 3)
        self.fc_exp = nn.Linear(descriptor_nc, 3 * num_kp)
        self.coeff_nc = coeff_nc

    def forward(self, window: torch.Tensor) -> dict[str, torch.Tensor]:
        out = self.first(window)
        for i in range(self.layer):
            out = getattr(self, f"encoder{i}")(out) + out[:, :, 3:-3]
        out = self.pooling(out).flatten(1)
        return {
            "yaw": self.fc_yaw(out),
            "pitch": self.fc_pitch(out),
            "roll": self.fc_roll(out),
            "t": self.fc_t(out),
            "exp": self.fc_exp(out),
        }
