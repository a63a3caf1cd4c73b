"""A small random stand-in for Deep3DFace's ``BFM_model_front.mat``, in the real key layout.

The real file (Basel Face Model 2009, licence-restricted) cannot be downloaded here. This one has N
vertices, ``meanshape`` (1, 3N) with xyz interleaved per vertex, ``idBase`` (3N, 80), ``exBase``
(3N, 64) and 1-based ``keypoints`` (1, 68), all float32 / float64 like the original, plus a tiny ``tri``.
After Deep3DFace's recentring the 68 keypoint vertices are exactly a plausible mean face
(:func:`.fake_face_assets.synthetic_lm3d_68`, the fake ``similarity_Lm3D_all.mat``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from emotalker.tasks.demo.standins.fake_face_assets import synthetic_lm3d_68


def fake_bfm_arrays(
    n_vertices: int = 300, seed: int = 0, offset: tuple[float, float, float] = (0.05, -0.03, 0.2)
) -> dict[str, np.ndarray]:
    """The arrays of a fake BFM; the raw mean shape is offset, so recentring is observable."""
    if n_vertices < 69:
        raise ValueError("need more vertices than the 68 keypoints")
    rng = np.random.default_rng(seed)
    keypoints = rng.choice(n_vertices, size=68, replace=False)  # unsorted, like a real vertex list
    verts = rng.normal(scale=0.4, size=(n_vertices, 3))
    verts[keypoints] = synthetic_lm3d_68()
    others = np.setdiff1d(np.arange(n_vertices), keypoints)
    verts[others] -= verts.sum(axis=0) / len(others)  # all-vertex mean exactly zero
    verts += np.asarray(offset)
    return {
        "meanshape": verts.reshape(1, -1).astype(np.float32),
        "idBase": (0.01 * rng.normal(size=(3 * n_vertices, 80))).astype(np.float32),
        "exBase": (0.01 * rng.normal(size=(3 * n_vertices, 64))).astype(np.float32),
        "keypoints": (keypoints + 1).astype(np.float64).reshape(1, 68),
        "tri": np.array([[1, 2, 3], [2, 3, 4]], dtype=np.float64),
    }


def write_fake_bfm(path: Path, n_vertices: int = 300, seed: int = 0, drop_keys: tuple[str, ...] = ()) -> Path:
    """Write a fake ``BFM_model_front.mat`` (optionally without some keys, for error tests)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {k: v for k, v in fake_bfm_arrays(n_vertices, seed).items() if k not in drop_keys}
    scipy.io.savemat(str(path), arrays)
    return path
