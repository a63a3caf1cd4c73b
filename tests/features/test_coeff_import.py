"""Importing pre-extracted Deep3DFace / SadTalker coefficient files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.io

from emotalker.configs.constants import COEFF_SLICES
from emotalker.models.motion import coeffs_to_motion
from emotalker.tasks.features.coeff_import import (
    CoeffImportError,
    import_deep3dface_dir,
    import_deep3dface_landmarks,
    import_deep3dface_mat,
    import_sadtalker_coeff,
)


def _save_deep3dface(path: Path, coeffs: np.ndarray, lm68: np.ndarray | None = None) -> None:
    d = {k: coeffs[:, sl] for k, sl in COEFF_SLICES.items()}
    if lm68 is not None:
        d["lm68"] = lm68
    scipy.io.savemat(str(path), d)


def test_deep3dface_stacked_round_trip(tmp_path: Path) -> None:
    coeffs = np.random.default_rng(0).normal(size=(7, 257)).astype(np.float32)
    lm = np.random.default_rng(1).uniform(0, 224, size=(7, 68, 2)).astype(np.float32)
    _save_deep3dface(tmp_path / "clip.mat", coeffs, lm)
    out = import_deep3dface_mat(tmp_path / "clip.mat")
    assert out.shape == (7, 257) and out.dtype == np.float32
    np.testing.assert_array_equal(out, coeffs)
    np.testing.assert_array_equal(import_deep3dface_landmarks(tmp_path / "clip.mat"), lm)


def test_deep3dface_per_frame_files(tmp_path: Path) -> None:
    coeffs = np.random.default_rng(2).normal(size=(3, 257)).astype(np.float32)
    files = []
    for i in range(3):  # Deep3DFace writes one .mat per image, each key a (1, n) row
        files.append(tmp_path / f"{i:06d}.mat")
        scipy.io.savemat(str(files[-1]), {k: coeffs[i, sl] for k, sl in COEFF_SLICES.items()})
    np.testing.assert_array_equal(import_deep3dface_dir(files), coeffs)
    assert import_deep3dface_landmarks(files[0]) is None
    with pytest.raises(CoeffImportError, match="no Deep3DFace"):
        import_deep3dface_dir([])


def test_deep3dface_errors_name_file_and_key(tmp_path: Path) -> None:
    coeffs = np.zeros((2, 257), np.float32)
    d = {k: coeffs[:, sl] for k, sl in COEFF_SLICES.items()}
    del d["gamma"]
    scipy.io.savemat(str(tmp_path / "nogamma.mat"), d)
    with pytest.raises(CoeffImportError, match=r"nogamma\.mat.*\['gamma'\]"):
        import_deep3dface_mat(tmp_path / "nogamma.mat")
    d = {k: coeffs[:, sl] for k, sl in COEFF_SLICES.items()}
    d["exp"] = np.zeros((2, 63))
    scipy.io.savemat(str(tmp_path / "exp63.mat"), d)
    with pytest.raises(CoeffImportError, match="'exp' must have 64 columns"):
        import_deep3dface_mat(tmp_path / "exp63.mat")
    d = {k: coeffs[:, sl] for k, sl in COEFF_SLICES.items()}
    d["trans"] = np.zeros((3, 3))
    scipy.io.savemat(str(tmp_path / "frames.mat"), d)
    with pytest.raises(CoeffImportError, match="different frame counts"):
        import_deep3dface_mat(tmp_path / "frames.mat")
    with pytest.raises(FileNotFoundError, match="missing.mat"):
        import_deep3dface_mat(tmp_path / "missing.mat")
    (tmp_path / "junk.mat").write_bytes(b"junk")
    with pytest.raises(CoeffImportError, match="junk.mat"):
        import_deep3dface_mat(tmp_path / "junk.mat")


@pytest.mark.parametrize("width", [70, 73])
def test_sadtalker_coeff_takes_first_70(tmp_path: Path, width: int) -> None:
    coeffs = np.random.default_rng(3).normal(size=(5, 257)).astype(np.float32)
    motion = coeffs_to_motion(coeffs)
    extra = np.random.default_rng(4).normal(size=(5, width - 70)).astype(np.float32)
    scipy.io.savemat(str(tmp_path / "st.mat"), {"coeff_3dmm": np.concatenate([motion, extra], 1)})
    out = import_sadtalker_coeff(tmp_path / "st.mat")
    assert out.shape == (5, 70)
    np.testing.assert_array_equal(out, motion)


def test_sadtalker_errors(tmp_path: Path) -> None:
    scipy.io.savemat(str(tmp_path / "wide.mat"), {"coeff_3dmm": np.zeros((5, 257))})
    with pytest.raises(CoeffImportError, match=r"\(T, 70\) or \(T, 73\).*257"):
        import_sadtalker_coeff(tmp_path / "wide.mat")
    scipy.io.savemat(str(tmp_path / "other.mat"), {"exp": np.zeros((5, 64))})
    with pytest.raises(CoeffImportError, match=r"no 'coeff_3dmm'.*exp"):
        import_sadtalker_coeff(tmp_path / "other.mat")
