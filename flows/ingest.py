"""Data flows: MEAD download + extraction, and 25 fps / 16 kHz preparation with the split."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.tasks import exponential_backoff

from emotalker.configs.constants import FPS, SAMPLE_RATE
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.storage.manifest import Manifest
from emotalker.storage.shared import publish_shared
from emotalker.storage.split import make_split, write_split_once
from emotalker.tasks.data.download import (
    TransientDownloadError,
    archive_specs,
    check_archives,
    download_archive,
    fetch_and_extract,
)
from emotalker.tasks.data.extract import extract_mead_actor
from emotalker.tasks.data.prepare import (
    SPLITS,
    clip_rows,
    failure_rows,
    mead_clips,
    nothing_prepared,
    prepare_clips,
    register_clips,
    split_table,
)
from emotalker.tasks.progress import progress_bar

FAILURES_TABLE = "clips that could not be prepared (kept in the manifest with their error)"


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
    specs = archive_specs(urls_file, cfg.download.urls_file)
    archives_dir, raw_root = cfg.paths.resolve("archives"), cfg.paths.resolve("raw")
    d = cfg.download
    download = _download.with_options(retries=d.retries, retry_delay_seconds=exponential_backoff(d.backoff_s))
    rows, failed = fetch_and_extract(
        specs,
        lambda spec: download(spec, archives_dir, d.timeout_s, d.chunk_bytes),
        lambda path: _extract(path, raw_root),
    )
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
    return check_archives(rows, failed)


@pipeline_flow("prepare")
def prepare_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """Resample every clip to 25 fps / 16 kHz mono, record it in the manifest, then write the split.

    Idempotent: clips whose inputs and settings are unchanged are skipped; failures are recorded with
    their error and the flow goes on.
    """
    cfg = resolve_config(config, overrides)
    d = cfg.data
    manifest = Manifest(cfg.paths.resolve("manifest"))
    clips = mead_clips(cfg.paths.resolve("raw"), d.views, d.max_clips)
    new, todo = register_clips(manifest, clips, FPS, SAMPLE_RATE, d.max_av_mismatch_frames)
    get_run_logger().info("%d clips found, %d new, %d to prepare", len(clips), len(new), len(todo))
    prepare_clips(
        manifest,
        todo,
        cfg.paths.resolve("prepared"),
        fps=FPS,
        sample_rate=SAMPLE_RATE,
        tolerance=d.max_av_mismatch_frames,
        workers=d.workers,
    )
    rows = clip_rows(manifest, clips)
    prepared = [r for r in rows if r["status"] == "prepared"]
    if not prepared:
        table_artifact("prepare-failures", failure_rows(rows), FAILURES_TABLE)
        raise nothing_prepared(rows, manifest.path)
    split, written = write_split_once(
        cfg.paths.resolve("split"),
        make_split(prepared, d.test_actors, d.val_actors, d.val_fraction, cfg.seed),
    )
    publish_shared(cfg.paths)  # with features_url: beside the stores, for machines without this root
    table_artifact("prepare-failures", failure_rows(rows), FAILURES_TABLE)
    table_artifact("split", split_table(split), "train/val/test split by actor")
    return {
        "status": dict(Counter(r["status"] for r in rows)),
        "prepared_now": len(todo),
        "split_written": written,
        "split": {k: len(split[k]) for k in SPLITS},
    }
