"""Conversions between 257-dim Deep3DFace coefficients, 70-dim motion and the face/lip split."""

from __future__ import annotations

import numpy as np

from emotalker.configs.constants import (
    COEFF_DIM,
    COEFF_SLICES,
    EXP_DIM,
    FACE_INDICES,
    LIP_INDICES,
    MOTION_DIM,
)


def coeffs_to_motion(coeffs: np.ndarray) -> np.ndarray:
    """(T, 257) -> (T, 70): exp 64 + angle 3 + trans 3, the part that moves in a talking head."""
    if coeffs.ndim != 2 or coeffs.shape[1] != COEFF_DIM:
        raise ValueError(f"expected (T, {COEFF_DIM}) coefficients, got {coeffs.shape}")
    return np.concatenate(
        [coeffs[:, COEFF_SLICES["exp"]], coeffs[:, COEFF_SLICES["angle"]], coeffs[:, COEFF_SLICES["trans"]]],
        axis=1,
    )


def motion_to_coeffs(motion: np.ndarray) -> np.ndarray:
    """(T, 70) -> (T, 257), the inverse of :func:`coeffs_to_motion`: identity/texture/lighting stay zero."""
    coeffs = np.zeros((len(motion), COEFF_DIM), np.float32)
    coeffs[:, COEFF_SLICES["exp"]] = motion[:, :EXP_DIM]
    coeffs[:, COEFF_SLICES["angle"]] = motion[:, EXP_DIM : EXP_DIM + 3]
    coeffs[:, COEFF_SLICES["trans"]] = motion[:, EXP_DIM + 3 :]
    return coeffs


def split_motion(motion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(..., 70) -> face (..., 57) and lip (..., 13) parts, the two branches' targets."""
    if motion.shape[-1] != MOTION_DIM:
        raise ValueError(f"expected last dim {MOTION_DIM}, got {motion.shape}")
    return motion[..., list(FACE_INDICES)], motion[..., list(LIP_INDICES)]


def merge_motion(face: np.ndarray, lip: np.ndarray) -> np.ndarray:
    """Inverse of :func:`split_motion`."""
    out = np.zeros(face.shape[:-1] + (MOTION_DIM,), dtype=face.dtype)
    out[..., list(FACE_INDICES)] = face
    out[..., list(LIP_INDICES)] = lip
    return out


def expression_of(motion: np.ndarray) -> np.ndarray:
    """The 64 expression coefficients of a motion array."""
    return motion[..., :EXP_DIM]
