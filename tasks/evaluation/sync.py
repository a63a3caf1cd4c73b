"""SyncNet confidence of a rendered video against its audio, computed as syncnet_python does.

Face crop (syncnet_python's ``run_pipeline.py``): S3FD boxes per frame form a face track (consecutive
detections at most 25 frames apart and overlapping with IoU > 0.5, gaps interpolated); the box half-size
and centre are median-filtered over 13 frames; each frame, padded with grey 110, is cut to
``[y - s, y + 1.8 s] x [x - 1.4 s, x + 1.4 s]`` (crop scale 0.4; the window reaches below the chin) and
resized to 224 x 224; the audio is cut to the track's frames. The scene cut and the minimum track
length / face size filters are left out: evaluation videos are single-shot talking heads, and demo
excerpts are shorter than run_pipeline's 100-frame minimum.

Per video frame v: lips = frames v..v+4, audio = MFCC frames 4v..4v+19 (25 fps video, 100 Hz MFCC).
Each lip embedding is compared with the audio embeddings shifted by -vshift..vshift frames; the mean
distance per shift gives the AV offset (its argmin) and the confidence median - min, the "Sync" (LSE-C)
number papers report.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import numpy as np
import torch

from emotalker.models.syncnet import SyncNet

SYNC_SIZE = 224
LIP_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW = 20
VSHIFT = 15
_log = logging.getLogger(__name__)
# run_pipeline.py's face-track defaults
CROP_SCALE = 0.4
MEDIAN_KERNEL = 13
# a zero-padded median over 13 frames is 0 unless 7 of them hold the face: the shortest track that crops
MIN_TRACK_FRAMES = MEDIAN_KERNEL // 2 + 1
PAD_VALUE = 110
NUM_FAILED_DET = 25
MIN_IOU = 0.5
SAMPLES_PER_FRAME = 640  # 16 kHz audio / 25 fps video


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def face_track(boxes: np.ndarray) -> tuple[int, np.ndarray]:
    """The longest face track in per-frame boxes (T, 4) (x1, y1, x2, y2; NaN rows: no face), as
    syncnet_python's ``track_shot`` builds one: a detection joins the track when it is at most
    ``NUM_FAILED_DET`` frames after the last one and overlaps it with IoU > 0.5; missing frames inside the
    track are interpolated. Returns the track's first frame and its boxes (one row per frame)."""
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise ValueError(f"face boxes must be (T, 4), got {boxes.shape}")
    found = np.flatnonzero(np.isfinite(boxes).all(axis=1))
    if len(found) == 0:
        raise ValueError("no face detected in any frame: no face track for SyncNet")
    tracks, current = [], [found[0]]
    for f in found[1:]:
        last = current[-1]
        if f - last <= NUM_FAILED_DET and _iou(boxes[f], boxes[last]) > MIN_IOU:
            current.append(f)
        else:
            tracks.append(current)
            current = [f]
    tracks.append(current)
    best = np.asarray(max(tracks, key=lambda t: (t[-1] - t[0], len(t))))
    frames = np.arange(best[0], best[-1] + 1)
    filled = np.stack([np.interp(frames, best, boxes[best, j]) for j in range(4)], axis=1)
    return int(best[0]), filled


def crop_windows(track_boxes: np.ndarray) -> np.ndarray:
    """Per track frame (s, x, y): half-size max(w, h) / 2 and box centre, each median-filtered over
    ``MEDIAN_KERNEL`` frames (zero-padded at the ends, as scipy's medfilt)."""
    from scipy.signal import medfilt

    b = np.asarray(track_boxes, dtype=np.float64)
    if len(b) < MIN_TRACK_FRAMES:
        raise ValueError(
            f"face track of {len(b)} frames: SyncNet's {MEDIAN_KERNEL}-frame zero-padded median filter needs "
            f"at least {MIN_TRACK_FRAMES} (shorter tracks filter to empty crops)"
        )
    s = np.maximum(b[:, 3] - b[:, 1], b[:, 2] - b[:, 0]) / 2
    x, y = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    with warnings.catch_warnings():  # tracks shorter than the kernel are zero-padded, as upstream's are
        warnings.simplefilter("ignore", UserWarning)
        return np.stack([medfilt(v, kernel_size=MEDIAN_KERNEL) for v in (s, x, y)], axis=1)


