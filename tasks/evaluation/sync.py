"""SyncNet confidence of a rendered video against its audio, computed as syncnet_python does.

Per video frame v: lips = frames v..v+4, audio = MFCC frames 4v..4v+19 (25 fps video, 100 Hz MFCC).
Each lip embedding is compared with the audio embeddings shifted by -vshift..vshift frames; the mean
distance per shift gives the AV offset (its argmin) and the confidence median - min, the "Sync" (LSE-C)
number papers report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emotalker.models.syncnet import SyncNet

SYNC_SIZE = 224
LIP_FRAMES = 5
MFCC_PER_FRAME = 4  # 100 Hz MFCC / 25 fps video
MFCC_WINDOW = 20
VSHIFT = 15


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
