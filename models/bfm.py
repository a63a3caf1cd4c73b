"""The landmark part of Deep3DFace's Basel Face Model (``BFM_model_front.mat``), for previews.

Only the 68 keypoint rows of the mean shape and of the identity/expression bases are kept, so loading
is cheap and projecting a whole clip costs O(T * 68). Conventions follow Deep3DFaceRecon_pytorch's
``ParametricFaceModel`` (recentred mean shape, Euler angles, camera at distance 10, focal 1015, 224 crop).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

ID_DIM = 80
EXP_DIM = 64
N_KEYPOINTS = 68
CROP_SIZE = 224
FOCAL = 1015.0
CAMERA_DISTANCE = 10.0
REQUIRED_KEYS = ("meanshape", "idBase", "exBase", "keypoints")

BFM_HELP = (
    "BFM_model_front.mat is not distributed: follow the Deep3DFaceRecon_pytorch README (request "
    "01_MorphableModel.mat of the Basel Face Model 2009 and download Exp_Pca.bin, put both in its BFM/ "
    "folder; its util/load_mats.py builds BFM/BFM_model_front.mat), then set face.bfm_path to that file "
    "(or leave face.bfm_path unset for the static preview)"
)


@dataclass(frozen=True)
class BFMLandmarks:
    """Keypoint rows of the recentred BFM: mean (K, 3), id_base (K, 3, 80), exp_base (K, 3, 64)."""

    mean: np.ndarray
    id_base: np.ndarray
    exp_base: np.ndarray
    path: Path | None = None


def load_bfm(path: str | Path) -> BFMLandmarks:
    """Read ``meanshape`` (1, 3N), ``idBase`` (3N, 80), ``exBase`` (3N, 64), ``keypoints`` (1, 68; 1-based).

    The mean shape is recentred on its mean vertex over all N vertices (Deep3DFace's ``recenter=True``)
    before the 68 keypoint rows are taken.
    """
    import scipy.io

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"Basel Face Model not found at {p} (config key face.bfm_path). {BFM_HELP}")
    try:
        present = {name for name, _, _ in scipy.io.whosmat(str(p))}
    except Exception as exc:  # scipy raises several types for a non-.mat file
        raise ValueError(f"{p} is not a readable MATLAB .mat file ({exc}); {BFM_HELP}") from exc
    missing = [k for k in REQUIRED_KEYS if k not in present]
    if missing:
        raise ValueError(
            f"{p} lacks the BFM arrays {missing} (has {sorted(present)}); expected Deep3DFace's "
            f"BFM_model_front.mat with {list(REQUIRED_KEYS)}"
        )
    mat = scipy.io.loadmat(str(p), variable_names=list(REQUIRED_KEYS))
    mean = np.asarray(mat["meanshape"], dtype=np.float64).reshape(-1)
    if mean.size == 0 or mean.size % 3:
        raise ValueError(f"{p}: meanshape must hold 3N values, got shape {mat['meanshape'].shape}")
    n = mean.size // 3
    bases = {}
    for key, dim in (("idBase", ID_DIM), ("exBase", EXP_DIM)):
        base = np.asarray(mat[key], dtype=np.float64)
        if base.shape != (3 * n, dim):
            raise ValueError(f"{p}: {key} must be ({3 * n}, {dim}) for {n} vertices, got {base.shape}")
        bases[key] = base
    kp = np.asarray(mat["keypoints"]).reshape(-1).astype(np.int64) - 1
    if kp.size != N_KEYPOINTS or kp.min() < 0 or kp.max() >= n:
        raise ValueError(f"{p}: keypoints must be {N_KEYPOINTS} 1-based vertex indices in 1..{n}")
    verts = mean.reshape(n, 3)
    verts = verts - verts.mean(axis=0, keepdims=True)
    rows = (3 * kp[:, None] + np.arange(3)[None]).reshape(-1)
    return BFMLandmarks(
        mean=verts[kp],
        id_base=bases["idBase"][rows].reshape(N_KEYPOINTS, 3, ID_DIM),
        exp_base=bases["exBase"][rows].reshape(N_KEYPOINTS, 3, EXP_DIM),
        path=p,
    )


def euler_rotation(angle: np.ndarray) -> np.ndarray:
    """(T, 3) radians (x, y, z) -> (T, 3, 3) R = Rz @ Ry @ Rx (points rotate as column vectors R @ v)."""
    a = np.asarray(angle, dtype=np.float64)
    cx, cy, cz = np.cos(a).T
    sx, sy, sz = np.sin(a).T
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], axis=-1).reshape(-1, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], axis=-1).reshape(-1, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], axis=-1).reshape(-1, 3, 3)
    return rz @ ry @ rx


def project_landmarks(
    bfm: BFMLandmarks,
    id_coeff: np.ndarray,
    exp: np.ndarray,
    angle: np.ndarray,
    trans: np.ndarray,
    *,
    focal: float = FOCAL,
    camera_distance: float = CAMERA_DISTANCE,
    crop_size: int = CROP_SIZE,
) -> np.ndarray:
    """Landmarks (T, K, 2) in the aligned crop's pixels (x right, y down) for each frame's coefficients.

    Convention (Deep3DFace): v = mean + idBase @ id + exBase @ exp; v' = v @ (Rz Ry Rx)^T + trans;
    z_cam = camera_distance - v'_z; (u, w) = focal * (x, y) / z_cam + crop_size / 2; row = crop_size - 1 - w.
    Points at or behind the camera come out as NaN.
    """
    id_coeff = np.asarray(id_coeff, dtype=np.float64).reshape(-1)
    exp = np.asarray(exp, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    trans = np.asarray(trans, dtype=np.float64)
    t = exp.shape[0] if exp.ndim == 2 else -1
    if id_coeff.shape != (bfm.id_base.shape[2],):
        raise ValueError(f"id_coeff must be ({bfm.id_base.shape[2]},), got {id_coeff.shape}")
    for name, arr, dim in (("exp", exp, bfm.exp_base.shape[2]), ("angle", angle, 3), ("trans", trans, 3)):
        if arr.shape != (t, dim):
            raise ValueError(f"{name} must be (T, {dim}) with T = len(exp), got {arr.shape}")
    shape = bfm.mean + bfm.id_base @ id_coeff  # (K, 3)
    verts = shape[None] + np.einsum("kcj,tj->tkc", bfm.exp_base, exp)  # (T, K, 3)
    verts = np.einsum("tkj,tij->tki", verts, euler_rotation(angle)) + trans[:, None, :]
    z = camera_distance - verts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(z > 1e-6, z, np.nan)
        u = focal * verts[..., 0] / z + crop_size / 2
        w = focal * verts[..., 1] / z + crop_size / 2
    return np.stack([u, crop_size - 1 - w], axis=-1).astype(np.float32)
