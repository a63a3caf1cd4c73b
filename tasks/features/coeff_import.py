"""Read pre-extracted 3DMM coefficients (Deep3DFace ``.mat`` outputs, SadTalker ``coeff_3dmm``).

Lets the pipeline use coefficients extracted elsewhere (e.g. on a GPU box with the real Deep3DFace)
instead of running the regressor here (``face.source = "import"``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from emotalker.configs.constants import COEFF_DIM, COEFF_SLICES, MOTION_DIM


class CoeffImportError(ValueError):
    """A coefficient file that is missing keys or has the wrong widths; the message names the file."""


def _loadmat(path: str | Path) -> tuple[Path, dict[str, np.ndarray]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"coefficient file not found: {p}")
    try:
        mat = scipy.io.loadmat(str(p))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise CoeffImportError(f"{p}: not a readable .mat file ({exc})") from exc
    return p, {k: v for k, v in mat.items() if not k.startswith("__")}


def _rows(p: Path, arr: np.ndarray, key: str, width: int) -> np.ndarray:
    a = np.asarray(arr, dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] != width:
        raise CoeffImportError(f"{p}: '{key}' must have {width} columns, got shape {a.shape}")
    return a


def import_deep3dface_mat(path: str | Path) -> np.ndarray:
    """Deep3DFace ``.mat`` (keys id/exp/tex/angle/gamma/trans; one frame or T stacked rows) -> (T, 257)."""
    p, mat = _loadmat(path)
    missing = [k for k in COEFF_SLICES if k not in mat]
    if missing:
        raise CoeffImportError(
            f"{p}: missing Deep3DFace keys {missing} (found {sorted(mat)}); expected id, exp, tex, angle, "
            "gamma, trans"
        )
    parts = [_rows(p, mat[k], k, sl.stop - sl.start) for k, sl in COEFF_SLICES.items()]
    lengths = {k: a.shape[0] for k, a in zip(COEFF_SLICES, parts, strict=True)}
    if len(set(lengths.values())) != 1:
        raise CoeffImportError(f"{p}: keys have different frame counts {lengths}")
    out = np.concatenate(parts, axis=1)
    assert out.shape[1] == COEFF_DIM
    return out


def import_deep3dface_landmarks(path: str | Path) -> np.ndarray | None:
    """The optional ``lm68`` of a Deep3DFace ``.mat`` as (T, 68, 2), or None when absent."""
    p, mat = _loadmat(path)
    if "lm68" not in mat:
        return None
    lm = np.asarray(mat["lm68"], dtype=np.float32)
    if lm.ndim == 2:
        lm = lm[None]
    if lm.ndim != 3 or lm.shape[1:] != (68, 2):
        raise CoeffImportError(f"{p}: 'lm68' must be (T, 68, 2) or (68, 2), got {lm.shape}")
    return lm


def import_deep3dface_dir(files: list[str | Path]) -> np.ndarray:
    """Per-frame Deep3DFace ``.mat`` files (in frame order) stacked to (T, 257)."""
    if not files:
        raise CoeffImportError("no Deep3DFace .mat files given")
    return np.concatenate([import_deep3dface_mat(f) for f in files], axis=0)


def import_sadtalker_coeff(path: str | Path) -> np.ndarray:
    """SadTalker ``.mat`` with ``coeff_3dmm`` (T, 73 or 70) -> (T, 70) motion (exp 64, angle 3, trans 3)."""
    p, mat = _loadmat(path)
    if "coeff_3dmm" not in mat:
        raise CoeffImportError(f"{p}: no 'coeff_3dmm' key (found {sorted(mat)}); not a SadTalker coeff file")
    a = np.asarray(mat["coeff_3dmm"], dtype=np.float32)
    if a.ndim == 1:
        a = a[None]
    if a.ndim != 2 or a.shape[1] not in (MOTION_DIM, MOTION_DIM + 3):
        raise CoeffImportError(f"{p}: 'coeff_3dmm' must be (T, 70) or (T, 73), got {a.shape}")
    return np.ascontiguousarray(a[:, :MOTION_DIM])
