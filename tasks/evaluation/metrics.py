"""Evaluation metrics as peers compute them, plus the paper's Table 1 for side-by-side reporting."""

from __future__ import annotations

import warnings

import cv2
import numpy as np

from emotalker.configs.constants import FACE_INDICES, LIP_INDICES
from emotalker.tasks.adapters.cpbd import compute as cpbd_compute

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
# Table 5 of the paper, upper rows: audio + emotional driving frames as input
PAPER_TABLE5: dict[str, dict[str, float]] = {
    "EmoTalker, driving frames (paper)": {
        "SSIM": 0.695,
        "CPBD": 0.372,
        "F-LMD": 2.363,
        "M-LMD": 3.842,
        "Sync": 2.538,
        "EmoAcc": 0.762,
    },
}
MOUTH = slice(48, 68)


def landmark_distance(pred: np.ndarray, gt: np.ndarray, points: slice | None = None) -> float:
    """LMD as peers compute it: each frame's 68 landmarks mean-centred, no scale normalisation,
    sum of Euclidean distances / (valid frames x points). Frames with NaN in either are skipped."""
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must both be (T, 68, 2), got {pred.shape} and {gt.shape}")
    with warnings.catch_warnings():  # frames without landmarks are all-NaN: skipped below
        warnings.simplefilter("ignore", RuntimeWarning)
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
    """Mean per-frame SSIM of two (T, H, W, 3) uint8 RGB videos as the authors' eval.py computes it:
    ``pytorch_msssim.ssim`` (11 x 11 Gaussian window, sigma 1.5) on [0, 1] RGB tensors, ``data_range=1``."""
    import torch
    from pytorch_msssim import ssim

    n = min(len(pred), len(gt))
    if n == 0:
        raise ValueError("ssim_video: no frames to compare")
    x = torch.from_numpy(np.ascontiguousarray(pred[:n])).permute(0, 3, 1, 2).float() / 255.0
    y = torch.from_numpy(np.ascontiguousarray(gt[:n])).permute(0, 3, 1, 2).float() / 255.0
    return float(ssim(x, y, data_range=1.0, size_average=False).mean())


# ------------------------------------------------------------------------------------------------ CPBD
def gray_frame(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) RGB uint8 -> (H, W) float64 grayscale in 0-255 (OpenCV's luma, as eval.py reads frames);
    an (H, W) image is taken as it is."""
    img = np.asarray(image)
    if img.ndim == 3 and img.shape[-1] == 3:
        return cv2.cvtColor(img.astype(np.uint8), cv2.COLOR_RGB2GRAY).astype(np.float64)
    if img.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {img.shape}")
    return img.astype(np.float64)


def cpbd(image: np.ndarray) -> float:
    """CPBD sharpness of one frame as the ``cpbd`` package computes it on its grayscale (its edge-width
    loop vectorised, equal bit for bit); NaN when the frame has no edge block."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            value = cpbd_compute(gray_frame(image))
        except ZeroDivisionError:
            return float("nan")
    return value


def cpbd_video(frames: np.ndarray) -> float:
    """Mean CPBD over the frames of a (T, H, W, 3) video, ignoring frames without edge blocks."""
    values = [cpbd(f) for f in frames]
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def authors_lmd(pred: np.ndarray, gt: np.ndarray, points: slice | None = None) -> float:
    """LMD as the authors' ``eval.py`` computes it, for comparison with their Table 1: ``np.mean(np.abs(gt
    - gen))`` over the points and both coordinates, on raw coordinates (no centring, not Euclidean), so a
    shifted face counts. ``points`` = ``MOUTH`` (48-67) for M-LMD. Frames with NaN in either (no face
    found, which would stop the authors' script) are skipped; NaN when none is left."""
    pred, gt = np.asarray(pred, dtype=np.float64), np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape or pred.shape[-2:] != (68, 2):
        raise ValueError(f"landmarks must both be (T, 68, 2), got {pred.shape} and {gt.shape}")
    pred, gt = pred.reshape(-1, 68, 2), gt.reshape(-1, 68, 2)
    valid = np.isfinite(pred).all(axis=(1, 2)) & np.isfinite(gt).all(axis=(1, 2))
    if not valid.any():
        return float("nan")
    p, g = pred[valid], gt[valid]
    if points is not None:
        p, g = p[:, points], g[:, points]
    return float(np.mean(np.abs(g - p)))


def authors_f_lmd(pred: np.ndarray, gt: np.ndarray) -> float:
    """The authors' F-LMD: all 68 points."""
    return authors_lmd(pred, gt)


def authors_m_lmd(pred: np.ndarray, gt: np.ndarray) -> float:
    """The authors' M-LMD: points 48-67."""
    return authors_lmd(pred, gt, MOUTH)
