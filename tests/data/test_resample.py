import subprocess
from pathlib import Path

import numpy as np
import pytest

from emotalker.tasks.data.resample import prepare_clip, read_wav_samples
from emotalker.tasks.media import MediaError, count_video_frames


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args], check=True)


@pytest.fixture()
def mead_like(tmp_path: Path) -> tuple[Path, Path]:
    """2 s of 30 fps video and 48 kHz stereo AAC audio, like a MEAD clip."""
    video, audio = tmp_path / "001.mp4", tmp_path / "001.m4a"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=30:duration=2", "-pix_fmt", "yuv420p", str(video))
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2", "-ac", "2", str(audio))
    return video, audio


def test_prepare_resamples_to_25fps_and_16k_mono(mead_like, tmp_path):
    video, audio = mead_like
    out = prepare_clip(video, audio, tmp_path / "p" / "v.mp4", tmp_path / "p" / "a.wav")
    assert abs(out.n_frames - 50) <= 1
    assert count_video_frames(out.video) >= out.n_frames
    wave = read_wav_samples(out.audio)
    assert wave.ndim == 1 and wave.size == out.audio_samples == out.n_frames * 640
    assert out.duration_s == pytest.approx(out.n_frames / 25)
    # still a 440 Hz tone after resampling
    spectrum = np.abs(np.fft.rfft(wave))
    assert np.fft.rfftfreq(wave.size, 1 / 16000)[spectrum.argmax()] == pytest.approx(440, abs=2)
    assert not list((tmp_path / "p").glob(".*tmp*")), "temporary files left behind"


def test_corrupt_video_is_a_clear_error(tmp_path, mead_like):
    _, audio = mead_like
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(MediaError, match="bad.mp4"):
        prepare_clip(bad, audio, tmp_path / "v.mp4", tmp_path / "a.wav")
    assert not (tmp_path / "v.mp4").exists()


def test_silent_and_missing_audio_are_rejected(tmp_path, mead_like):
    video, _ = mead_like
    silent = tmp_path / "silent.m4a"
    _ffmpeg("-f", "lavfi", "-i", "anullsrc=r=48000:cl=mono", "-t", "2", str(silent))
    with pytest.raises(MediaError, match="silent"):
        prepare_clip(video, silent, tmp_path / "v.mp4", tmp_path / "a.wav")
    with pytest.raises(MediaError, match="no matching audio"):
        prepare_clip(video, None, tmp_path / "v.mp4", tmp_path / "a.wav")
    with pytest.raises(MediaError, match="missing"):
        prepare_clip(video, tmp_path / "gone.m4a", tmp_path / "v.mp4", tmp_path / "a.wav")


def test_length_mismatch_beyond_one_frame_is_rejected(tmp_path, mead_like):
    video, _ = mead_like
    short = tmp_path / "short.m4a"
    _ffmpeg("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=1.5", str(short))
    with pytest.raises(MediaError, match="disagree"):
        prepare_clip(video, short, tmp_path / "v.mp4", tmp_path / "a.wav")
    assert not (tmp_path / "v.mp4").exists() and not (tmp_path / "a.wav").exists()
