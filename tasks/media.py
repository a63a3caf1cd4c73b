"""The one module that opens media with PyAV: probing, decoding video frames and audio, encoding mp4/m4a.

Every stage reads and writes audio/video through these functions, so codec settings and error messages
live in one place; errors are ``MediaError`` (a ``ValueError``) and name the file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from emotalker.configs.constants import SAMPLE_RATE


class MediaError(ValueError):
    """Media that cannot be opened, has no stream of the kind asked for, or cannot be decoded."""


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int


@dataclass(frozen=True)
class AudioInfo:
    sample_rate: int
    channels: int


# ------------------------------------------------------------------------------------------ probing


def probe_video(path: str | Path) -> VideoInfo:
    """Size of the first video stream, without decoding it."""
    p = Path(path)
    try:
        with av.open(str(p)) as c:
            if not c.streams.video:
                raise MediaError(f"{p}: no video stream")
            s = c.streams.video[0]
            return VideoInfo(width=int(s.width), height=int(s.height))
    except av.FFmpegError as exc:
        raise MediaError(f"{p}: unreadable video: {exc}") from exc


def probe_audio(path: str | Path) -> AudioInfo:
    """Sample rate and channel count of the first audio stream, without decoding it."""
    p = Path(path)
    try:
        with av.open(str(p)) as c:
            if not c.streams.audio:
                raise MediaError(f"{p} has no audio stream")
            s = c.streams.audio[0]
            return AudioInfo(sample_rate=int(s.rate), channels=int(s.channels))
    except av.FFmpegError as exc:
        raise MediaError(f"{p} is not a readable audio file: {exc}") from exc


# ------------------------------------------------------------------------------------------ video


def count_video_frames(path: str | Path) -> int:
    """Decode-count frames (container frame counts are unreliable after resampling)."""
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise MediaError(f"{path}: no video stream")
            return sum(1 for _ in container.decode(video=0))
    except av.FFmpegError as exc:
        raise MediaError(f"{path}: unreadable video: {exc}") from exc


def read_video_frames(path: str | Path) -> tuple[np.ndarray, float]:
    """Decode a video to RGB frames (T, H, W, 3) uint8 and its frame rate."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {p}")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(f"{p}: no video stream")
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.guessed_rate or 0.0)
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
    except av.FFmpegError as exc:
        raise MediaError(f"{p}: cannot decode video ({exc})") from exc
    if not frames:
        raise MediaError(f"{p}: video has no frames")
    return np.stack(frames), fps


def iter_video_frames(
    path: str | Path, batch_size: int = 32, max_frames: int | None = None
) -> Iterator[np.ndarray]:
    """Decode a video in (<= batch_size, H, W, 3) RGB uint8 batches, so long videos never sit in memory
    whole; ``max_frames`` stops after that many frames."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"video not found: {p}")
    batch: list[np.ndarray] = []
    seen = 0
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise MediaError(f"{p}: no video stream")
            for frame in container.decode(container.streams.video[0]):
                if max_frames is not None and seen >= max_frames:
                    break
                batch.append(frame.to_ndarray(format="rgb24"))
                seen += 1
                if len(batch) == batch_size:
                    yield np.stack(batch)
                    batch = []
    except av.FFmpegError as exc:
        raise MediaError(f"{p}: cannot decode video ({exc})") from exc
    if batch:
        yield np.stack(batch)


def encode_mp4(
    path: str | Path,
    frames: Iterable[np.ndarray],
    *,
    size: tuple[int, int],
    fps: int,
    wave: np.ndarray | None = None,
    sample_rate: int = SAMPLE_RATE,
    codec_options: dict[str, str] | None = None,
    bitexact: bool = False,
) -> int:
    """Encode RGB frames ((H, W, 3) uint8 of ``size`` = (W, H), both even) as H.264 yuv420p; returns the
    number of frames.

    ``wave`` (mono float at ``sample_rate``) is cut to the frames' length and muxed as AAC. ``bitexact``
    writes an mp4 without encoder-version metadata, so the same frames give the same bytes (with
    ``codec_options`` such as ``threads=1``).
    """
    opened = {"format": "mp4", "options": {"fflags": "+bitexact"}} if bitexact else {}
    n = 0
    with av.open(str(path), "w", **opened) as out:  # every stream is added before the first packet is muxed
        if codec_options:
            vs = out.add_stream("libx264", rate=fps, options=codec_options)
        else:
            vs = out.add_stream("libx264", rate=fps)
        vs.width, vs.height = size[0], size[1]
        vs.pix_fmt = "yuv420p"
        aus = None
        if wave is not None:
            aus = out.add_stream("aac", rate=sample_rate)
            aus.layout = "mono"
        for frame in frames:
            out.mux(vs.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
            n += 1
        out.mux(vs.encode())
        if aus is not None and wave is not None:
            pcm = (np.clip(wave[: round(n * sample_rate / fps)], -1, 1) * 32767).astype(np.int16)[None]
            af = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            af.sample_rate = sample_rate
            out.mux(aus.encode(af))
            out.mux(aus.encode())
    return n


# ------------------------------------------------------------------------------------------ audio


def read_audio(path: str | Path, target_sr: int = SAMPLE_RATE, mono: bool = True) -> np.ndarray:
    """Decode the first audio stream of ``path`` and resample it to ``target_sr`` with libswresample.

    Returns float32 ``(N,)`` when ``mono`` (channels are down-mixed), else ``(C, N)``.
    """
    p = Path(path)
    try:
        container = av.open(str(p))
    except av.error.FFmpegError as exc:
        raise MediaError(f"cannot open {p} as media: {exc}") from exc
    chunks: list[np.ndarray] = []
    n_channels = 1
    try:
        if not container.streams.audio:
            raise MediaError(f"{p} has no audio stream")
        stream = container.streams.audio[0]
        layout = "mono" if mono else stream.layout.name
        n_channels = 1 if mono else stream.channels
        resampler = av.AudioResampler(format="fltp", layout=layout, rate=target_sr)
        try:
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):  # flush the resampler's delay line
                chunks.append(out.to_ndarray())
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot decode audio of {p}: {exc}") from exc
    finally:
        container.close()
    if chunks:
        wave = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    else:
        wave = np.zeros((n_channels, 0), dtype=np.float32)
    return np.ascontiguousarray(wave[0] if mono else wave)


def write_m4a(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Mono float audio -> AAC-LC in an .m4a (mp4) container, bit-exact muxing (reproducible bytes)."""
    with av.open(str(path), "w", format="ipod", options={"fflags": "+bitexact"}) as container:
        stream = container.add_stream("aac", rate=sample_rate, options={"aac_coder": "fast"})
        stream.layout = "mono"
        step = 1024
        for start in range(0, len(audio), step):
            chunk = np.ascontiguousarray(audio[None, start : start + step], dtype=np.float32)
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
            frame.sample_rate = sample_rate
            frame.pts = start
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
