"""Lip-branch mel spectrogram with the Wav2Lip/SadTalker settings, implemented with numpy only.

Pipeline (Wav2Lip ``audio.melspectrogram``): pre-emphasis 0.97 -> centred STFT (n_fft 800, hop 200,
periodic Hann window 800, zero padding: SadTalker pins librosa 0.9.2, whose ``stft`` defaults to
``pad_mode='constant'`` since 0.9.0; a reflect pad moves ExpNet's output by ~0.8) -> magnitude
-> Slaney-scale mel filterbank (80 bins, 55-7600 Hz, Slaney area normalisation) -> 20 log10 with a
-100 dB floor, minus ref_level_db 20 -> symmetric normalisation to [-4, 4] with clipping.
At 16 kHz that is 80 mel frames per second; ``M = 1 + N // 200``.
"""

from __future__ import annotations

import numpy as np

from emotalker.configs.constants import (
    FPS,
    MEL_BINS,
    MEL_FMAX,
    MEL_FMIN,
    MEL_FPS,
    MEL_FRAMES_PER_VIDEO_FRAME,
    MEL_HOP,
    MEL_N_FFT,
    MEL_PREEMPHASIS,
    MEL_WIN,
    SAMPLE_RATE,
)

MIN_LEVEL_DB = -100.0
REF_LEVEL_DB = 20.0
MAX_ABS_VALUE = 4.0

# Slaney mel scale: linear below 1 kHz (3 mels per 200 Hz), logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray | float) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale, the non-HTK default."""
    f = np.asarray(hz, dtype=np.float64)
    mel = f / _F_SP
    log_region = f >= _MIN_LOG_HZ
    return np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(f, 1e-12) / _MIN_LOG_HZ) / _LOGSTEP, mel)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of ``hz_to_mel``."""
    m = np.asarray(mel, dtype=np.float64)
    return np.where(m >= _MIN_LOG_MEL, _MIN_LOG_HZ * np.exp(_LOGSTEP * (m - _MIN_LOG_MEL)), _F_SP * m)


def mel_filterbank(
    sr: int = SAMPLE_RATE,
    n_fft: int = MEL_N_FFT,
    n_mels: int = MEL_BINS,
    fmin: float = MEL_FMIN,
    fmax: float = MEL_FMAX,
) -> np.ndarray:
    """Triangular filters ``(n_mels, 1 + n_fft // 2)`` equally spaced in Slaney mels, each scaled to unit
    area over its Hz bandwidth (``2 / (f_right - f_left)``), as librosa's ``norm='slaney'``."""
    if not 0 <= fmin < fmax <= sr / 2:
        raise ValueError(f"need 0 <= fmin < fmax <= sr/2, got fmin={fmin}, fmax={fmax}, sr={sr}")
    fft_freqs = np.linspace(0.0, sr / 2, 1 + n_fft // 2)
    edges = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(edges)
    offsets = edges[:, None] - fft_freqs[None, :]
    rising = -offsets[:-2] / widths[:-1, None]
    falling = offsets[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


_MEL_BASIS: np.ndarray | None = None


def _basis() -> np.ndarray:
    global _MEL_BASIS
    if _MEL_BASIS is None:
        _MEL_BASIS = mel_filterbank()
    return _MEL_BASIS


def preemphasis(wave: np.ndarray, k: float = MEL_PREEMPHASIS) -> np.ndarray:
    """y[0] = x[0], y[n] = x[n] - k x[n-1] (``lfilter([1, -k], [1], x)``)."""
    x = np.asarray(wave, dtype=np.float64)
    y = x.copy()
    y[1:] -= k * x[:-1]
    return y


def stft_magnitude(
    wave: np.ndarray, n_fft: int = MEL_N_FFT, hop: int = MEL_HOP, win: int = MEL_WIN
) -> np.ndarray:
    """|STFT| ``(1 + n_fft//2, 1 + N//hop)`` with centred frames (zero pad n_fft//2 each side, as librosa
    0.9.2's ``stft(center=True)``, the version SadTalker's pretrained audio encoder was fed by)."""
    x = np.asarray(wave, dtype=np.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D array, got shape {x.shape}")
    if win > n_fft:
        raise ValueError(f"win ({win}) must not exceed n_fft ({n_fft})")
    padded = np.pad(x, n_fft // 2, mode="constant")
    n_frames = 1 + (padded.size - n_fft) // hop
    window = np.zeros(n_fft)
    start = (n_fft - win) // 2
    window[start : start + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)  # periodic Hann
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[::hop][:n_frames]
    return np.abs(np.fft.rfft(frames * window, axis=1)).T


def melspectrogram(wave: np.ndarray) -> np.ndarray:
    """Normalised log-mel ``(80, 1 + N // 200)`` float32 in [-4, 4] for a 16 kHz mono waveform."""
    x = np.asarray(wave)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"wave must be a non-empty 1-D waveform, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("wave contains NaN or inf")
    spec = stft_magnitude(preemphasis(x))
    mel = _basis().astype(np.float64) @ spec
    min_level = np.exp(MIN_LEVEL_DB / 20.0 * np.log(10.0))
    db = 20.0 * np.log10(np.maximum(min_level, mel)) - REF_LEVEL_DB
    norm = 2.0 * MAX_ABS_VALUE * ((db - MIN_LEVEL_DB) / -MIN_LEVEL_DB) - MAX_ABS_VALUE
    return np.clip(norm, -MAX_ABS_VALUE, MAX_ABS_VALUE).astype(np.float32)


def mel_window_starts(n_video_frames: int, fps: float = FPS) -> np.ndarray:
    """SadTalker's first mel index per video frame: ``int(80 * (i - 2) / fps)`` (truncation toward 0)."""
    if n_video_frames < 0:
        raise ValueError(f"n_video_frames must be >= 0, got {n_video_frames}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return np.array([int(MEL_FPS * (i - 2) / fps) for i in range(n_video_frames)], dtype=np.int64)


def mel_windows(
    mel: np.ndarray, n_video_frames: int, fps: float = FPS, width: int = MEL_FRAMES_PER_VIDEO_FRAME
) -> np.ndarray:
    """Per-video-frame mel chunks ``(T, 80, width)`` following SadTalker's rule.

    Window i covers mel indices ``start_i .. start_i + width - 1`` with ``start_i`` from
    ``mel_window_starts``; each index is clamped to ``[0, M-1]``, so the first frames repeat mel frame 0
    and frames past the end repeat the last mel frame. Every video frame gets a full window.
    """
    m = np.asarray(mel)
    if m.ndim != 2 or m.shape[1] == 0:
        raise ValueError(f"mel must be (bins, M) with M >= 1, got shape {m.shape}")
    starts = mel_window_starts(n_video_frames, fps)
    idx = np.clip(starts[:, None] + np.arange(width)[None, :], 0, m.shape[1] - 1)
    return np.ascontiguousarray(m[:, idx].transpose(1, 0, 2)).astype(np.float32, copy=False)
