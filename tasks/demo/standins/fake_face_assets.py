"""Tiny-effort stand-ins for the real face models, written in the real file formats.

Tests and the demo exercise the real loading code paths (Deep3DFace ``epoch_20.pth``,
``similarity_Lm3D_all.mat``, face-alignment's torch hub cache) without the real weights, which
cannot be downloaded here. The networks are randomly initialised with the right architectures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io
import torch

from emotalker.models.deep3dface import ReconNet
from emotalker.tasks.features.face_coeffs import FA_FILES


def synthetic_lm3d_68() -> np.ndarray:
    """A plausible 68-point mean face (x right, y up, z towards the camera, ~BFM template units)."""
    pts = np.zeros((68, 3))
    # jaw 0-16: lower half-ellipse from the left temple through the chin to the right temple
    a = np.linspace(0.0, np.pi, 17)
    pts[0:17] = np.stack([-0.72 * np.cos(a), 0.22 - 0.95 * np.sin(a), -0.35 + 0.3 * np.sin(a)], axis=1)
    # brows 17-21 (image left) and 22-26 (mirror)
    bx = np.linspace(-0.58, -0.12, 5)
    brow = np.stack([bx, 0.46 + 0.06 * np.sin(np.linspace(0, np.pi, 5)), np.full(5, 0.12)], axis=1)
    pts[17:22] = brow
    pts[22:27] = brow[::-1] * np.array([-1, 1, 1])
    # nose bridge 27-30 and lower nose 31-35
    pts[27:31] = np.stack([np.zeros(4), np.linspace(0.34, 0.02, 4), np.linspace(0.22, 0.5, 4)], axis=1)
    pts[31:36] = np.stack(
        [np.linspace(-0.16, 0.16, 5), np.array([-0.06, -0.09, -0.1, -0.09, -0.06]), np.full(5, 0.3)], axis=1
    )
    # eyes 36-41 and 42-47: corner, two top, corner, two bottom
    eye = np.array([[-0.46, 0.3], [-0.38, 0.34], [-0.24, 0.34], [-0.15, 0.3], [-0.24, 0.26], [-0.38, 0.26]])
    pts[36:42, :2] = eye
    pts[42:48, :2] = eye[[3, 2, 1, 0, 5, 4]] * np.array([-1, 1])
    pts[36:48, 2] = 0.1
    # outer mouth 48-59 and inner 60-67 (corners 48, 54)
    ang = np.linspace(np.pi, -np.pi, 13)[:-1]
    pts[48:60] = np.stack([0.26 * np.cos(ang), -0.36 + 0.08 * np.sin(ang), np.full(12, 0.1)], axis=1)
    ang_in = np.linspace(np.pi, -np.pi, 9)[:-1]
    pts[60:68] = np.stack([0.2 * np.cos(ang_in), -0.36 + 0.03 * np.sin(ang_in), np.full(8, 0.1)], axis=1)
    pts[48:68, 2] = 0.1
    return pts


def project_template(lm3d_68: np.ndarray, center: tuple[float, float], scale: float) -> np.ndarray:
    """Frontal orthographic image landmarks (68, 2) of a 3D template (y flipped to image rows)."""
    x = center[0] + scale * lm3d_68[:, 0]
    y = center[1] - scale * lm3d_68[:, 1]
    return np.stack([x, y], axis=1).astype(np.float32)


def random_recon_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A ReconNet state dict with random backbone and small non-zero heads (outputs vary per image)."""
    torch.manual_seed(seed)
    net = ReconNet()
    for layer in net.final_layers:
        torch.nn.init.normal_(layer.weight, std=0.02)
        torch.nn.init.normal_(layer.bias, std=0.02)
    return net.state_dict()


def _fake_s3fd_state(seed: int, fires: bool) -> dict[str, torch.Tensor]:
    """Random S3FD whose class heads are constant: only the coarsest level (stride 128) "sees" a face.

    A fully random detector scores ~half of all anchors as faces, making NMS and FAN run on
    thousands of boxes; constant heads keep it to a few image-sized boxes (or none when not ``fires``).
    """
    from face_alignment.detection.sfd.net_s3fd import s3fd

    torch.manual_seed(seed)
    net = s3fd()
    heads = [
        "conv3_3_norm_mbox_conf",
        "conv4_3_norm_mbox_conf",
        "conv5_3_norm_mbox_conf",
        "fc7_mbox_conf",
        "conv6_2_mbox_conf",
        "conv7_2_mbox_conf",
    ]
    with torch.no_grad():
        for name in heads:
            conv = getattr(net, name)
            conv.weight.zero_()
            conv.bias.zero_()
            conv.bias[:-1] = 10.0  # background
            if name == heads[-1] and fires:
                conv.bias[:-1] = 0.0
                conv.bias[-1] = 2.0  # face probability 0.88 everywhere at stride 128
        for name in (
            "conv3_3_norm_mbox_loc",
            "conv4_3_norm_mbox_loc",
            "conv5_3_norm_mbox_loc",
            "fc7_mbox_loc",
            "conv6_2_mbox_loc",
            "conv7_2_mbox_loc",
        ):
            getattr(net, name).weight.zero_()
            getattr(net, name).bias.zero_()
    return net.state_dict()


def _fake_fan_state(seed: int) -> dict[str, torch.Tensor]:
    from face_alignment.models import FAN

    torch.manual_seed(seed)
    return FAN(4).state_dict()


def write_fake_face_assets(
    root: Path, torch_home: Path, seed: int = 0, detector_fires: bool = True
) -> dict[str, Path]:
    """Write fake ``epoch_20.pth``, ``similarity_Lm3D_all.mat`` and face-alignment's hub files.

    Returns paths keyed ``checkpoint``, ``lm3d_mat``, ``torch_home``, ``fa_dir``, ``sfd``, ``fan``.
    With ``TORCH_HOME=torch_home`` face-alignment finds its models without network access.
    """
    root, torch_home = Path(root), Path(torch_home)
    root.mkdir(parents=True, exist_ok=True)
    fa_dir = torch_home / "hub" / "checkpoints"
    fa_dir.mkdir(parents=True, exist_ok=True)
    ckpt = root / "epoch_20.pth"
    torch.save({"net_recon": random_recon_state(seed), "epoch": 20}, ckpt)
    lm_mat = root / "similarity_Lm3D_all.mat"
    scipy.io.savemat(str(lm_mat), {"lm": synthetic_lm3d_68()})
    sfd = fa_dir / FA_FILES["sfd"]
    torch.save(_fake_s3fd_state(seed + 1, detector_fires), sfd)
    fan = fa_dir / FA_FILES["2DFAN-4"]
    torch.save(_fake_fan_state(seed + 2), fan)
    return {
        "checkpoint": ckpt,
        "lm3d_mat": lm_mat,
        "torch_home": torch_home,
        "fa_dir": fa_dir,
        "sfd": sfd,
        "fan": fan,
    }
