"""Table 1's image metrics of one rendered test video against its real clip, streamed batch by batch.

Both videos are brought into the same aligned ``EVAL_SIZE`` x ``EVAL_SIZE`` face crop (the crop the
renderer made of the source image; a render that is already that crop is only resized), then:
SSIM per frame pair; CPBD per rendered frame; 68 face-alignment landmarks on both for F-LMD / M-LMD (as
the authors' eval.py: mean |gt - gen| on raw coordinates) and F-LMD_EAT / M-LMD_EAT (as EAT: each set
mean-centred, Euclidean); the classifier's emotion on one frame in 5
of both, the real video's label being the ground truth (EmoAcc); and SyncNet on syncnet_python's face
crops of the rendered frames against the clip's audio (Sync). Only per-frame landmarks, boxes and labels
are kept across batches; SyncNet's crops are made in a second pass over the rendered video. The real
clip's side (crop box, landmarks, labels) is read from the ``eval_real_side`` store when the models have
one (``reference.py``: computed once per clip and fingerprint), else computed once per models' lifetime.
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emotalker.tasks.evaluation.emotion_classifier import VideoEmotionClassifier, emotion_accuracy
from emotalker.tasks.evaluation.metrics import (
    authors_f_lmd,
    authors_m_lmd,
    cpbd,
    f_lmd,
    m_lmd,
    ssim_video,
)
from emotalker.tasks.evaluation.reference import (
    Arrays,
    RealSideStore,
    arrays_to_labels,
    labels_to_arrays,
)
from emotalker.tasks.evaluation.sync import (
    SAMPLES_PER_FRAME,
    crop_face,
    crop_windows,
    face_track,
    sync_confidence,
)
from emotalker.tasks.features.face_coeffs import LandmarkDetector
from emotalker.tasks.media import iter_video_frames, probe_video

log = logging.getLogger(__name__)


def skip_metric(row: dict[str, Any], metric: str, exc: Exception) -> None:
    """Record on one clip's row that ``metric`` could not be computed for it and why (``skipped``): the
    clip's other metrics and the run go on, and the means leave the clip out of that metric."""
    note = f"{metric}: {exc}"
    row["skipped"] = f"{row['skipped']}; {note}" if row.get("skipped") else note
    log.warning("%s skipped for this clip: %s", metric, exc)


EVAL_SIZE = 256  # LMD on aligned 256 x 256 crops, as EAT
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in the real video's pixels (may leave the frame)


@dataclass
class RealSide:
    """What the comparison computes from a real clip alone: its crops' landmarks per frame and the
    classifier's label on the sampled frames (frame index -> label)."""

    landmarks: np.ndarray
    labels: dict[int, str] = field(default_factory=dict)
    box: Box | None = None  # the crop it was computed in (stored sides)
    boxes: np.ndarray | None = None  # the face box per frame (stored sides): the real-video row's Sync


@dataclass
class ImageMetricModels:
    """What the image metrics run: landmarks always, SyncNet and the classifier when configured.

    ``real_sides`` / ``real_boxes`` keep each real clip's side of the comparison for the models' lifetime
    (one evaluation): every Table 1 row is compared with the same real clips, which never change, so the
    detectors and the classifier run on them once instead of once per row. With ``reference`` (the
    workspace's ``eval_real_side`` store) they run on them once for every evaluation and ablation row:
    the real side is read from the store, computed only when its fingerprint changes."""

    detector: LandmarkDetector
    syncnet: Any = None
    classifier: VideoEmotionClassifier | None = None
    device: str = "cpu"
    # the authors' eval.py crop: each real clip cut by SadTalker's croper box of its own first frame (the
    # box is the same in SadTalker's crop and still modes), renders of another size only resized
    authors_crop: bool = False
    reference: RealSideStore | None = None
    real_sides: dict[tuple[Any, ...], RealSide] = field(default_factory=dict, repr=False)
    real_boxes: dict[str, Box | None] = field(default_factory=dict, repr=False)
    # rendered frames' detector, CPBD and classifier results by frame content, across clips and rows
    memo: FrameMemo = field(default_factory=lambda: FrameMemo(), repr=False)


