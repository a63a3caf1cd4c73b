"""What the training stages share: the clips a stage may train on, their labels, input checks, folders.

The stage modules (``vqvae.py``, ``lip.py``, ``transformer.py``) build their datasets from these; the
engine (``engine.py``) puts each run's checkpoints under :func:`ckpt_dir`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalker.configs.constants import EMOTION_TO_ID
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.split import load_split
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import FeatureStore
from emotalker.tasks.features.families import store_spec, stored_rate_error, window_source
from emotalker.tasks.training.loop import TrainingInputError


def clip_labels(ws: Workspace) -> dict[str, int]:
    """Emotion class of every clip, from the manifest (the stores' copy on a machine without one)."""
    return {r.clip_id: EMOTION_TO_ID[r.emotion] for r in ws.clips()}


def stage_clips(ws: Workspace, families: Sequence[str], split_name: str) -> list[str]:
    """Clips of a split that are complete in every needed store; fails fast with what is missing."""
    families = list(families)  # named as a list in the error messages
    split_path = ws.split_path
    ids = load_split(split_path)[split_name]
    for family in families:
        store = ws.store(family)
        have = set(store.clip_ids())
        if not have and split_name == "train":
            raise TrainingInputError(
                f"feature store {store.display_url} has no clips: run the features flow before training"
            )
        ids = [c for c in ids if c in have]
    if split_name == "train" and not ids:
        raise TrainingInputError(
            f"the train split has no clip with all of {families}; split file {split_path}"
        )
    return ids


def check_width(ws: Workspace, family: str, key: str, clip_id: str, expected: int, what: str) -> None:
    """Refuse a stored array whose width is not what the config expects, before any training step."""
    shape = ws.store(family).shape(clip_id, key)
    if shape[-1] != expected:
        raise TrainingInputError(
            f"{family}/{key} of {clip_id} has width {shape[-1]} but the config expects {expected} ({what})"
        )


def check_stored_rate(store: FeatureStore, clip_id: str) -> int:
    """Stored frames per video frame of the clip (its store's declared rate: 2 for HuBERT features and
    tokens); a clip written at another rate (HuBERT resampled to 25 fps by older versions) is refused."""
    error = stored_rate_error(store, clip_id)
    if error:
        raise TrainingInputError(error)
    return store_spec(store.family).rate


def split_hash(ws: Workspace) -> str:
    """The split file's hash, one of every stage's fingerprint parts."""
    return hashlib.sha256(ws.split_path.read_bytes()).hexdigest()[:12]


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    """What the engine logs about a built model (its parameter count)."""
    return {"parameters": int(sum(p.numel() for p in model.parameters()))}


def ckpt_dir(cfg: PipelineConfig, stage: str, fp: str) -> Path:
    """A stage run's checkpoints, MLflow run id and ``done.json``: one folder per fingerprint."""
    return cfg.paths.resolve("checkpoints") / stage / fp


def draw_index(n: int, resample: bool, idx: int) -> int:
    """An index in [0, n): training draws from torch's RNG, which the loop re-seeds from (seed, step), so
    a resumed run draws the same; validation fixes it per item ``idx`` so every validation sees the same."""
    if resample:
        return int(torch.randint(n, ()))
    return int(np.random.default_rng([idx, n]).integers(n))


class NeutralFrames:
    """Motion frames of the neutral clips of each actor and view: the reference the paper gives at test
    time ("all the models take a neutral reference frame as input"), for training and validation too."""

    def __init__(self, ws: Workspace, clip_ids: list[str], key: str) -> None:
        rows = {r.clip_id: r for r in ws.clips()}
        unknown = [c for c in clip_ids if c not in rows]
        if unknown:
            raise TrainingInputError(f"clips {unknown[:3]} are not in the manifest")
        self.group = {c: (rows[c].actor, rows[c].view) for c in clip_ids}
        self.pool: dict[tuple[str, str], list[str]] = {}
        for c in sorted(clip_ids):
            if rows[c].emotion == "neutral":
                self.pool.setdefault(self.group[c], []).append(c)
        lacking = sorted({g for g in self.group.values() if g not in self.pool})
        if lacking:
            raise TrainingInputError(
                f"{key}: no neutral clip for actor/view {lacking[0]} (and {len(lacking) - 1} more) in this "
                f"split: set {key} to the other reference choice or add the actor's neutral clips"
            )
        neutral = [c for cs in self.pool.values() for c in cs]
        self.frames = WindowDataset({"motion": window_source(ws.stores, "face", "motion")}, neutral, 1)

    def draw(self, clip_id: str, pick: Callable[[int], int]) -> np.ndarray:
        """A (70,) motion frame of a neutral clip of ``clip_id``'s actor and view, another clip than
        ``clip_id`` itself where the actor has one; ``pick(n)`` chooses an index in [0, n)."""
        pool = self.pool[self.group[clip_id]]
        others = [c for c in pool if c != clip_id] or pool
        c = others[pick(len(others))]
        return self.frames.frame("motion", c, pick(self.frames.clip_lengths[c]))
