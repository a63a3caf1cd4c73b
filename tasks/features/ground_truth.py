"""Motion sidecars: the ground-truth motion a renderer recorded for each clip it drew.

The demo world (``tasks/demo/synthetic``) writes one ``ground_truth/<actor>.npz`` per actor beside its
MEAD-shaped archives; the face family's ``synthetic_ground_truth`` source reads it instead of fitting
Deep3DFace. The format lives here, with its reader, so features never import the demo world.
Layout: ``<emotion>/level_<n>/<NNN>/<field>`` arrays (``motion`` (T30, 70) front view, ``envelope``,
``brightness``) and ``__meta__`` (JSON: generator version, fps, views and their camera pitch/yaw, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from emotalker.configs.constants import EXP_DIM, VIEWS

PITCH, YAW = EXP_DIM, EXP_DIM + 1  # head angles in the 70-dim motion (exp 64 | angle 3 | trans 3)
# Camera offsets (pitch, yaw) of the MEAD views; ground-truth motion is stored for the front view.
VIEW_ANGLES: dict[str, tuple[float, float]] = {
    "front": (0.0, 0.0),
    "down": (0.35, 0.0),
    "top": (-0.35, 0.0),
    "left_30": (0.0, -np.pi / 6),
    "left_60": (0.0, -np.pi / 3),
    "right_30": (0.0, np.pi / 6),
    "right_60": (0.0, np.pi / 3),
}


class GroundTruthError(ValueError):
    """A ground-truth sidecar without the requested clip (names the file and the key)."""


def clip_key(emotion: str, level: int, sentence: str | int) -> str:
    """Sidecar key of a clip: ``<emotion>/level_<n>/<NNN>``."""
    number = f"{sentence:03d}" if isinstance(sentence, int) else str(sentence)
    return f"{emotion}/level_{int(level)}/{number}"


def ground_truth_path(out_dir: str | Path, actor: str) -> Path:
    """Where a generator writes an actor's motion sidecar under its output folder."""
    return Path(out_dir) / "ground_truth" / f"{actor}.npz"


def _find_sidecar(gt_dir: Path, actor: str) -> Path:
    candidates = [ground_truth_path(gt_dir, actor), Path(gt_dir) / f"{actor}.npz"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(
            f"no ground-truth sidecar for actor {actor!r}: looked at {[str(c) for c in candidates]}"
        )
    return found


def read_ground_truth(
    gt_dir: str | Path, actor: str
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """All clips of an actor's sidecar: ``({clip_key: {"motion", "envelope", "brightness"}}, meta)``.

    ``gt_dir`` may be the generator's ``out_dir`` or its ``ground_truth/`` folder.
    """
    path = _find_sidecar(Path(gt_dir), actor)
    clips: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["__meta__"]))
        for name in npz.files:
            if name == "__meta__":
                continue
            key, _, field = name.rpartition("/")
            clips.setdefault(key, {})[field] = npz[name]
    return clips, meta


def load_ground_truth(gt_dir: str | Path, clip: Mapping[str, Any]) -> np.ndarray:
    """(T30, 70) float32 motion of a clip record (``actor``, ``emotion``, ``level``, ``sentence``, ``view``).

    For a non-front view the camera's pitch/yaw offset is added to the head angles, as a 3DMM fit of that
    view would see it. ``gt_dir`` may be the generator's ``out_dir`` or its ``ground_truth/`` folder.
    """
    missing = [k for k in ("actor", "emotion", "level", "sentence") if k not in clip]
    if missing:
        raise ValueError(f"clip record lacks {missing} (has {sorted(clip)})")
    path = _find_sidecar(Path(gt_dir), str(clip["actor"]))
    key = clip_key(str(clip["emotion"]), int(clip["level"]), clip["sentence"])
    with np.load(path, allow_pickle=False) as npz:
        name = f"{key}/motion"
        if name not in npz.files:
            raise GroundTruthError(f"{path}: no ground truth for clip {key!r} of actor {clip['actor']!r}")
        motion = np.array(npz[name], dtype=np.float32)
    view = str(clip.get("view", "front"))
    if view not in VIEW_ANGLES:
        raise ValueError(f"unknown view {view!r}; MEAD has {list(VIEWS)}")
    pitch, yaw = VIEW_ANGLES[view]
    motion[:, PITCH] += pitch
    motion[:, YAW] += yaw
    return motion
