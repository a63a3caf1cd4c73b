"""Evaluation metrics as peers compute them, plus the paper's Table 1 for side-by-side reporting."""

from __future__ import annotations

import warnings

import numpy as np

from emotalker.configs.constants import FACE_INDICES, LIP_INDICES

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
    """Mean per-frame SSIM of two (T, H, W, 3) uint8 videos (skimage, channel axis last)."""
    from skimage.metrics import structural_similarity

    n = min(len(pred), len(gt))
    return float(
        np.mean([structural_similarity(pred[i], gt[i], channel_axis=-1, data_range=255) for i in range(n)])
    )


# ------------------------------------------------------------------------------------------------ CPBD
CPBD_BLOCK = 64  # edge blocks are 64 x 64 pixels
CPBD_EDGE_FRACTION = 0.002  # a block is an edge block above this fraction of (Canny) edge pixels
CPBD_BETA = 3.6  # slope of the probability-of-blur-detection psychometric function
CPBD_P_JNB = 0.63  # probability of blur detection at the just-noticeable blur width


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim == 3:
        img = img[..., :3] @ np.array([0.299, 0.587, 0.114])  # ITU-R 601 luma, as rgb2gray
    if img.ndim != 2:
        raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {np.shape(image)}")
    return img


def _vertical_sobel_edges(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thin vertical edges (horizontal gradient above 4x its mean energy, row-wise maxima) and gx."""
    from scipy.ndimage import sobel

    gx = sobel(gray, axis=1)
    energy = gx**2
    cutoff = 4.0 * energy.mean()
    left = np.pad(energy, ((0, 0), (1, 0)), mode="edge")[:, :-1]
    right = np.pad(energy, ((0, 0), (0, 1)), mode="edge")[:, 1:]
    edges = (energy > cutoff) & (energy >= left) & (energy >= right)
    edges[:, [0, -1]] = False
    return edges, gx


def _monotone_runs(gray: np.ndarray) -> dict[str, np.ndarray]:
    """Per pixel, how many steps the row keeps rising/falling to the right and to the left."""
    h, w = gray.shape
    d = np.diff(gray, axis=1)  # d[:, c] = I[c + 1] - I[c]
    runs = {k: np.zeros((h, w), dtype=np.int32) for k in ("up_r", "down_r", "up_l", "down_l")}
    for c in range(w - 2, -1, -1):  # right runs: from c towards c + 1, c + 2, ...
        runs["up_r"][:, c] = np.where(d[:, c] > 0, runs["up_r"][:, c + 1] + 1, 0)
        runs["down_r"][:, c] = np.where(d[:, c] < 0, runs["down_r"][:, c + 1] + 1, 0)
    for c in range(1, w):  # left runs: from c towards c - 1 while the value keeps falling (rising)
        runs["up_l"][:, c] = np.where(d[:, c - 1] > 0, runs["up_l"][:, c - 1] + 1, 0)
        runs["down_l"][:, c] = np.where(d[:, c - 1] < 0, runs["down_l"][:, c - 1] + 1, 0)
    return runs


def edge_widths(gray: np.ndarray) -> np.ndarray:
    """Marziliano edge widths (H, W): at each vertical edge pixel, the distance between the local
    extrema on either side along the row; 0 elsewhere."""
    gray = _gray(gray)
    edges, gx = _vertical_sobel_edges(gray)
    runs = _monotone_runs(gray)
    rising = runs["up_r"] + runs["up_l"]  # minimum on the left .. maximum on the right
    falling = runs["down_r"] + runs["down_l"]
    widths = np.where(gx > 0, rising, falling)
    return np.where(edges, widths, 0).astype(np.float64)


def _canny(gray: np.ndarray) -> np.ndarray:
    """Canny edges with image-relative thresholds (as MATLAB's default: sigma sqrt(2), the high
    threshold leaves 70% of pixels below it, low = 0.4 x high), so blur or contrast cannot remove
    every edge block the way fixed thresholds would."""
    from scipy.ndimage import gaussian_filter, sobel
    from skimage.feature import canny

    sigma = float(np.sqrt(2.0))
    smooth = gaussian_filter(gray, sigma)
    magnitude = np.hypot(sobel(smooth, axis=0), sobel(smooth, axis=1))
    high = float(np.quantile(magnitude, 0.7))
    if high <= 1e-9:
        return np.zeros(gray.shape, dtype=bool)
    return canny(gray, sigma=sigma, low_threshold=0.4 * high, high_threshold=high)


def cpbd(image: np.ndarray) -> float:
    """No-reference sharpness: the cumulative probability of blur detection (Narvekar & Karam 2011).

    Edge blocks (64 x 64 with enough Canny edges) set a just-noticeable blur width from their contrast
    (5 px up to contrast 50, else 3 px); each edge's blur detection probability is
    1 - exp(-(width / w_JNB) ** 3.6); CPBD is the fraction of edges at or below P_JNB = 63%.
    Higher is sharper; NaN when the image has no edge block.
    """
    gray = _gray(image)
    h, w = gray.shape
    canny_edges = _canny(gray)
    widths = edge_widths(gray)
    min_edges = CPBD_EDGE_FRACTION * CPBD_BLOCK * CPBD_BLOCK
    probabilities = []
    for y in range(0, h - CPBD_BLOCK + 1, CPBD_BLOCK):
        for x in range(0, w - CPBD_BLOCK + 1, CPBD_BLOCK):
            block = (slice(y, y + CPBD_BLOCK), slice(x, x + CPBD_BLOCK))
            if canny_edges[block].sum() <= min_edges:
                continue
            contrast = gray[block].max() - gray[block].min()
            w_jnb = 5.0 if contrast <= 50 else 3.0
            wb = widths[block]
            wb = wb[wb > 0]
            probabilities.append(1.0 - np.exp(-((wb / w_jnb) ** CPBD_BETA)))
    if not probabilities:
        return float("nan")
    p = np.concatenate(probabilities)
    return float((p <= CPBD_P_JNB).mean()) if p.size else float("nan")


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
