"""Data flows: MEAD download + extraction, and 25 fps / 16 kHz preparation with the split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.tasks import exponential_backoff

from emotalker.configs.secrets import redact_secrets
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.storage.manifest import Manifest, clip_id_for
from emotalker.storage.shared import publish_shared
from emotalker.storage.split import make_split, write_split_once
from emotalker.tasks.data.download import TransientDownloadError, download_archive, load_url_manifest
from emotalker.tasks.data.extract import extract_mead_actor, scan_mead_tree
from emotalker.tasks.data.prepare import (
    failure_summary,
    needs_prepare,
    prepare_chunk,
    prepare_fingerprint,
)
from emotalker.tasks.progress import progress_bar

CHUNK = 32  # clips per prepare task: the manifest is updated after each, so a kill loses at most one chunk


def _transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retries a download only for failures worth retrying (not a 404 or a checksum mismatch)."""
    try:
        exc = state.result(raise_on_failure=False)
    except Exception:  # noqa: BLE001 - an unreadable result is no reason to retry
        return False
    return isinstance(exc, TransientDownloadError)


@task(name="download-archive", task_run_name="download-{spec.name}", retry_condition_fn=_transient)
def _download(spec: Any, dest: Path, timeout_s: float, chunk: int) -> Path:
    """One attempt per task run: transient failures are Prefect task retries (with exponential backoff,
    visible in the UI), each resuming from the ``.part`` file the previous attempt left."""
    artifact = create_progress_artifact(progress=0.0, description=f"download {spec.name}")
    last = [0.0]
    # bytes in the terminal / log lines (the artifact above is this task's progress in Prefect)
    bar = progress_bar(None, f"download {spec.name}", unit="B", artifact=False)
    seen = [0]

    def progress(done: int, total: int | None) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - seen[0])
        seen[0] = done
        if total:
            pct = 100.0 * done / total
            if pct - last[0] >= 5 or done == total:
                last[0] = pct
                update_progress_artifact(artifact_id=artifact, progress=pct)

    try:
        path = download_archive(
            spec, dest, retries=0, timeout_s=timeout_s, chunk_bytes=chunk, progress=progress
        )
    finally:
        bar.close()
    update_progress_artifact(artifact_id=artifact, progress=100.0)
    return path


@task(name="extract-actor", task_run_name="extract-{archive.name}")
def _extract(archive: Path, raw_root: Path) -> Path:
    return extract_mead_actor(archive, raw_root)


class NothingPrepared(ValueError):
    """Not one clip could be prepared; the message sums up the failures by reason."""


class ArchivesFailed(ValueError):
    """Some archives could not be downloaded or extracted; the good ones were. Names each bad one."""


def _reason(name: str, exc: BaseException) -> str:
    msg = redact_secrets(str(exc))
    return msg if msg.startswith(name) else f"{name}: {msg}"


@pipeline_flow("download")
def download_flow(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    urls_file: CredentialFree | None = None,
) -> dict[str, Any]:
    """Fetch MEAD actor archives (resumable, verified) and extract them safely into ``paths.raw``.

    Each archive is handled on its own: every good one is downloaded and extracted, then the flow fails
    listing every bad archive with its reason.

    Args:
        urls_file: a URL manifest or local mirror directory instead of ``download.urls_file``.
    """
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    source = urls_file or (str(cfg.download.urls_file) if cfg.download.urls_file else None)
    if source is None:
        raise ValueError(
            "no archive list: set download.urls_file (a URL manifest or a local mirror directory)"
        )
    specs = load_url_manifest(Path(source))
    archives_dir, raw_root = cfg.paths.resolve("archives"), cfg.paths.resolve("raw")
    d = cfg.download
    download = _download.with_options(retries=d.retries, retry_delay_seconds=exponential_backoff(d.backoff_s))
    rows, failed = [], []
    for spec in specs:
        try:
            path = download(spec, archives_dir, d.timeout_s, d.chunk_bytes)
            actor = _extract(path, raw_root)
        except (OSError, ValueError) as exc:  # DownloadError, ArchiveError, ...: this archive only
            failed.append(_reason(spec.name, exc))
            logger.error("%s", failed[-1])
            continue
        rows.append({"archive": spec.name, "actor_dir": str(actor), "path": path})
    table_artifact(
        "mead-archives",
        [{"archive": r["archive"], "actor_dir": r["actor_dir"]} for r in rows],
        "downloaded and extracted MEAD archives",
    )
    table_artifact(
        "mead-archive-failures",
        [{"archive": f.split(": ", 1)[0], "reason": f.split(": ", 1)[-1]} for f in failed],
        "archives that could not be downloaded or extracted",
    )
    if failed:
        raise ArchivesFailed(
            f"{len(failed)} of {len(specs)} archives failed (the other {len(rows)} are extracted): "
            + "; ".join(failed)
        )
    return {
        "archives": [str(r["path"]) for r in rows],
        "actors": sorted({Path(r["actor_dir"]).name for r in rows}),
    }


