"""Decoding wav/m4a/mp4 to 16 kHz mono with PyAV, validation errors, atomic wav writing."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import soundfile as sf

from emotalker.tasks.features.audio_io import AudioError, load_audio, validate_audio, write_wav


def _tone(freq: float, sr: int, seconds: float, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wave: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(wave * np.hanning(wave.size)))
    return float(np.fft.rfftfreq(wave.size, 1 / sr)[np.argmax(spec)])


def _encode(path: Path, audio: np.ndarray | None, sr: int, with_video: bool) -> None:
    """Write stereo AAC (and optionally a tiny H.264 track) with PyAV."""
    with av.open(str(path), "w") as out:
        vs = None
        if with_video:
            vs = out.add_stream("libx264", rate=25)
            vs.width, vs.height, vs.pix_fmt = 32, 32, "yuv420p"
        as_ = out.add_stream("aac", rate=sr, layout="stereo") if audio is not None else None
        if vs is not None:
            for i in range(5):
                img = np.full((32, 32, 3), 20 * i, dtype=np.uint8)
                for pkt in vs.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                    out.mux(pkt)
            for pkt in vs.encode(None):
                out.mux(pkt)
        if as_ is not None:
            stereo = np.stack([audio, audio]).astype(np.float32)
            step = 1024
            for s in range(0, stereo.shape[1], step):
                chunk = np.ascontiguousarray(stereo[:, s : s + step])
                frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="stereo")
                frame.sample_rate = sr
                frame.pts = s
                frame.time_base = Fraction(1, sr)
                for pkt in as_.encode(frame):
                    out.mux(pkt)
            for pkt in as_.encode(None):
                out.mux(pkt)


def test_wav_round_trip_at_16k(tmp_path: Path) -> None:
    x = _tone(300, 16000, 0.5)
    p = write_wav(tmp_path / "sub" / "a.wav", x, 16000)
    assert p.is_file() and not list(p.parent.glob("*.tmp*"))
    y = load_audio(p)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_allclose(y, x, atol=1e-4)  # PCM_16 quantisation


def test_48k_stereo_wav_resampled_to_16k_mono(tmp_path: Path) -> None:
    x = _tone(440, 48000, 1.0)
    sf.write(tmp_path / "s.wav", np.stack([x, x], axis=1), 48000, subtype="FLOAT")
    y = load_audio(tmp_path / "s.wav", target_sr=16000)
    assert y.ndim == 1 and abs(y.size - 16000) <= 32
    assert abs(_peak_hz(y, 16000) - 440) < 3
    both = load_audio(tmp_path / "s.wav", target_sr=16000, mono=False)
    assert both.shape[0] == 2 and abs(both.shape[1] - 16000) <= 32


def test_m4a_decoded_and_resampled(tmp_path: Path) -> None:
    p = tmp_path / "a.m4a"
    _encode(p, _tone(1000, 48000, 1.0), 48000, with_video=False)
    y = load_audio(p)
    assert abs(y.size - 16000) < 1200  # AAC priming/padding adds at most a frame or two
    assert abs(_peak_hz(y, 16000) - 1000) < 3
    assert np.sqrt(np.mean(y[2000:14000] ** 2)) > 0.2  # the tone survived the down-mix


def test_mp4_audio_track_and_video_only_error(tmp_path: Path) -> None:
    p = tmp_path / "v.mp4"
    _encode(p, _tone(700, 44100, 0.5), 44100, with_video=True)
    y = load_audio(p)
    assert abs(y.size - 8000) < 1200
    assert abs(_peak_hz(y, 16000) - 700) < 5
    silent = tmp_path / "silent.mp4"
    _encode(silent, None, 16000, with_video=True)
    with pytest.raises(AudioError, match="no audio stream"):
        load_audio(silent)


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.wav"):
        load_audio(tmp_path / "nope.wav")
    bad = tmp_path / "bad.m4a"
    bad.write_bytes(b"not a media file at all" * 10)
    with pytest.raises(AudioError, match="bad.m4a"):
        load_audio(bad)


def test_validate_audio() -> None:
    with pytest.raises(AudioError, match="empty"):
        validate_audio(np.zeros(0, np.float32), 16000, name="clipA")
    with pytest.raises(AudioError, match="clipB.*399 samples"):
        validate_audio(np.zeros(399, np.float32), 16000, name="clipB")
    nan = np.zeros(1000, np.float32)
    nan[5] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        validate_audio(nan)
    with pytest.raises(AudioError, match="1-D"):
        validate_audio(np.zeros((2, 1000), np.float32))
    ok = validate_audio(np.zeros(400, np.float64))
    assert ok.dtype == np.float32 and ok.size == 400
    assert issubclass(AudioError, ValueError)
    # At 48 kHz one HuBERT frame (25 ms) is 1200 samples.
    with pytest.raises(AudioError, match="1200"):
        validate_audio(np.zeros(1000, np.float32), 48000)
