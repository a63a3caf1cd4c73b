"""Evaluation metrics as peers compute them, plus the paper's Table 1 for side-by-side reporting."""

from __future__ import annotations

import numpy as np

from emotalker.constants import FACE_INDICES, LIP_INDICES

# Table 1 of the paper (MEAD, neutral reference)
PAPER_TABLE1: dict[str, dict[str, float]] = {
    "EmoTalker (paper)": {
        "SSIM": 0.705,
        "CPBD": 0.362,
        "F-LMD": 4.348,
        "M-LMD": 5.139,
        "Sync": 2.304,
        "EmoAcc": 0.425,
    },
    "SadTalker (paper)": {
        "SSIM": 0.701,
        "CPBD": 0.353,
        "F-LMD": 4.764,
        "M-LMD": 5.620,
        "Sync": 2.120,
        "EmoAcc": 0.296,
    },
}
MOUTH = slice(48, 68)


def landmark_distance(pred: np.ndarray, gt: np.ndarray, points: slice | None = None) -> float:
    """LMD as peers compute it: each frame's 68 landmarks mean-centred, no scale normalisation,
    sum of Euclidean distances / (valid frames x points). Frames with NaN in either are skipped."""
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must both be (T, 68, 2), got {pred.shape} and {gt.shape}")
    p = pred - np.nanmean(pred, axis=1, keepdims=True)
    g = gt - np.nanmean(gt, axis=1, keepdims=True)
    if points is not None:
        p, g = p[:, points], g[:, points]
    valid = np.isfinite(p).all(axis=(1, 2)) & np.isfinite(g).all(axis=(1, 2))
    if not valid.any():
        return float("nan")
    d = np.linalg.norm(p[valid] - g[valid], axis=-1)
    return float(d.sum() / (valid.sum() * p.shape[1]))


def f_lmd(pred: np.ndarray, gt: np.ndarray) -> float:
    """Face LMD over all 68 points."""
    return landmark_distance(pred, gt)


def m_lmd(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mouth LMD over points 48-67 (0-based)."""
    return landmark_distance(pred, gt, MOUTH)


def coefficient_l2(pred: np.ndarray, gt: np.ndarray, indices: tuple[int, ...]) -> float:
    """Mean per-frame Euclidean distance over the given motion dimensions (frames aligned by truncation)."""
    n = min(len(pred), len(gt))
    if n == 0:
        raise ValueError("empty motion sequence")
    diff = pred[:n][:, list(indices)] - gt[:n][:, list(indices)]
    return float(np.linalg.norm(diff, axis=1).mean())


def lip_l2(pred: np.ndarray, gt: np.ndarray) -> float:
    return coefficient_l2(pred, gt, LIP_INDICES)


def face_l2(pred: np.ndarray, gt: np.ndarray) -> float:
    return coefficient_l2(pred, gt, FACE_INDICES)


def accuracy(pred_labels: np.ndarray, labels: np.ndarray) -> float:
    if len(labels) == 0:
        return float("nan")
    return float((np.asarray(pred_labels) == np.asarray(labels)).mean())


def ssim_video(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-frame SSIM of two (T, H, W, 3) uint8 videos (skimage, channel axis last)."""
    from skimage.metrics import structural_similarity

    n = min(len(pred), len(gt))
    return float(
        np.mean([structural_similarity(pred[i], gt[i], channel_axis=-1, data_range=255) for i in range(n)])
    )
