"""Media resampling: MEAD 30 fps video / 48 kHz audio -> 25 fps video and 16 kHz mono wav.

ffmpeg (Debian package) does the resampling; PyAV (``tasks/media.py``) probes the results. Outputs are
written to a temporary name and renamed, so a killed job never leaves a file that looks finished.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotalker.storage.files import atomic_path
from emotalker.tasks.media import MediaError, count_video_frames

LOW_SPACE_BYTES = 1 << 20  # a failure with less than this free beside the outputs is the disk's fault


class NoSpaceLeft(OSError):
    """The file system of an output is full: no clip's fault, so no clip is marked failed for it."""

    def __init__(self, where: Path, note: str = "") -> None:
        self.message = f"no space left on {mount_point(where)} (writing {where}){note}"
        super().__init__(errno.ENOSPC, self.message)
        self.where, self.note = where, note

    def __reduce__(self) -> tuple[type, tuple[Path, str]]:  # pickled by Prefect's results
        return (NoSpaceLeft, (self.where, self.note))

    def __str__(self) -> str:
        return self.message


def mount_point(path: Path) -> Path:
    """The mount point holding ``path`` (its closest existing ancestor's file system)."""
    p = Path(os.path.abspath(path))
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def out_of_space(exc: BaseException, where: Path) -> bool:
    """True when ``exc`` (or the state of the disk after it) says the output's file system is full.

    ffmpeg exits 0 on ENOSPC and a truncated file then fails later as "Invalid data" or a libsndfile
    error, so besides errno 28 the free space left beside the output decides.
    """
    if isinstance(exc, NoSpaceLeft) or (isinstance(exc, OSError) and exc.errno == errno.ENOSPC):
        return True
    if "No space left on device" in str(exc) or "[Errno 28]" in str(exc):
        return True
    try:
        return shutil.disk_usage(mount_point(where)).free < LOW_SPACE_BYTES
    except OSError:
        return False


@dataclass(frozen=True)
class PreparedClip:
    video: Path
    audio: Path
    n_frames: int
    duration_s: float
    audio_samples: int


def _ffmpeg() -> str:
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise MediaError("ffmpeg not found on PATH; install it (apt-get install ffmpeg) or run `make setup`")
    return exe


def _run_ffmpeg(args: list[str], what: Path) -> None:
    """Run ffmpeg on ``what``; its last argument is the output, checked for ENOSPC even on exit 0."""
    cmd = [_ffmpeg(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, errors="replace")
    out = Path(args[-1])
    if "No space left on device" in proc.stderr or (proc.returncode == 0 and not out.is_file()):
        raise NoSpaceLeft(out)  # ffmpeg exits 0 when the disk fills: its stderr says so
    if proc.returncode != 0:
        msg = proc.stderr.strip().splitlines()[-3:] if proc.stderr.strip() else ["(no message)"]
        raise MediaError(f"{what}: ffmpeg failed: {' | '.join(msg)}")


def read_wav_samples(path: Path) -> np.ndarray:
    import soundfile as sf

    wave, _ = sf.read(str(path), dtype="float32", always_2d=False)
    return np.asarray(wave, dtype=np.float32)


def resample_video(src: Path, dst: Path, fps: int = 25) -> int:
    """Resample to ``fps`` (frame-rate conversion as ffmpeg's fps filter does), H.264, no audio."""
    if not src.is_file():
        raise MediaError(f"{src}: video file missing")
    with atomic_path(dst, suffix=f".tmp{dst.suffix}") as tmp:
        args = ["-an", "-vf", f"fps={fps}", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18"]
        _run_ffmpeg(["-i", str(src), *args, "-pix_fmt", "yuv420p", "-f", "mp4", str(tmp)], src)
        n = count_video_frames(tmp)
        if n == 0:
            raise MediaError(f"{src}: video has no frames")
    return n


def resample_audio(src: Path, dst: Path, sample_rate: int = 16_000) -> int:
    """Decode any container, downmix to mono, resample to ``sample_rate`` 16-bit wav."""
    if not src.is_file():
        raise MediaError(f"{src}: audio file missing")
    with atomic_path(dst, suffix=f".tmp{dst.suffix}") as tmp:
        args = ["-vn", "-ac", "1", "-ar", str(sample_rate), "-c:a", "pcm_s16le"]
        _run_ffmpeg(["-i", str(src), *args, "-f", "wav", str(tmp)], src)
        wave = read_wav_samples(tmp)
        if wave.size == 0:
            raise MediaError(f"{src}: audio stream is empty")
        if float(np.max(np.abs(wave))) < 1e-4:
            raise MediaError(f"{src}: audio is silent (peak < 1e-4)")
    return int(wave.size)


def trim_wav(path: Path, n_samples: int) -> None:
    """Cut a wav to ``n_samples`` atomically (used to align audio with the video frame count)."""
    import soundfile as sf

    wave, sr = sf.read(str(path), dtype="int16")
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:
        sf.write(str(tmp), wave[:n_samples], sr, subtype="PCM_16", format="WAV")


def prepare_clip(
    video_src: Path,
    audio_src: Path | None,
    video_dst: Path,
    audio_dst: Path,
    *,
    fps: int = 25,
    sample_rate: int = 16_000,
    max_mismatch_frames: int = 1,
) -> PreparedClip:
    """Resample one clip and check audio/video agree within ``max_mismatch_frames`` frames.

    Within tolerance the longer stream is trimmed so frame i always has samples
    [i*sr/fps, (i+1)*sr/fps); beyond it the clip is rejected with both lengths in the message.
    """
    if audio_src is None:
        raise MediaError(f"{video_src}: no matching audio file")
    n_frames = resample_video(video_src, video_dst, fps)
    n_samples = resample_audio(audio_src, audio_dst, sample_rate)
    spf = sample_rate / fps
    audio_frames = n_samples / spf
    if abs(audio_frames - n_frames) > max_mismatch_frames + 1e-6:
        video_dst.unlink(missing_ok=True)
        audio_dst.unlink(missing_ok=True)
        raise MediaError(
            f"{video_src}: audio/video lengths disagree: {n_frames} video frames vs "
            f"{audio_frames:.2f} frames of audio ({n_samples} samples at {sample_rate} Hz); "
            f"tolerance {max_mismatch_frames} frame(s)"
        )
    usable = min(n_frames, int(audio_frames))
    keep_samples = int(round(usable * spf))
    if keep_samples < n_samples:
        trim_wav(audio_dst, keep_samples)
        n_samples = keep_samples
    return PreparedClip(video_dst, audio_dst, usable, usable / fps, n_samples)
