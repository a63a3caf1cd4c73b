"""The real side of Table 1's comparison, stored: what evaluation computes from a real test clip alone.

A real test clip never changes, so its crop box (the authors' crop: SadTalker's croper box of its first
frame), its aligned crops' 68 landmarks per frame and the classifier's labels on one frame in 5 are
computed once and kept in the ``eval_real_side`` Zarr store beside the feature stores, like a feature
family: one group per clip written with a fingerprint of what decides it (the landmark detector's files
and settings, the classifier's files by sha256 and kind, the protocol settings, the real video's
signature), recomputed only when that fingerprint changes, with a failure record per clip
(``eval_real_side.failures.json``) so a clip that cannot be computed is not retried with the same
fingerprint. Every evaluation, ablation row and scored method reads it (``rendered.compare_videos``); it
is computed lazily, by the first evaluation that needs a clip, not by the features flow (its settings are
the evaluation's and only test clips need it). Sync reads nothing of the real video (SyncNet sees the
rendered frames and the clip's audio), but the face boxes are stored too: Table 1's real-video row scores
the real clip as a render, and its face track for Sync, landmarks and labels are then all read back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emotalker.configs.constants import EMOTIONS
from emotalker.configs.fingerprint import file_signature, fingerprint
from emotalker.storage.failures import Failure, load_failures, record_failures
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.spec import ArraySpec, StoreSpec

REAL_SIDE_STORE = "eval_real_side"
REAL_SIDE_VERSION = "eval-real-side-v2"  # bump when what is stored or how it is computed changes
REAL_SIDE_SPEC = StoreSpec(
    REAL_SIDE_STORE,
    {
        "landmarks": ArraySpec((68, 2), "float32"),  # per compared frame, NaN where no face
        "boxes": ArraySpec((4,), "float32"),  # the face detector's box per frame (x1, y1, x2, y2), NaN: none
        "label_frames": ArraySpec((), "int32", required=False),  # the classifier's sampled frames
        "labels": ArraySpec((), "int8", required=False),  # their labels, as indices into EMOTIONS
    },
)
Arrays = dict[str, np.ndarray]


def real_side_models(cfg: Any) -> str:
    """The fingerprint of the models that compute a real side, from the config: the face-alignment
    detector (its files and settings, as ``image_metric_models`` loads it) and the EmoAcc classifier
    (kind and sha256 of its files). The protocol settings are added per comparison (``clip_fingerprint``)."""
    from emotalker.tasks.evaluation.protocol import classifier_sha256
    from emotalker.tasks.features.face_coeffs import detector_dtype

    f, e = cfg.face, cfg.eval
    dtype = detector_dtype(e.detector_dtype, cfg.torch_device())
    return fingerprint(
        "eval-real-side-models",
        f.face_detector,
        e.flip_input,
        f.detect_max_side,
        *([] if dtype == "float32" else [dtype]),  # float32: the fingerprint of sides stored before it
        file_signature(f.face_alignment_dir) if f.face_alignment_dir else "torch-hub",
        e.emotion_classifier,
        classifier_sha256(cfg),
    )


def labels_to_arrays(labels: dict[int, str]) -> Arrays:
    """Sampled frame -> MEAD emotion, as the store's two integer arrays."""
    frames = sorted(labels)
    return {
        "label_frames": np.asarray(frames, dtype=np.int32),
        "labels": np.asarray([EMOTIONS.index(labels[i]) for i in frames], dtype=np.int8),
    }


def arrays_to_labels(arrays: Arrays) -> dict[int, str]:
    """The inverse of :func:`labels_to_arrays` ({} when the side was computed without a classifier)."""
    if "labels" not in arrays:
        return {}
    return {int(i): EMOTIONS[int(k)] for i, k in zip(arrays["label_frames"], arrays["labels"], strict=True)}


@dataclass(frozen=True)
class RealSideStore:
    """Where evaluation keeps real sides (the workspace's store root) and the fingerprint of the models
    computing them. Pickles (it holds no open handle), so Dask workers can share it."""

    root: StoreRoot
    models: str  # ``real_side_models(cfg)``

    def clip_fingerprint(self, real: Path, protocol: dict[str, Any]) -> str:
        """What decides one clip's real side: the models, the protocol settings and the real video."""
        return fingerprint(REAL_SIDE_VERSION, self.models, protocol, file_signature(real))

    def fetch(
        self,
        clip_id: str,
        fp: str,
        compute: Callable[[], tuple[Arrays, dict[str, Any]]],
        *,
        fresh: Callable[[dict[str, Any]], bool] = lambda attrs: True,
    ) -> tuple[Arrays, dict[str, Any]]:
        """The clip's stored arrays and attrs when stored with ``fp`` (and ``fresh(attrs)``), else
        ``compute()``'s, written with ``fp``. A clip whose computation failed with ``fp`` raises its
        recorded error (one line, naming the records) without computing again."""
        store = self.root.store(REAL_SIDE_STORE)
        if store.has_clip(clip_id, fp):
            attrs = store.read_attrs(clip_id)
            if fresh(attrs):
                return store.read_clip(clip_id), attrs
        failed = load_failures(self.root, REAL_SIDE_STORE).get(clip_id)
        if failed is not None and failed.get("fingerprint") == fp:
            raise ValueError(
                f"real side of {clip_id} failed with these settings ({failed['error']}); recorded in "
                f"{self.root.display(f'{REAL_SIDE_STORE}.failures.json')}"
            )
        try:
            arrays, attrs = compute()
            REAL_SIDE_SPEC.check(clip_id, arrays)
        except (ValueError, OSError) as exc:  # an unreadable or empty clip: recorded, the run goes on
            entry: Failure = {"error": f"{type(exc).__name__}: {exc}", "fingerprint": fp}
            record_failures(self.root, REAL_SIDE_STORE, {clip_id: entry})
            raise ValueError(f"real side of {clip_id}: {entry['error']}") from None
        store.write_clip(clip_id, arrays, attrs=attrs, fingerprint=fp)
        if failed is not None:
            record_failures(self.root, REAL_SIDE_STORE, {clip_id: None})
        return arrays, attrs