def crop_resize(frames: np.ndarray, box: Box | None, size: int = EVAL_SIZE) -> np.ndarray:
    """(B, H, W, 3) -> (B, size, size, 3): cut ``box`` (zero outside the frame; None: whole frame) and
    resize (area interpolation when shrinking)."""
    out = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for i, f in enumerate(frames):
        if box is not None:
            x0, y0, x1, y1 = box
            h, w = f.shape[:2]
            cut = np.zeros((y1 - y0, x1 - x0, 3), dtype=f.dtype)
            sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if sx1 > sx0 and sy1 > sy0:
                cut[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = f[sy0:sy1, sx0:sx1]
            f = cut
        interp = cv2.INTER_AREA if f.shape[0] > size else cv2.INTER_LINEAR
        out[i] = f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=interp)
    return out


def _aligned(batch: np.ndarray, box: Box | None, real_hw: tuple[int, int]) -> np.ndarray:
    """A rendered batch of the real video's size is cut like it; a smaller one already is the crop."""
    return crop_resize(batch, box if batch.shape[1:3] == real_hw else None)


def _video_size(path: Path) -> tuple[int, int]:
    info = probe_video(path)
    return info.height, info.width


def _pairs(
    rendered: Path, real: Path, box: Box | None, batch_size: int, max_frames: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    real_hw = _video_size(real)
    for r, g in zip(
        iter_video_frames(rendered, batch_size, max_frames),
        iter_video_frames(real, batch_size, max_frames),
        strict=False,  # the shorter video ends the comparison
    ):
        n = min(len(r), len(g))
        yield _aligned(r[:n], box, real_hw), crop_resize(g[:n], box)


def compare_videos(
    rendered: Path,
    real: Path,
    audio: Path,
    models: ImageMetricModels,
    *,
    box: Box | None = None,
    max_frames: int | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """SSIM, CPBD, F-LMD, M-LMD and (with their models) EmoAcc and Sync of ``rendered`` vs ``real``."""
    key: tuple[Any, ...] | None = None
    if models.reference is not None:  # this real clip's side, stored by an earlier comparison
        known: RealSide | None = stored_real_side(real, models, box, max_frames, batch_size)
        box = known.box
    else:
        if models.authors_crop:
            if str(real) not in models.real_boxes:
                models.real_boxes[str(real)] = real_crop_box(real, models.detector)
            box = models.real_boxes[str(real)] or box
        key = (str(real), box, max_frames, batch_size)
        known = models.real_sides.get(key)  # this real clip's side, from an earlier row's comparison
    ssim_sum, cpbds, frames = 0.0, [], 0
    lm_pred, lm_real, boxes = [], [], []
    emo_pred: list[str] = []
    real_labels: dict[int, str] = {}
    every = models.classifier.every if models.classifier is not None else 1
    memo = models.memo
    for pred, gt in _pairs(rendered, real, box, batch_size, max_frames):
        n = len(pred)
        if known is not None and frames + n > len(known.landmarks):
            known = None  # a longer comparison than the stored one: compute this clip's side again
        # the real video scored as a render (Table 1's ceiling row): its side is the stored real side
        itself = known is not None and known.boxes is not None and _same_file(rendered, real)
        ssim_sum += ssim_video(pred, gt) * n
        if itself:
            cpbds.extend(cpbd(f) for f in pred)
            boxes.append(known.boxes[frames : frames + n])
            lm_pred.append(known.landmarks[frames : frames + n])
        else:
            found = memo.per_distinct("frame", pred, lambda fr: _frame_side(fr, models.detector))
            cpbds.extend(c for c, _, _ in found)
            boxes.append(np.stack([b for _, b, _ in found]))
            lm_pred.append(np.stack([lm for _, _, lm in found]))
        lm_real.append(
            models.detector.detect(gt)[0] if known is None else known.landmarks[frames : frames + n]
        )
        if models.classifier is not None:
            picked = [i for i in range(n) if (frames + i) % every == 0]
            if picked:
                labels = (
                    models.classifier.frame_labels(gt[picked])
                    if known is None
                    else [known.labels[frames + i] for i in picked]
                )
                classify = models.classifier.frame_labels
                emo_pred.extend(labels if itself else memo.per_distinct("label", pred[picked], classify))
                real_labels.update({frames + i: label for i, label in zip(picked, labels, strict=True)})
        frames += n
    if frames == 0:
        raise ValueError(f"{rendered} or {real} has no frames to compare")
    pred_lm, real_lm = np.concatenate(lm_pred), np.concatenate(lm_real)
    if key is not None and (key not in models.real_sides or len(models.real_sides[key].landmarks) < frames):
        models.real_sides[key] = RealSide(real_lm, real_labels)
    emo_real = [real_labels[i] for i in sorted(real_labels)]
    out: dict[str, Any] = {
        "ssim": ssim_sum / frames,
        "cpbd": float(np.nanmean(cpbds)) if np.isfinite(cpbds).any() else float("nan"),
        "f_lmd": authors_f_lmd(pred_lm, real_lm),
        "m_lmd": authors_m_lmd(pred_lm, real_lm),
        "f_lmd_eat": f_lmd(pred_lm, real_lm),
        "m_lmd_eat": m_lmd(pred_lm, real_lm),
        "lmd_frames": int(
            (np.isfinite(pred_lm).all(axis=(1, 2)) & np.isfinite(real_lm).all(axis=(1, 2))).sum()
        ),
        "image_frames": frames,
    }
    if models.classifier is not None:
        out["emo_acc"] = emotion_accuracy(emo_pred, emo_real)
        out["emo_frames_pred"], out["emo_frames_real"] = emo_pred, emo_real  # EmoAcc's confusion matrix
        out["emotion_image"] = max(set(emo_pred), key=emo_pred.count)
        out["emotion_real_video"] = max(set(emo_real), key=emo_real.count)
    if models.syncnet is not None:
        try:
            out.update(
                rendered_sync(
                    rendered, real, audio, np.concatenate(boxes), models, box=box, batch_size=batch_size
                )
            )
        except ValueError as exc:  # e.g. a face track too short for SyncNet's filter: this clip's Sync only
            skip_metric(out, "Sync", exc)
    return out


class FrameMemo:
    """Per-frame results computed once per distinct frame: a held render (the copy-reference and
    mean-motion floors) decodes to runs of byte-identical frames, and the same actor's held render is the
    same video for every one of its test clips. Identical frames give identical detector, CPBD and
    classifier outputs, so the numbers are those of computing every frame. The ``max_frames`` most
    recently used frames per kind are kept (an evaluation scores a row's clips one after another)."""

    def __init__(self, max_frames: int = 4096) -> None:
        self.max_frames = max_frames
        self._seen: dict[str, OrderedDict[bytes, Any]] = {}

    def per_distinct(self, kind: str, frames: np.ndarray, compute: Callable[[np.ndarray], Any]) -> list[Any]:
        """``compute(frames)`` (one result per frame) run on the frames not seen before under ``kind``
        only; the results of every frame of ``frames``, in order."""
        seen = self._seen.setdefault(kind, OrderedDict())
        keys = [hashlib.blake2b(f.tobytes(), digest_size=20).digest() for f in frames]
        new: dict[bytes, int] = {}
        for i, k in enumerate(keys):
            if k not in seen and k not in new:
                new[k] = i
        found = dict(zip(new, compute(frames[list(new.values())]), strict=True)) if new else {}
        out = [found[k] if k in found else seen[k] for k in keys]
        for k, value in zip(keys, out, strict=True):
            seen[k] = value
            seen.move_to_end(k)
        while len(seen) > self.max_frames:
            seen.popitem(last=False)
        return out


def _frame_side(frames: np.ndarray, detector: LandmarkDetector) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(CPBD, face box, landmarks) of each rendered frame."""
    b = detector.detect_boxes(frames)
    lms = detector.landmarks_from_boxes(frames, b)
    return [(cpbd(f), b[i], lms[i]) for i, f in enumerate(frames)]


def _same_file(a: Path, b: Path) -> bool:
    return Path(a).resolve() == Path(b).resolve()


def real_crop_box(real: Path, detector: LandmarkDetector) -> Box | None:
    """SadTalker's croper box of the real clip's first frame (the authors' crop of the real video);
    None when no face is found there."""
    from emotalker.tasks.generation.render import RenderInputError, sadtalker_crop_box

    first = next(iter_video_frames(real, batch_size=1, max_frames=1))
    lms, valid = detector.detect(first)
    if not bool(np.asarray(valid)[0]):
        return None
    try:
        return sadtalker_crop_box(lms[0], first.shape[2], first.shape[1])
    except RenderInputError:
        return None


def compute_real_side(
    real: Path, models: ImageMetricModels, box: Box | None, max_frames: int | None, batch_size: int
) -> tuple[Arrays, dict[str, Any]]:
    """A real clip's side as ``compare_videos`` computes it in its loop (same crop, batches and sampled
    frames, so the same numbers), over the clip's first ``max_frames`` frames: the store's arrays and
    attrs (``crop_box``: the authors' box, None without a face or without ``authors_crop``; ``box``: the
    crop used)."""
    crop = real_crop_box(real, models.detector) if models.authors_crop else None
    use = crop or box
    every = models.classifier.every if models.classifier is not None else 1
    lms, boxes, labels, frames = [], [], {}, 0
    for batch in iter_video_frames(real, batch_size, max_frames):
        gt = crop_resize(batch, use)
        boxes.append(models.detector.detect_boxes(gt))
        lms.append(models.detector.detect(gt, boxes[-1])[0])
        picked = [i for i in range(len(gt)) if (frames + i) % every == 0]
        if models.classifier is not None and picked:
            found = models.classifier.frame_labels(gt[picked])
            labels.update({frames + i: label for i, label in zip(picked, found, strict=True)})
        frames += len(gt)
    if frames == 0:
        raise ValueError(f"{real} has no frames to compare")
    arrays = {
        "landmarks": np.concatenate(lms).astype(np.float32),
        "boxes": np.concatenate(boxes).astype(np.float32),
    }
    if models.classifier is not None:
        arrays |= labels_to_arrays(labels)
    return arrays, {"crop_box": crop, "box": use, "video": str(real)}


def _as_box(value: Any) -> Box | None:
    return None if value is None else tuple(int(v) for v in value)  # type: ignore[return-value]


def stored_real_side(
    real: Path, models: ImageMetricModels, box: Box | None, max_frames: int | None, batch_size: int
) -> RealSide:
    """The real clip's side from ``models.reference`` (clip id: the video's name), computed and stored on
    first need; kept in memory for the models' lifetime too. Its fingerprint: the models', the protocol
    (crop mode, ``EVAL_SIZE``, the classifier's sampling, ``max_frames``) and the video's signature."""
    assert models.reference is not None
    every = models.classifier.every if models.classifier is not None else None
    protocol = {
        "eval_size": EVAL_SIZE,
        "every": every,
        "max_frames": max_frames,
        "authors_crop": models.authors_crop,
        "box": None if models.authors_crop else box,  # the authors' crop is the clip's own
    }
    fp = models.reference.clip_fingerprint(real, protocol)
    key = (str(real), fp, box)
    if key in models.real_sides:
        return models.real_sides[key]

    def fresh(attrs: dict[str, Any]) -> bool:  # a clip without a face in its first frame uses ``box``
        return _as_box(attrs.get("box")) == (_as_box(attrs.get("crop_box")) or box)

    arrays, attrs = models.reference.fetch(
        Path(real).stem,
        fp,
        lambda: compute_real_side(real, models, box, max_frames, batch_size),
        fresh=fresh,
    )
    boxes = arrays["boxes"].astype(np.float64)
    side = RealSide(arrays["landmarks"], arrays_to_labels(arrays), _as_box(attrs.get("box")), boxes)
    models.real_sides[key] = side
    return side


def rendered_sync(
    rendered: Path,
    real: Path,
    audio: Path,
    boxes: np.ndarray,
    models: ImageMetricModels,
    *,
    box: Box | None = None,
    batch_size: int = 16,
) -> dict[str, float]:
    """SyncNet offset/confidence on syncnet_python's face crops of the (aligned) rendered frames."""
    from emotalker.tasks.features.audio_io import load_audio

    start, track = face_track(boxes)
    windows = crop_windows(track)
    real_hw = _video_size(real)
    crops, seen = [], 0
    for batch in iter_video_frames(rendered, batch_size, start + len(track)):
        aligned = _aligned(batch, box, real_hw)
        for i, frame in enumerate(aligned):
            k = seen + i - start
            if 0 <= k < len(track):
                crops.append(crop_face(frame, windows[k]))
        seen += len(batch)
    wave = load_audio(audio)[start * SAMPLES_PER_FRAME : (start + len(crops)) * SAMPLES_PER_FRAME]
    res = sync_confidence(models.syncnet, np.stack(crops), wave, device=models.device)
    return {"sync": res["confidence"], "sync_offset": res["offset"], "sync_frames": res["frames"]}


# ------------------------------------------------------------------------------------ rendering


def video_source(cfg: Any) -> str | None:
    """Where the test videos come from: ``eval.rendered_dir`` when set, else SadTalker's renderer when its
    checkpoint files exist, else nowhere (image metrics skipped)."""
    if cfg.eval.rendered_dir is not None:
        return "rendered_dir"
    return "renderer" if not missing_renderer_files(cfg) else None


def missing_renderer_files(cfg: Any) -> list[str]:
    """The render.* checkpoint keys (for ``render.mode``) whose files are missing."""
    r = cfg.render
    mapping = "mapping_full_checkpoint" if r.mode == "full" else "mapping_checkpoint"
    return [k for k in ("checkpoint", mapping) if not Path(getattr(r, k)).is_file()]


def reference_image(row: dict[str, Any]) -> np.ndarray:
    """The first frame (RGB) of a reference clip's prepared video: the source image the renderer animates."""
    return next(iter_video_frames(row["prepared_video"], batch_size=1, max_frames=1))[0]


# Prepared sources shared by every evaluation in this process (the rows of Table 1, an ablation's rows):
# each row renders the same actors from the same reference frames, and preparing one (face detection on
# the full frame, FAN, Deep3DFace) costs several seconds. Bounded, keyed by everything it depends on.
_SOURCES: OrderedDict[tuple[Any, ...], Any] = OrderedDict()
_SOURCES_MAX = 32


def _source_key(image: np.ndarray, cfg: Any, mode: str, device: str) -> tuple[Any, ...]:
    from emotalker.configs.fingerprint import file_signature

    f = cfg.face
    files = [f.deep3dface_checkpoint, f.lm3d_mat, f.face_alignment_dir]
    return (
        hashlib.sha1(np.ascontiguousarray(image).tobytes()).hexdigest(),
        image.shape,
        cfg.face.model_dump_json(),
        repr([file_signature(p) for p in files if p]),
        cfg.render.image_size,
        mode,
        device,
    )


class ClipRenderer:
    """SadTalker's renderer for evaluation: one prepared source per actor, frames streamed to the encoder."""

    def __init__(self, cfg: Any, device: str) -> None:
        from emotalker.tasks.generation import render

        self.api = render
        self.cfg = cfg
        self.mode = cfg.render.mode
        self.device = device
        self.model = self.api.load_renderer(cfg, device)
        self._sources: dict[str, Any] = {}

    def source(self, actor: str, reference_row: dict[str, Any]) -> Any:
        """The actor's neutral reference frame, prepared as SadTalker does (once per actor, and once per
        process for the same frame and settings)."""
        if actor not in self._sources:
            image = reference_image(reference_row)
            key = _source_key(image, self.cfg, self.mode, self.device)
            if key not in _SOURCES:
                _SOURCES[key] = self.api.prepare_source(image, self.cfg, self.mode)
                while len(_SOURCES) > _SOURCES_MAX:
                    _SOURCES.popitem(last=False)
            _SOURCES.move_to_end(key)
            self._sources[actor] = _SOURCES[key]
        return self._sources[actor]

    def render(self, source: Any, motion: np.ndarray, audio: Path, out: Path) -> tuple[Path, Box]:
        """Render ``motion`` (T, 70) to ``out`` with the clip's audio, batch by batch (render_frames shows
        progress); returns the video and the source crop box in the real video's pixels."""
        batches = self.api.render_frames(self.model, source, motion, self.mode, self.cfg.render.batch_size)
        self.api.write_video(batches, audio, out, fps=25)
        return out, tuple(int(v) for v in source.box)  # type: ignore[return-value]
