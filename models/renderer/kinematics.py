"""Keypoint transformation of face-vid2vid / SadTalker: canonical keypoints -> posed, expressive ones.

x = R(yaw, pitch, roll) x_c + t + delta, with the angles read from 66 three-degree bins (soft expectation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# SadTalker converts degrees with 3.14, not pi; kept so released weights see the rotations they learned.
_DEG = 3.14 / 180.0


def bins_to_degrees(logits: torch.Tensor) -> torch.Tensor:
    """(B, 66) pose logits -> degrees: softmax expectation over bins of 3 degrees from -99."""
    idx = torch.arange(logits.shape[1], device=logits.device, dtype=logits.dtype)
    return (F.softmax(logits, dim=1) * idx).sum(dim=1) * 3 - 99


def rotation_matrix(yaw: torch.Tensor, pitch: torch.Tensor, roll: torch.Tensor) -> torch.Tensor:
    """(B,) degrees -> (B, 3, 3) = R_pitch(x axis) @ R_yaw(y axis) @ R_roll(z axis)."""
    y, p, r = yaw * _DEG, pitch * _DEG, roll * _DEG
    one, zero = torch.ones_like(y), torch.zeros_like(y)

    def mat(*rows: torch.Tensor) -> torch.Tensor:
        return torch.stack(rows, dim=1).view(-1, 3, 3)

    rp = mat(one, zero, zero, zero, p.cos(), -p.sin(), zero, p.sin(), p.cos())
    ry = mat(y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos())
    rr = mat(r.cos(), -r.sin(), zero, r.sin(), r.cos(), zero, zero, zero, one)
    return rp @ ry @ rr


def transform_keypoints(kp_canonical: torch.Tensor, he: dict[str, torch.Tensor]) -> torch.Tensor:
    """Canonical (S, K, 3) keypoints + mapping output (B rows) -> (B, K, 3) driven keypoints.

    Only the vertical translation is used (SadTalker zeroes t_x and t_z).
    """
    rot = rotation_matrix(
        bins_to_degrees(he["yaw"]), bins_to_degrees(he["pitch"]), bins_to_degrees(he["roll"])
    )
    kp = torch.einsum("bmp,bkp->bkm", rot, kp_canonical.expand(rot.shape[0], -1, -1))
    t = he["t"] * torch.tensor([0.0, 1.0, 0.0], device=he["t"].device, dtype=he["t"].dtype)
    return kp + t[:, None, :] + he["exp"].view(rot.shape[0], -1, 3)