def crop_face(frame: np.ndarray, window: np.ndarray) -> np.ndarray:
    """One (H, W, 3) frame -> its (224, 224, 3) SyncNet face crop for the window (s, x, y)."""
    import cv2

    bs, x, y = (float(v) for v in window)
    bsi = int(bs * (1 + 2 * CROP_SCALE))  # padding so the window never leaves the frame
    padded = np.pad(frame, ((bsi, bsi), (bsi, bsi), (0, 0)), mode="constant", constant_values=PAD_VALUE)
    my, mx = y + bsi, x + bsi
    face = padded[
        int(my - bs) : int(my + bs * (1 + 2 * CROP_SCALE)),
        int(mx - bs * (1 + CROP_SCALE)) : int(mx + bs * (1 + CROP_SCALE)),
    ]
    if face.size == 0:
        raise ValueError(f"empty SyncNet face crop for window {window.tolist()} in a {frame.shape} frame")
    return cv2.resize(face, (SYNC_SIZE, SYNC_SIZE))


def mfcc(wave: np.ndarray, sr: int = 16000) -> np.ndarray:
    """(13, N) MFCC at 100 Hz, python_speech_features' defaults, on int16-scaled samples (float input is
    taken as [-1, 1])."""
    import python_speech_features

    wave = np.asarray(wave)
    samples = wave.astype(np.float64)
    if np.issubdtype(wave.dtype, np.floating):
        samples *= 32768.0  # float audio in [-1, 1] -> the int16 scale the model saw
    return python_speech_features.mfcc(samples, sr).T.astype(np.float32)


def prepare_frames(frames: np.ndarray) -> np.ndarray:
    """(T, H, W, 3) RGB uint8 face crops -> (T, 224, 224, 3) BGR float32 in 0..255."""
    import cv2

    out = np.empty((len(frames), SYNC_SIZE, SYNC_SIZE, 3), dtype=np.float32)
    for i, f in enumerate(frames):
        if f.shape[:2] != (SYNC_SIZE, SYNC_SIZE):
            f = cv2.resize(f, (SYNC_SIZE, SYNC_SIZE), interpolation=cv2.INTER_AREA)
        out[i] = f[..., ::-1]
    return out


def shifted_distances(lip: torch.Tensor, audio: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """(T, 2 * vshift + 1): distance of lip[i] to audio[i + s - vshift], zero-padded at the ends."""
    padded = torch.nn.functional.pad(audio, (0, 0, vshift, vshift))
    windows = padded.unfold(0, 2 * vshift + 1, 1).permute(0, 2, 1)  # (T, 2 * vshift + 1, D)
    return torch.nn.functional.pairwise_distance(lip[:, None, :].expand_as(windows), windows, eps=1e-6)


def offset_and_confidence(dists: torch.Tensor, vshift: int = VSHIFT) -> dict[str, float]:
    """AV offset (frames, syncnet_python's sign), min mean distance and confidence median - min."""
    mean = dists.mean(dim=0)
    min_dist, min_idx = torch.min(mean, dim=0)
    return {
        "offset": float(vshift - int(min_idx)),
        "min_dist": float(min_dist),
        "confidence": float(torch.median(mean) - min_dist),
    }


def sync_confidence(
    model: SyncNet,
    frames: np.ndarray,
    wave: np.ndarray,
    *,
    sr: int = 16000,
    batch_size: int = 20,
    vshift: int = VSHIFT,
    device: str | torch.device = "cpu",
) -> dict[str, Any]:
    """SyncNet offset/confidence of RGB face-crop frames (25 fps) against 16 kHz mono audio."""
    if sr != 16000:
        raise ValueError(f"SyncNet expects 16 kHz audio, got {sr} Hz")
    video = prepare_frames(frames)
    cc = mfcc(wave, sr)
    n = min(len(video), len(wave) // 640)  # 640 samples per 25 fps frame
    last = n - LIP_FRAMES
    if last < 1:
        raise ValueError(
            f"video too short for SyncNet: needs more than {LIP_FRAMES} frames of video and audio, got {n}"
        )
    if last < 2 * vshift + 1:  # most offsets would compare lips with the zero padding, not with audio
        _log.warning(
            "Sync on %d frames: SyncNet's +-%d-frame offset search needs at least %d frames to be meaningful",
            n,
            vshift,
            2 * vshift + 1 + LIP_FRAMES,
        )
    lip_feats, aud_feats = [], []
    with torch.inference_mode():
        for start in range(0, last, batch_size):
            vs = range(start, min(last, start + batch_size))
            lips = np.stack([video[v : v + LIP_FRAMES] for v in vs])  # (B, 5, 224, 224, 3)
            lips_t = torch.from_numpy(lips).permute(0, 4, 1, 2, 3).to(device)
            auds = np.stack([cc[:, v * MFCC_PER_FRAME : v * MFCC_PER_FRAME + MFCC_WINDOW] for v in vs])
            auds_t = torch.from_numpy(auds)[:, None].to(device)
            lip_feats.append(model.embed_lips(lips_t).float().cpu())
            aud_feats.append(model.embed_audio(auds_t).float().cpu())
    dists = shifted_distances(torch.cat(lip_feats), torch.cat(aud_feats), vshift)
    return {**offset_and_confidence(dists, vshift), "frames": last}
