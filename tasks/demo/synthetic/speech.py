"""Real synthesized speech for the MEAD-shaped demo set: espeak-ng with emotion-dependent prosody.

espeak-ng is deterministic for a given text/voice/flag set, so the same seed gives the same samples.
Emotion changes pitch, speaking rate, word gaps and loudness, and the voice quality: a spectral tilt (a
tense, bright voice for anger, a dark one for sadness), a tremolo (a shaky voice for fear) and a colour
(a resonance at a frequency of its own per emotion), all interpolated from neutral by MEAD level. Each
actor gets a fixed voice variant (male for ``Mxxx``, female for ``Wxxx``). Voice quality is there
because prosody alone does not carry emotion across speakers: with pitch, rate, pauses and loudness only,
features fitted on two actors read the others' emotions at about 0.4, which bounds what the demo's
emotion model can pass on. The colour is there because the other cues are read over a second or more,
while stage 2 reads about 0.16 s of audio per motion token: without it a linear probe on the demo emotion
stand-in's frames read an unheard actor at 0.28 (chance 0.125), with it at 0.65 (measured 2026-12-06).
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.ndimage import gaussian_filter1d
from scipy.signal import butter, resample_poly, sosfiltfilt

from emotalker.configs.constants import EMOTIONS, LEVELS, MEAD_AUDIO_RATE, MEAD_VIDEO_FPS

ESPEAK_BIN = "espeak-ng"
ESPEAK_RATE = 22_050

# Short, phonetically varied English sentences (~1.5-3 s when spoken); written for this project.
SENTENCES: tuple[str, ...] = (
    "She left the blue coat on the train.",
    "We should meet by the old bridge.",
    "The kettle is boiling in the kitchen.",
    "Please bring me the papers by noon.",
    "My brother painted the fence yesterday.",
    "A cold wind blew across the field.",
    "They found a small key under the mat.",
    "Open the window and let the air in.",
    "The children laughed at the funny dog.",
    "I never thought it would rain today.",
    "Her garden is full of yellow roses.",
    "The market closes early on Sunday.",
    "He wrote a long letter to his aunt.",
    "Turn left at the end of the road.",
    "Nobody answered the phone this morning.",
    "The boat drifted slowly toward the shore.",
    "We cooked fresh fish over the fire.",
    "Your shoes are wet from the grass.",
    "The teacher smiled and closed the book.",
    "Five horses waited by the gate.",
)


@dataclass(frozen=True)
class Prosody:
    """espeak-ng controls: pitch 0-99, speed in words/min, word gap in 10 ms units; then, applied to its
        output, gain, voice quality's spectral tilt (dB above :data:`TILT_SPLIT_HZ` against below) and tremolo
        (loudness modulation depth 0-1 at ``tremolo_hz``) and colour (``colour_db`` of boost in a band around
    ``colour_hz``)."""

    pitch: float
    speed: float
    word_gap: float
    gain: float
    tilt_db: float = 0.0
    tremolo: float = 0.0
    tremolo_hz: float = 6.0
    colour_db: float = 0.0
    colour_hz: float = 1000.0


COLOUR_DB = 10.0  # an emotion's colour at full intensity: boost of its band (``COLOUR_BAND`` around it)
COLOUR_BAND = 1.25  # the band is [f / 1.25, f * 1.25]


def _colour(hz: float) -> dict[str, float]:
    return {"colour_db": COLOUR_DB, "colour_hz": hz}


# Prosody at full intensity (MEAD level 3); lower levels interpolate from neutral.
EMOTION_PROSODY: dict[str, Prosody] = {
    "neutral": Prosody(pitch=50, speed=165, word_gap=0, gain=1.0),
    "angry": Prosody(pitch=42, speed=200, word_gap=0, gain=1.7, tilt_db=9, **_colour(2500)),
    "contempt": Prosody(pitch=40, speed=145, word_gap=2, gain=0.9, tilt_db=-3, **_colour(900)),
    "disgusted": Prosody(
        pitch=36, speed=135, word_gap=3, gain=1.0, tilt_db=-6, tremolo=0.3, tremolo_hz=5.0, **_colour(600)
    ),
    "fear": Prosody(
        pitch=72, speed=205, word_gap=1, gain=0.75, tilt_db=2, tremolo=0.6, tremolo_hz=7.0, **_colour(3500)
    ),
    "happy": Prosody(pitch=68, speed=185, word_gap=0, gain=1.35, tilt_db=5, **_colour(2000)),
    "sad": Prosody(
        pitch=30, speed=125, word_gap=3, gain=0.55, tilt_db=-12, tremolo=0.3, tremolo_hz=3.5, **_colour(400)
    ),
    "surprised": Prosody(pitch=80, speed=175, word_gap=1, gain=1.45, tilt_db=3, **_colour(3000)),
}
TILT_SPLIT_HZ = 1500.0  # voice quality's tilt: gain of the band above this frequency over the band below
# How far each MEAD level moves the voice from neutral. Stronger than the face's (tasks/demo/synthetic/
# face.py: 0.4, 0.7, 1.0): at 0.4 a level-1 voice was too close to neutral for an emotion model trained on
# two actors to read on others (its held-out accuracy stayed at about 0.4), so no stage 2 could learn it.
LEVEL_INTENSITY: dict[int, float] = {1: 0.7, 2: 0.85, 3: 1.0}

_MALE_VARIANTS: tuple[str, ...] = ("m1", "m2", "m3", "m4", "m7")
_FEMALE_VARIANTS: tuple[str, ...] = ("f1", "f2", "f3", "f4", "f5")


class SpeechSynthesisError(RuntimeError):
    """espeak-ng missing or failing; the message names the command and its stderr."""


@dataclass(frozen=True)
class Voice:
    """An espeak-ng voice (``en-us+f3``) and a per-actor pitch offset, so actors sound different."""

    name: str
    pitch_offset: float


def check_emotion_level(emotion: str, level: int) -> None:
    """Reject emotions/levels MEAD does not have, naming the bad value."""
    if emotion not in EMOTIONS:
        raise ValueError(f"unknown emotion {emotion!r}; MEAD has {list(EMOTIONS)}")
    if level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; MEAD has {list(LEVELS)}")


def intensity(emotion: str, level: int) -> float:
    """How far from neutral an emotion at this level is (0 for neutral)."""
    check_emotion_level(emotion, level)
    return 0.0 if emotion == "neutral" else LEVEL_INTENSITY[level]


def prosody_for(emotion: str, level: int) -> Prosody:
    """Neutral prosody moved toward the emotion's by the level's intensity."""
    w = intensity(emotion, level)
    n, e = EMOTION_PROSODY["neutral"], EMOTION_PROSODY[emotion]
    return Prosody(
        pitch=n.pitch + w * (e.pitch - n.pitch),
        speed=n.speed + w * (e.speed - n.speed),
        word_gap=n.word_gap + w * (e.word_gap - n.word_gap),
        gain=n.gain * (e.gain / n.gain) ** w,
        tilt_db=n.tilt_db + w * (e.tilt_db - n.tilt_db),
        tremolo=n.tremolo + w * (e.tremolo - n.tremolo),
        tremolo_hz=e.tremolo_hz,
        colour_db=n.colour_db + w * (e.colour_db - n.colour_db),
        colour_hz=e.colour_hz,
    )


def voice_quality(x: np.ndarray, prosody: Prosody, sample_rate: int) -> np.ndarray:
    """``x`` with the prosody's spectral tilt (zero-phase split at :data:`TILT_SPLIT_HZ`), colour (a
    zero-phase band boost) and tremolo, the peak kept through tilt and colour so loudness stays the gain's
    cue; unchanged for neutral."""
    y = np.asarray(x, dtype=np.float64)
    if prosody.tilt_db and y.size > 32:
        low = sosfiltfilt(butter(2, TILT_SPLIT_HZ, "low", fs=sample_rate, output="sos"), y)
        high = sosfiltfilt(butter(2, TILT_SPLIT_HZ, "high", fs=sample_rate, output="sos"), y)
        tilted = low + 10.0 ** (prosody.tilt_db / 20.0) * high
        y = tilted * (np.max(np.abs(y)) / max(float(np.max(np.abs(tilted))), 1e-12))
    if prosody.colour_db and y.size > 32:
        band = [prosody.colour_hz / COLOUR_BAND, prosody.colour_hz * COLOUR_BAND]
        boosted = y + (10.0 ** (prosody.colour_db / 20.0) - 1.0) * sosfiltfilt(
            butter(2, band, "band", fs=sample_rate, output="sos"), y
        )
        y = boosted * (np.max(np.abs(y)) / max(float(np.max(np.abs(boosted))), 1e-12))
    if prosody.tremolo:
        t = np.arange(y.size) / sample_rate
        y = y * (1.0 - prosody.tremolo * 0.5 * (1.0 + np.sin(2.0 * np.pi * prosody.tremolo_hz * t)))
    return y


def stable_hash(*parts: object) -> int:
    """Process-independent hash (Python's ``hash`` is salted per process)."""
    return zlib.crc32("|".join(str(p) for p in parts).encode())


def voice_for_actor(actor: str, seed: int) -> Voice:
    """A male/female espeak variant from the actor's MEAD prefix, fixed per (actor, seed)."""
    if not actor or actor[0] not in "MW":
        raise ValueError(f"actor {actor!r} must start with M (male) or W (female), as MEAD ids do")
    variants = _MALE_VARIANTS if actor[0] == "M" else _FEMALE_VARIANTS
    h = stable_hash("voice", actor, seed)
    return Voice(name=f"en-us+{variants[h % len(variants)]}", pitch_offset=float((h >> 8) % 13) - 6.0)


def _espeak(text: str, voice: Voice, prosody: Prosody) -> np.ndarray:
    """Run espeak-ng into a temp wav; returns float32 samples at its native 22.05 kHz."""
    exe = shutil.which(ESPEAK_BIN)
    if exe is None:
        raise SpeechSynthesisError(f"{ESPEAK_BIN} not found on PATH; install it (Debian package espeak-ng)")
    pitch = int(round(np.clip(prosody.pitch + voice.pitch_offset, 0, 99)))
    with tempfile.TemporaryDirectory(prefix="emotalker-espeak-") as tmp:
        wav = Path(tmp) / "speech.wav"
        cmd = [
            exe,
            "-v",
            voice.name,
            "-p",
            str(pitch),
            "-s",
            str(int(round(prosody.speed))),
            "-g",
            str(int(round(prosody.word_gap))),
            "-a",
            "100",
            "-w",
            str(wav),
            "--",
            text,
        ]
        proc = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if proc.returncode != 0 or not wav.is_file():
            raise SpeechSynthesisError(f"{' '.join(cmd)} failed ({proc.returncode}): {proc.stderr.decode()}")
        data, sr = sf.read(io.BytesIO(wav.read_bytes()), dtype="float32", always_2d=True)
    if sr != ESPEAK_RATE:
        raise SpeechSynthesisError(f"espeak-ng wrote {sr} Hz, expected {ESPEAK_RATE}")
    return data.mean(axis=1)


def synthesize(
    text: str, voice: Voice, prosody: Prosody, sample_rate: int = MEAD_AUDIO_RATE, pad_s: float = 0.15
) -> np.ndarray:
    """Speak ``text``; float32 mono at ``sample_rate``, ``pad_s`` of silence each side, peak <= 0.95."""
    if not text.strip():
        raise ValueError("cannot synthesize empty text")
    x = _espeak(text, voice, prosody).astype(np.float64)
    g = np.gcd(sample_rate, ESPEAK_RATE)
    x = resample_poly(x, sample_rate // g, ESPEAK_RATE // g)
    # espeak leaves silence at both ends; trim it so all clips share the same padding.
    loud = np.flatnonzero(np.abs(x) > 1e-3)
    if loud.size:
        x = x[loud[0] : loud[-1] + 1]
    x = voice_quality(x, prosody, sample_rate) * prosody.gain * 0.5
    peak = float(np.max(np.abs(x))) if x.size else 0.0
    if peak > 0.95:
        x *= 0.95 / peak
    pad = np.zeros(int(round(pad_s * sample_rate)))
    return np.concatenate([pad, x, pad]).astype(np.float32)


def fit_to_frames(
    audio: np.ndarray, sample_rate: int = MEAD_AUDIO_RATE, fps: int = MEAD_VIDEO_FPS
) -> np.ndarray:
    """Zero-pad audio to a whole number of video frames, so audio and video durations agree exactly."""
    hop = sample_rate // fps
    n = -(-len(audio) // hop) * hop
    return np.pad(audio, (0, n - len(audio))).astype(np.float32)


def _frame_feature(audio: np.ndarray, n_frames: int, hop: int) -> np.ndarray:
    """(n_frames, 2*hop) windows centred on each frame's midpoint (zero-padded at the ends)."""
    padded = np.pad(audio.astype(np.float64), (hop // 2, hop + hop // 2))
    idx = np.arange(n_frames)[:, None] * hop + np.arange(2 * hop)[None, :]
    return padded[idx]


def speech_envelope(
    audio: np.ndarray,
    sample_rate: int = MEAD_AUDIO_RATE,
    fps: int = MEAD_VIDEO_FPS,
    floor_db: float = -40.0,
    smooth_frames: float = 1.0,
) -> np.ndarray:
    """Per-video-frame loudness in [0, 1]: windowed RMS in dB relative to the clip peak, smoothed.

    This is the signal the mouth opening follows, so audio predicts the lips.
    """
    hop = sample_rate // fps
    n_frames = len(audio) // hop
    if n_frames == 0:
        raise ValueError(f"audio of {len(audio)} samples is shorter than one frame ({hop} samples)")
    rms = np.sqrt(np.mean(_frame_feature(audio, n_frames, hop) ** 2, axis=1)) + 1e-9
    db = 20.0 * np.log10(rms / rms.max())
    env = np.clip((db - floor_db) / -floor_db, 0.0, 1.0)
    if smooth_frames > 0:
        env = gaussian_filter1d(env, smooth_frames, mode="nearest")
    return env.astype(np.float32)


def speech_brightness(
    audio: np.ndarray,
    sample_rate: int = MEAD_AUDIO_RATE,
    fps: int = MEAD_VIDEO_FPS,
    cutoff_hz: float = 2000.0,
) -> np.ndarray:
    """Per-frame share of energy above ``cutoff_hz`` in [0, 1] (a crude "ee" vs "oo" cue), smoothed."""
    hop = sample_rate // fps
    n_frames = len(audio) // hop
    frames = _frame_feature(audio, n_frames, hop) * np.hanning(2 * hop)[None, :]
    spec = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(2 * hop, 1.0 / sample_rate)
    hi = spec[:, freqs >= cutoff_hz].sum(axis=1)
    total = spec.sum(axis=1) + 1e-12
    env = speech_envelope(audio, sample_rate, fps, smooth_frames=0)
    bright = np.where(env > 0.3, hi / total, 0.0)
    return gaussian_filter1d(bright, 1.5, mode="nearest").astype(np.float32)
