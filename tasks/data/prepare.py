"""Clip-level preparation as a Prefect task: resample a chunk of clips and report manifest updates."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import task

from emotalker.configs.fingerprint import digest
from emotalker.tasks.data.resample import prepare_clip
from emotalker.tasks.media import MediaError


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
    return digest(parts, strict=True)


def failure_reason(error: str | None) -> str:
    """The kind of a clip's failure, without the file it names (``audio is silent (peak < 1e-4)``)."""
    text = (error or "unknown error").strip().splitlines()[0]
    head, sep, rest = text.partition(": ")
    if sep and ("/" in head or "\\" in head):  # errors start with the file they are about
        text = rest
    return text.split(": ", 1)[0]


def failure_summary(rows: list[dict[str, Any]], manifest: Path) -> str:
    """One line: how many clips failed, grouped by reason with their clip ids, and where the details are."""
    groups: dict[str, list[str]] = {}
    for r in rows:
        groups.setdefault(failure_reason(r.get("error")), []).append(r["clip_id"])
    parts = []
    for reason, ids in sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        shown = ", ".join(sorted(ids)[:5]) + (f", ... ({len(ids) - 5} more)" if len(ids) > 5 else "")
        parts.append(f"{reason}: {len(ids)} clip{'s' if len(ids) > 1 else ''} ({shown})")
    return "; ".join(parts) + f"; the reasons are in {manifest} (column error)"


def needs_prepare(row: dict[str, Any] | None, fingerprint: str) -> bool:
    """True unless the manifest row is prepared with the same fingerprint and its outputs still exist."""
    if row is None or row.get("status") != "prepared" or row.get("fingerprint") != fingerprint:
        return True
    return not all(row.get(k) and Path(row[k]).exists() for k in ("prepared_video", "prepared_audio"))


def prepare_one(
    clip: dict[str, Any], prepared_root: Path, fps: int, sample_rate: int, tolerance: int
) -> dict:
    """Prepare one clip; failures become a ``failed`` row with the error, never an exception.

    A failed clip keeps no outputs: what an earlier step (or an earlier good run) wrote is removed, so
    nothing downstream can pick up a half-prepared clip; the manifest row keeps the reason.
    """
    fp = prepare_fingerprint(clip, fps, sample_rate, tolerance)
    base = prepared_root / clip["actor"] / clip["clip_id"]
    video, audio = base.with_name(f"{base.name}.mp4"), base.with_name(f"{base.name}.wav")
    update: dict[str, Any] = {"clip_id": clip["clip_id"], "fingerprint": fp}
    try:
        out = prepare_clip(
            Path(clip["video_path"]),
            Path(clip["audio_path"]) if clip.get("audio_path") else None,
            video,
            audio,
            fps=fps,
            sample_rate=sample_rate,
            max_mismatch_frames=tolerance,
        )
    except Exception as exc:  # noqa: BLE001 - any failure of one clip is that clip's record, not the run's
        for partial in (video, audio):  # the actor's folder stays: other clips may be writing into it
            partial.unlink(missing_ok=True)
        error = str(exc) if isinstance(exc, MediaError | OSError) else f"{clip['video_path']}: {exc!r}"
        update.update(status="failed", error=error, prepared_video=None, prepared_audio=None)
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
