"""Audio reading/writing for the feature stages: any container PyAV can open -> mono float32 at 16 kHz.

Decoding and resampling both go through PyAV (libavcodec + libswresample, in ``tasks/media.py``), so wav,
m4a (AAC) and the audio track of an mp4 are handled the same way, with no ffmpeg subprocess.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from emotalker.configs.constants import HUBERT_WIN, SAMPLE_RATE
from emotalker.storage.files import atomic_path
from emotalker.tasks.media import MediaError, read_audio


class AudioError(ValueError):
    """Audio that cannot be decoded or is unusable (empty, too short, NaN/inf); the message names it."""


def min_samples(sr: int = SAMPLE_RATE) -> int:
    """Fewest samples for one HuBERT frame (400 at 16 kHz; the same 25 ms at other rates)."""
    return int(np.ceil(HUBERT_WIN * sr / SAMPLE_RATE))


def load_audio(path: str | Path, target_sr: int = SAMPLE_RATE, mono: bool = True) -> np.ndarray:
    """Decode the first audio stream of ``path`` and resample it to ``target_sr``.

    Returns float32 ``(N,)`` when ``mono`` (channels are down-mixed by libswresample), else ``(C, N)``.
    Raises FileNotFoundError for a missing file and AudioError for an undecodable one or one with no
    audio stream.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"audio file not found: {p}")
    if target_sr <= 0:
        raise ValueError(f"target_sr must be positive, got {target_sr}")
    try:
        return read_audio(p, target_sr, mono=mono)
    except MediaError as exc:
        raise AudioError(str(exc)) from exc


def validate_audio(wave: np.ndarray, sr: int = SAMPLE_RATE, name: str = "audio") -> np.ndarray:
    """Check a mono waveform before feature extraction and return it as float32.

    HuBERT needs at least one 25 ms frame (400 samples at 16 kHz); NaN/inf would poison every frame of a
    batch, so they are rejected here with the clip's name rather than surfacing as NaN features.
    """
    arr = np.asarray(wave)
    if arr.ndim != 1:
        raise AudioError(f"{name}: expected a mono 1-D waveform, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise AudioError(f"{name}: expected a numeric waveform, got dtype {arr.dtype}")
    if arr.size == 0:
        raise AudioError(f"{name}: waveform is empty")
    need = min_samples(sr)
    if arr.size < need:
        raise AudioError(
            f"{name}: {arr.size} samples at {sr} Hz is shorter than one HuBERT frame ({need} samples)"
        )
    arr = arr.astype(np.float32, copy=False)
    if not np.all(np.isfinite(arr)):
        raise AudioError(f"{name}: waveform contains NaN or inf ({int(np.sum(~np.isfinite(arr)))} samples)")
    return arr


def write_wav(path: str | Path, wave: np.ndarray, sr: int = SAMPLE_RATE, subtype: str = "PCM_16") -> Path:
    """Write a wav atomically (temp file + rename) so an interrupted job never leaves a partial file."""
    p = Path(path)
    arr = np.asarray(wave)
    if arr.ndim == 2:  # (C, N) -> soundfile's (N, C)
        arr = arr.T
    elif arr.ndim != 1:
        raise AudioError(f"{p}: expected (N,) or (C, N) waveform, got shape {arr.shape}")
    if sr <= 0:
        raise ValueError(f"sample rate must be positive, got {sr}")
    with atomic_path(p, suffix=".tmp.wav") as tmp:
        sf.write(tmp, arr, sr, subtype=subtype, format="WAV")
    return p
