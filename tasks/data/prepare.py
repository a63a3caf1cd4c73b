"""Clip preparation: MEAD clips found and recorded in the manifest, then resampled chunk by chunk (a Prefect
task per chunk) with the manifest updated after each."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from prefect import task

from emotalker.configs.fingerprint import digest
from emotalker.storage.manifest import Manifest, clip_id_for
from emotalker.tasks.data.extract import scan_mead_tree
from emotalker.tasks.data.resample import NoSpaceLeft, out_of_space, prepare_clip
from emotalker.tasks.media import MediaError
from emotalker.tasks.progress import progress_bar

SPLITS = ("train", "val", "test")
CHUNK = 32  # clips per prepare task: the manifest is updated after each, so a kill loses at most one chunk
log = logging.getLogger(__name__)  # an emotalker logger: its lines reach the Prefect flow run's log


class NothingPrepared(ValueError):
    """Not one clip could be prepared; the message sums up the failures by reason."""


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
        full = out_of_space(exc, base)
        for partial in (video, audio):  # the actor's folder stays: other clips may be writing into it
            partial.unlink(missing_ok=True)
        if full:  # the disk's failure, not the clip's: the row stays as it was, a rerun prepares it
            return {"clip_id": clip["clip_id"], "no_space": str(getattr(exc, "where", base))}
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
    *,
    fps: int,
    sample_rate: int,
    tolerance: int,
    workers: int,
    chunk_name: str = "chunk",
) -> list[dict[str, Any]]:
    """Prepare clips in parallel threads (ffmpeg runs as subprocesses, so threads suffice)."""
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda c: prepare_one(c, prepared_root, fps, sample_rate, tolerance), clips))


def escaped(text: str) -> str:
    """``text`` with the bytes of a non-UTF-8 file name written as ``\\xff`` (storable, printable)."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _bad_name(clip: dict[str, Any]) -> str | None:
    """The escaped path of the clip's first file whose name is not UTF-8 (the manifest cannot hold it)."""
    for key in ("video_path", "audio_path"):
        path = clip.get(key)
        if path is None:
            continue
        try:
            str(path).encode("utf-8")
        except UnicodeEncodeError:
            return escaped(str(path))
    return None


def mead_clips(raw_root: Path, views: Sequence[str], max_clips: int | None = None) -> list[dict[str, Any]]:
    """Every MEAD clip under ``raw_root`` as a clip record (``clip_id``, paths as strings), by clip id,
    the first ``max_clips`` only when set.

    A clip whose file name is not UTF-8 comes back with its names escaped, ``status: failed`` and the
    reason in ``error``: it cannot be stored or passed on as it is, and it must not stop the other clips.
    """
    found = scan_mead_tree(raw_root, views=tuple(views))
    if not found:
        raise FileNotFoundError(f"no MEAD clips under {raw_root} for views {views}")
    clips = []
    for c in found:
        bad = _bad_name(c)
        clip = dict(c, sentence=escaped(c["sentence"]))
        clip["clip_id"] = clip_id_for(c["actor"], c["view"], c["emotion"], c["level"], clip["sentence"])
        clip["video_path"] = escaped(str(clip["video_path"]))
        clip["audio_path"] = escaped(str(clip["audio_path"])) if clip.get("audio_path") else None
        if bad is not None:
            clip.update(status="failed", error=f"{bad}: file name is not valid UTF-8; rename the file")
        clips.append(clip)
    clips.sort(key=lambda c: c["clip_id"])
    return clips[:max_clips] if max_clips is not None else clips


def register_clips(
    manifest: Manifest, clips: list[dict[str, Any]], fps: int, sample_rate: int, tolerance: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Record clips new to the manifest as ``raw``; returns them and the clips whose inputs or settings
    changed since they were prepared (or that never were). Clips failed already (a non-UTF-8 file name)
    are recorded failed with their reason and never prepared."""
    new = [dict(c, status="raw") for c in clips if c["clip_id"] not in manifest and "error" not in c]
    refused = [c for c in clips if "error" in c]
    if new or refused:
        manifest.upsert(new + [dict(c, prepared_video=None, prepared_audio=None) for c in refused])
    for c in refused:
        log.warning("clip %s failed: %s", c["clip_id"], c["error"])
    todo = [
        c
        for c in clips
        if "error" not in c
        and needs_prepare(manifest.get(c["clip_id"]), prepare_fingerprint(c, fps, sample_rate, tolerance))
    ]
    return new, todo


def prepare_clips(
    manifest: Manifest,
    todo: list[dict[str, Any]],
    prepared_root: Path,
    *,
    fps: int,
    sample_rate: int,
    tolerance: int,
    workers: int,
) -> None:
    """Prepare ``todo`` in chunks of :data:`CHUNK` (one ``prepare_chunk`` task each), the manifest updated
    after each chunk; a failed clip is logged and recorded, never raised.

    A full disk stops the run with one :class:`NoSpaceLeft` naming the file system, after recording the
    clips prepared so far; the clips it hit keep their rows unchanged (a rerun after freeing space
    prepares them), none is marked failed for it.
    """
    bar = progress_bar(len(todo), "prepare", unit="clip")
    for i in range(0, len(todo), CHUNK):
        chunk = todo[i : i + CHUNK]
        updates = prepare_chunk(
            chunk,
            prepared_root,
            fps=fps,
            sample_rate=sample_rate,
            tolerance=tolerance,
            workers=workers,
            chunk_name=f"{i // CHUNK:04d}",
        )
        full = [u for u in updates if "no_space" in u]
        updates = [u for u in updates if "no_space" not in u]
        note = "free space and rerun prepare"
        try:
            if updates:
                manifest.upsert(updates)
        except Exception as exc:  # pyarrow's "[Errno 28] Error writing bytes to file" names no file
            if out_of_space(exc, manifest.path):
                bar.close()
                raise NoSpaceLeft(manifest.path, f"; the manifest was not updated: {note}") from exc
            raise
        bar.update(len(chunk))
        for u in updates:
            if u["status"] == "failed":
                log.warning("clip %s failed: %s", u["clip_id"], u["error"])
        if full:
            bar.close()
            left = len(todo) - i - len(updates)
            raise NoSpaceLeft(
                Path(full[0]["no_space"]), f"; {left} clip(s) not prepared (none marked failed): {note}"
            )
    bar.close()


def clip_rows(manifest: Manifest, clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The manifest rows of ``clips`` (prepared, failed with their error, or still raw)."""
    ids = {c["clip_id"] for c in clips}
    return [r for r in manifest.records() if r["clip_id"] in ids]


def failure_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``clip_id`` and ``error`` of each failed row (the prepare flow's failures table)."""
    return [{"clip_id": r["clip_id"], "error": r["error"]} for r in rows if r["status"] == "failed"]


def nothing_prepared(rows: list[dict[str, Any]], manifest: Path) -> NothingPrepared:
    """The error when none of ``rows`` is prepared: one line, the failures grouped by reason."""
    failed = [r for r in rows if r["status"] == "failed"]
    return NothingPrepared(
        f"prepare: none of the {len(rows)} clips could be prepared; " + failure_summary(failed, manifest)
    )


def split_table(split: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per split: its actors and how many clips (the prepare flow's split table)."""
    return [{"split": k, "actors": ", ".join(split["actors"][k]), "clips": len(split[k])} for k in SPLITS]
