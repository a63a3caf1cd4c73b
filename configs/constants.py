"""Dataset and coefficient layout facts shared by every stage (MEAD, Deep3DFace/BFM, HuBERT; the paper)."""

from __future__ import annotations

from typing import Literal

# MEAD
EMOTIONS: tuple[str, ...] = (
    "angry",
    "contempt",
    "disgusted",
    "fear",
    "happy",
    "neutral",
    "sad",
    "surprised",
)
EMOTION_TO_ID: dict[str, int] = {e: i for i, e in enumerate(EMOTIONS)}
LEVELS: tuple[int, ...] = (1, 2, 3)  # neutral has level_1 only
VIEWS: tuple[str, ...] = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
DEFAULT_TEST_ACTORS: tuple[str, ...] = ("M003", "M030", "W009", "W015")
MEAD_VIDEO_FPS = 30
MEAD_AUDIO_RATE = 48_000

# Pipeline rates
FPS = 25
SAMPLE_RATE = 16_000
SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640

# Deep3DFace 257-dim coefficient vector
COEFF_DIM = 257
COEFF_SLICES: dict[str, slice] = {
    "id": slice(0, 80),
    "exp": slice(80, 144),
    "tex": slice(144, 224),
    "angle": slice(224, 227),
    "gamma": slice(227, 254),
    "trans": slice(254, 257),
}

# 70-dim motion = exp 64 + angle 3 + trans 3
EXP_DIM = 64
POSE_DIM = 6
MOTION_DIM = EXP_DIM + POSE_DIM
# StyleTalk lip indices within the 64 expression coefficients
LIP_INDICES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 7, 9, 10, 11, 12, 13, 14)
NON_LIP_EXP_INDICES: tuple[int, ...] = tuple(i for i in range(EXP_DIM) if i not in LIP_INDICES)
LIP_DIM = len(LIP_INDICES)  # 13
# The face branch models the 51 non-lip expression coefficients + 6 pose = 57
FACE_INDICES: tuple[int, ...] = NON_LIP_EXP_INDICES + tuple(range(EXP_DIM, MOTION_DIM))
FACE_DIM = len(FACE_INDICES)  # 57

# HuBERT: 20 ms hop, 25 ms receptive field at 16 kHz
HUBERT_HOP = 320
HUBERT_WIN = 400
HUBERT_FPS = SAMPLE_RATE // HUBERT_HOP  # 50: stores keep HuBERT features and tokens at this native rate
AUDIO_FRAMES_PER_VIDEO_FRAME = HUBERT_FPS // FPS  # 2 HuBERT frames per 25 fps video frame
# waveform normalisation before HuBERT: as fairseq pretrained the checkpoint (only large, layer-norm
# models normalise) or as its Hugging Face preprocessor_config.json says
WaveformNormalization = Literal["pretraining", "preprocessor_config"]

# SadTalker / Wav2Lip mel settings for the lip branch
MEL_N_FFT = 800
MEL_HOP = 200
MEL_WIN = 800
MEL_BINS = 80
MEL_FMIN = 55.0
MEL_FMAX = 7600.0
MEL_PREEMPHASIS = 0.97
MEL_FRAMES_PER_VIDEO_FRAME = 16  # 0.2 s window
MEL_FPS = SAMPLE_RATE // MEL_HOP  # 80

# left by the demo's stand-in writers beside the renderer's files: the files there are random stand-ins
RENDERER_STANDIN_MARKER = ".renderer-standins.json"
