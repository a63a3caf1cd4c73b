"""The mel family: SadTalker's mel-spectrogram windows, one per video frame (the lip branch's input)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from emotalker.configs.constants import (
    MEL_BINS,
    MEL_FMAX,
    MEL_FMIN,
    MEL_FRAMES_PER_VIDEO_FRAME,
    MEL_HOP,
    MEL_N_FFT,
    SAMPLE_RATE,
)
from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.mel import mel_windows, melspectrogram
from emotalker.tasks.features.spec import ArraySpec, ClipOutputs, FeatureFamily, StoreSpec
from emotalker.tasks.features.workers import each_clip, video_rate_attrs

# v2: zero-padded STFT (librosa 0.9.2, SadTalker's pin); v1 stores were reflect-padded and recompute
MEL_FINGERPRINT = fingerprint("mel-v2", "stft-pad-constant", MEL_N_FFT, MEL_HOP, MEL_FMIN, MEL_FMAX)


def mel_fingerprint(cfg: PipelineConfig) -> str:
    """Mel windows depend only on the fixed SadTalker constants."""
    return MEL_FINGERPRINT


def mel_outputs(
    clips: list[dict[str, Any]], settings: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    from emotalker.tasks.features.audio_io import load_audio

    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        mel = melspectrogram(load_audio(clip["prepared_audio"], SAMPLE_RATE))
        windows = mel_windows(mel, int(clip["n_frames"])).astype(np.float32)
        return {"mel": ({"windows": windows}, video_rate_attrs(clip))}

    return each_clip(clips, outputs)


FAMILY = FeatureFamily(
    name="mel",
    flow="audio",
    stores=(StoreSpec("mel", {"windows": ArraySpec((MEL_BINS, MEL_FRAMES_PER_VIDEO_FRAME), "float32")}),),
    fingerprint=mel_fingerprint,
    compute=mel_outputs,
)
