"""tasks/media.py, the one module that opens media with PyAV: encode, probe and decode round trips."""

from pathlib import Path

import numpy as np
import pytest

from emotalker.tasks.media import (
    MediaError,
    count_video_frames,
    encode_mp4,
    iter_video_frames,
    probe_audio,
    probe_video,
    read_audio,
    read_video_frames,
    write_m4a,
)


def _frames(n: int = 10, h: int = 48, w: int = 64) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 255, (n, h, w, 3), dtype=np.uint8)


def test_mp4_with_audio_round_trips(tmp_path: Path) -> None:
    wave = (0.3 * np.sin(np.arange(16_000) / 16_000 * 2 * np.pi * 300)).astype(np.float32)
    path = tmp_path / "a.mp4"
    assert encode_mp4(path, iter(_frames()), size=(64, 48), fps=25, wave=wave) == 10
    assert probe_video(path) == probe_video(str(path))
    assert (probe_video(path).width, probe_video(path).height) == (64, 48)
    assert (probe_audio(path).sample_rate, probe_audio(path).channels) == (16_000, 1)
    assert count_video_frames(path) == 10
    frames, fps = read_video_frames(path)
    assert frames.shape == (10, 48, 64, 3) and frames.dtype == np.uint8 and fps == 25
    batches = list(iter_video_frames(path, batch_size=4, max_frames=9))
    assert [len(b) for b in batches] == [4, 4, 1]
    assert np.array_equal(np.concatenate(batches), frames[:9])
    audio = read_audio(path, 16_000)
    # cut to the frames' 0.4 s (AAC pads to whole 1024-sample frames), not the whole 1 s wave
    assert audio.dtype == np.float32 and 10 * 640 <= len(audio) <= 10 * 640 + 2048


def test_bitexact_encoding_is_reproducible(tmp_path: Path) -> None:
    opts = {"preset": "veryfast", "crf": "18", "threads": "1"}
    for name in ("a.mp4", "b.mp4"):
        encode_mp4(tmp_path / name, _frames(), size=(64, 48), fps=30, codec_options=opts, bitexact=True)
    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()
    with pytest.raises(MediaError, match="has no audio stream"):
        probe_audio(tmp_path / "a.mp4")


def test_m4a_round_trips_and_resamples(tmp_path: Path) -> None:
    audio = (0.3 * np.sin(np.arange(48_000) / 48_000 * 2 * np.pi * 220)).astype(np.float32)
    write_m4a(tmp_path / "a.m4a", audio, 48_000)
    assert probe_audio(tmp_path / "a.m4a").sample_rate == 48_000
    wave = read_audio(tmp_path / "a.m4a", 16_000)
    assert abs(len(wave) - 16_000) < 1024 and 0.2 < float(np.abs(wave).max()) < 0.4
    assert read_audio(tmp_path / "a.m4a", 16_000, mono=False).shape[0] == 1
    with pytest.raises(MediaError, match="no video stream"):
        read_video_frames(tmp_path / "a.m4a")


def test_unreadable_files_are_media_errors_that_name_them(tmp_path: Path) -> None:
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not media")
    assert issubclass(MediaError, ValueError)  # callers that catch ValueError keep working
    for read in (probe_video, probe_audio, count_video_frames, read_video_frames, read_audio):
        with pytest.raises(MediaError, match="bad.mp4"):
            read(bad)
    with pytest.raises(FileNotFoundError, match="gone.mp4"):
        read_video_frames(tmp_path / "gone.mp4")
