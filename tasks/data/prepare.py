"""Clip-level preparation as a Prefect task: resample a chunk of clips and report manifest updates."""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import task

from emotalker.tasks.data.media import MediaError, prepare_clip


def prepare_fingerprint(clip: dict[str, Any], fps: int, sample_rate: int, tolerance: int) -> str:
    """Identity of a clip's inputs and settings: a rerun with the same value does no media work."""
    parts: dict[str, Any] = {"fps": fps, "sr": sample_rate, "tol": tolerance}
    for key in ("video_path", "audio_path"):
        path = clip.get(key)
        if path and Path(path).exists():
            st = Path(path).stat()
            parts[key] = [str(path), st.st_size, st.st_mtime_ns]
        else:
            parts[key] = None
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def needs_prepare(row: dict[str, Any] | None, fingerprint: str) -> bool:
    """True unless the manifest row is prepared with the same fingerprint and its outputs still exist."""
    if row is None or row.get("status") != "prepared" or row.get("fingerprint") != fingerprint:
        return True
    return not all(row.get(k) and Path(row[k]).exists() for k in ("prepared_video", "prepared_audio"))


def prepare_one(
    clip: dict[str, Any], prepared_root: Path, fps: int, sample_rate: int, tolerance: int
) -> dict:
    """Prepare one clip; failures become a ``failed`` row with the error, never an exception."""
    fp = prepare_fingerprint(clip, fps, sample_rate, tolerance)
    base = prepared_root / clip["actor"] / clip["clip_id"]
    update: dict[str, Any] = {"clip_id": clip["clip_id"], "fingerprint": fp}
    try:
        out = prepare_clip(
            Path(clip["video_path"]),
            Path(clip["audio_path"]) if clip.get("audio_path") else None,
            base.with_suffix(".mp4"),
            base.with_suffix(".wav"),
            fps=fps,
            sample_rate=sample_rate,
            max_mismatch_frames=tolerance,
        )
    except (MediaError, OSError) as exc:
        update.update(status="failed", error=str(exc), prepared_video=None, prepared_audio=None)
        return update
    update.update(
        status="prepared",
        error=None,
        prepared_video=str(out.video),
        prepared_audio=str(out.audio),
        n_frames=out.n_frames,
        duration_s=out.duration_s,
        audio_samples=out.audio_samples,
    )
    return update


@task(name="prepare-clips", task_run_name="prepare-{chunk_name}")
def prepare_chunk(
    clips: list[dict[str, Any]],
    prepared_root: Path,
    fps: int,
    sample_rate: int,
    tolerance: int,
    workers: int,
    chunk_name: str = "chunk",
) -> list[dict[str, Any]]:
    """Prepare clips in parallel threads (ffmpeg runs as subprocesses, so threads suffice)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: prepare_one(c, prepared_root, fps, sample_rate, tolerance), clips))
