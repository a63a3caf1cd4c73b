"""cpbd (pinned 1.0.7): the CPBD sharpness function the authors' ``eval.py`` calls.

The package's ``cpbd/compute.py`` imports ``scipy.ndimage.imread`` at module level for its command line;
SciPy removed ``imread`` in 1.2, so the import fails on any SciPy the rest of the stack runs on. A
placeholder attribute (never called by ``compute``) lets the module import unchanged. ``compute`` here
is the package's with its edge-width loop vectorised (the package's private histogram step reused).
"""

from __future__ import annotations

import sys
from types import ModuleType

import numpy as np


def check_internals() -> None:
    """Raise naming this module when ``cpbd.compute`` no longer offers ``compute(image)``."""
    module = cpbd_module()
    for name in ("compute", "marziliano_method", "_calculate_sharpness_metric"):
        if not callable(getattr(module, name, None)):
            raise RuntimeError(
                f"cpbd no longer defines cpbd.compute.{name}; update {__name__} for this version"
            )


def cpbd_module() -> ModuleType:
    """``cpbd.compute``, importable on today's SciPy."""
    import scipy.ndimage

    if "cpbd.compute" not in sys.modules and not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None  # type: ignore[attr-defined]  # only the package's CLI would call it
    import cpbd  # noqa: F401

    return sys.modules["cpbd.compute"]


WIDTH_CAP = 100  # the package walks at most 101 pixels each side: a longer ramp measures 101


def _runs_ending_at(cont: np.ndarray) -> np.ndarray:
    """Per row, the number of consecutive True ending at each column (0 where False)."""
    idx = np.arange(cont.shape[1])
    last_false = np.maximum.accumulate(np.where(cont, -1, idx), axis=1)
    return idx - last_false


def edge_widths(edges: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The package's ``marziliano_method`` without its per-pixel Python loops, equal to it bit for bit.

    Its quirks are kept, since they decide CPBD's numbers: only edges whose gradient angle rounds to 0 or
    +-180 degrees get a width (the others stay 0, i.e. no edge); a pixel with a zero x-gradient counts as
    0 degrees, so vertical-gradient edges are measured horizontally; the border rows and columns get none;
    each side walks while the intensity keeps falling (180) or rising (0), at most 101 pixels; the image
    with every angle 0 has no widths at all."""
    gradient_y, gradient_x = np.gradient(image)
    with np.errstate(invalid="ignore", divide="ignore"):
        angles = np.where(gradient_x != 0, np.arctan2(gradient_y, gradient_x) * (180 / np.pi), 0.0)
    angles = np.where((gradient_x == 0) & (gradient_y == np.pi / 2), 90.0, angles)
    widths = np.zeros(image.shape)
    if not np.any(angles):
        return widths
    quantized = 45 * np.round(angles / 45)
    h, w = image.shape
    step = image[:, :-1] - image[:, 1:]  # step[:, i] = image[i] - image[i + 1]
    false_col = np.zeros((h, 1), dtype=bool)
    for sign, where in ((1, (quantized == 180) | (quantized == -180)), (-1, quantized == 0)):
        falling = sign * step > 0  # 180: intensity falls left to right on both sides; 0: it rises
        # left walk from col - 1 down: pixel i continues while image[i - 1] vs image[i] keeps the trend
        left = _runs_ending_at(np.concatenate([false_col, falling], axis=1))
        # right walk from col + 1 up: pixel j continues while image[j] vs image[j + 1] keeps the trend
        right = _runs_ending_at(np.concatenate([falling, false_col], axis=1)[:, ::-1])[:, ::-1]
        sel = np.zeros((h, w), dtype=bool)
        sel[1:-1, 1:-1] = where[1:-1, 1:-1] & (edges[1:-1, 1:-1] == 1)
        rows, cols = np.nonzero(sel)
        widths[rows, cols] = (
            np.minimum(left[rows, cols - 1], WIDTH_CAP) + 1 + np.minimum(right[rows, cols + 1], WIDTH_CAP) + 1
        )
    return widths


def compute(image: np.ndarray) -> float:
    """``cpbd.compute.compute(image)`` with :func:`edge_widths` for the package's edge-width loop (about
    90% of its time): the same Canny and Octave-Sobel edges and the same sharpness histogram."""
    from skimage.feature import canny

    module = cpbd_module()
    from cpbd.octave import sobel

    image = image.astype(np.float64)
    widths = edge_widths(sobel(image), image)
    return float(module._calculate_sharpness_metric(image, canny(image), widths))