@pipeline_flow("prepare")
def prepare_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """Resample every clip to 25 fps / 16 kHz mono, record it in the manifest, then write the split.

    Idempotent: clips whose inputs and settings are unchanged are skipped; failures are recorded with
    their error and the flow goes on.
    """
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    d = cfg.data
    manifest = Manifest(cfg.paths.resolve("manifest"))
    found = scan_mead_tree(cfg.paths.resolve("raw"), views=tuple(d.views))
    if not found:
        raise FileNotFoundError(f"no MEAD clips under {cfg.paths.resolve('raw')} for views {d.views}")
    clips = []
    for c in found:
        clip = dict(c, clip_id=clip_id_for(c["actor"], c["view"], c["emotion"], c["level"], c["sentence"]))
        clip["video_path"] = str(clip["video_path"])
        clip["audio_path"] = str(clip["audio_path"]) if clip.get("audio_path") else None
        clips.append(clip)
    clips.sort(key=lambda c: c["clip_id"])
    if d.max_clips is not None:
        clips = clips[: d.max_clips]
    new = [dict(c, status="raw") for c in clips if c["clip_id"] not in manifest]
    if new:
        manifest.upsert(new)
    todo = [
        c
        for c in clips
        if needs_prepare(
            manifest.get(c["clip_id"]), prepare_fingerprint(c, d.fps, d.sample_rate, d.max_av_mismatch_frames)
        )
    ]
    logger.info("%d clips found, %d new, %d to prepare", len(clips), len(new), len(todo))
    prepared_root = cfg.paths.resolve("prepared")
    bar = progress_bar(len(todo), "prepare", unit="clip")
    for i in range(0, len(todo), CHUNK):
        chunk = todo[i : i + CHUNK]
        updates = prepare_chunk(
            chunk,
            prepared_root,
            d.fps,
            d.sample_rate,
            d.max_av_mismatch_frames,
            d.workers,
            chunk_name=f"{i // CHUNK:04d}",
        )
        manifest.upsert(updates)
        bar.update(len(chunk))
        for u in updates:
            if u["status"] == "failed":
                logger.warning("clip %s failed: %s", u["clip_id"], u["error"])
    bar.close()
    ids = {c["clip_id"] for c in clips}
    rows = [r for r in manifest.records() if r["clip_id"] in ids]
    prepared = [r for r in rows if r["status"] == "prepared"]
    failed = [r for r in rows if r["status"] == "failed"]
    if not prepared:
        table_artifact(
            "prepare-failures",
            [{"clip_id": r["clip_id"], "error": r["error"]} for r in failed],
            "clips that could not be prepared (kept in the manifest with their error)",
        )
        raise NothingPrepared(
            f"prepare: none of the {len(rows)} clips could be prepared; "
            + failure_summary(failed, cfg.paths.resolve("manifest"))
        )
    split, written = write_split_once(
        cfg.paths.resolve("split"),
        make_split(prepared, d.test_actors, d.val_actors, d.val_fraction, cfg.seed),
    )
    publish_shared(cfg.paths)  # with features_url: beside the stores, for machines without this root
    counts = Counter(r["status"] for r in rows)
    table_artifact(
        "prepare-failures",
        [{"clip_id": r["clip_id"], "error": r["error"]} for r in rows if r["status"] == "failed"],
        "clips that could not be prepared (kept in the manifest with their error)",
    )
    table_artifact(
        "split",
        [
            {"split": k, "actors": ", ".join(split["actors"][k]), "clips": len(split[k])}
            for k in ("train", "val", "test")
        ],
        "train/val/test split by actor",
    )
    return {
        "status": dict(counts),
        "prepared_now": len(todo),
        "split_written": written,
        "split": {k: len(split[k]) for k in ("train", "val", "test")},
    }
