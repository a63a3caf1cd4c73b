"""Feature flows: Deep3DFace coefficients, HuBERT features, k-means tokens and mel windows into Zarr.

The heavy work runs on a Dask cluster (``dask.address`` or a loopback LocalCluster); every worker
writes its clips straight into the Zarr stores. A clip is recomputed only when it is missing from its
store or its fingerprint (model files + settings) changed, so a rerun with nothing changed starts no
cluster at all.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from emotalker.configs.schema import PipelineConfig
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.storage.failures import failures_file, load_failures, record_failures
from emotalker.storage.shared import publish_shared
from emotalker.storage.workspace import Workspace
from emotalker.tasks.features.cluster import dask_client
from emotalker.tasks.features.families import families
from emotalker.tasks.features.plan import prepared_clips, todo, up_to_date
from emotalker.tasks.features.spec import FeatureFamily, FlowName
from emotalker.tasks.features.workers import failure_update, submit_chunks
from emotalker.tasks.progress import progress_bar

CHUNK_CLIPS = 16


def _chunks(clips: list[dict[str, Any]], size: int = CHUNK_CLIPS) -> list[list[dict[str, Any]]]:
    ordered = sorted(clips, key=lambda c: int(c.get("n_frames") or 0))  # length-bucketed batches
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


@task(name="feature-chunk", task_run_name="{family}-chunk-{index}", cache_policy=NO_CACHE)
def await_chunk(family: str, index: int, clip_ids: list[str], computation: Any) -> list[dict[str, Any]]:
    """One chunk's Dask computation as a Prefect task run, so the UI shows progress and failures per chunk.

    The work itself runs on Dask (``computation`` is its future); this run waits for it, logs the chunk's
    failed clips and returns every clip's status. A chunk whose worker died fails this run.
    """
    logger = get_run_logger()
    statuses: list[dict[str, Any]] = computation.result()
    failed = [s for s in statuses if not s["ok"]]
    for s in failed:
        logger.warning("%s %s failed: %s", family, s["clip_id"], s["error"])
    logger.info("%s chunk %d: %d of %d clips ok", family, index, len(statuses) - len(failed), len(clip_ids))
    return statuses


def run_on_dask(
    cfg: PipelineConfig, ws: Workspace, family: FeatureFamily, clips: list[dict[str, Any]], run_fp: str
) -> dict[str, int]:
    """Compute ``family`` for ``clips`` in chunks on Dask, one Prefect task run per chunk; record failures
    (for each of the family's stores), log progress."""
    chunks, root = _chunks(clips), ws.stores
    device = cfg.torch_device() if family.uses_device else "cpu"  # ``auto`` imports torch: only when used
    get_run_logger().info("%s: %d clips in %d chunks on %s", family.name, len(clips), len(chunks), device)
    for name in family.store_names:  # once here, so workers writing new clips need not (one PUT each)
        root.store(name).ensure_clips_group()
    updates: dict[str, dict[str, str] | None] = {}
    bar = progress_bar(len(clips), family.name, unit="clip")  # advances per finished chunk
    with dask_client(cfg.dask) as client:
        settings = family.settings(cfg)
        futures = submit_chunks(
            client, chunks, family, store_root=root, settings=settings, device=device, fp=run_fp
        )
        runs = [
            await_chunk.submit(family.name, i, [c["clip_id"] for c in chunk], fut)
            for i, (chunk, fut) in enumerate(zip(chunks, futures, strict=True))
        ]
        for run in as_completed(runs):
            for status in run.result():
                updates[status["clip_id"]] = failure_update(status, run_fp)
                bar.update(1)
            bar.set_postfix(failed=sum(u is not None for u in updates.values()))
    bar.close()
    for name in family.store_names:
        record_failures(root, name, updates)
    failed = sum(u is not None for u in updates.values())
    return {"computed": len(updates) - failed, "failed": failed}


@task(name="prepare-features", task_run_name="prepare-{family.name}", cache_policy=NO_CACHE)
def prepare_family(cfg: PipelineConfig, family: FeatureFamily, clips: list[dict[str, Any]]) -> None:
    """What a family needs before its chunks (the tokens' k-means fit), as its own Prefect task run."""
    assert family.prepare is not None
    family.prepare(cfg, clips)


def compute_families(cfg: PipelineConfig, flow_name: FlowName, verify: bool = False) -> dict[str, Any]:
    """Every registered family of one subflow, in order: stale clips computed on Dask, failures reported.
    With ``verify``, clips whose stored arrays do not match their checksums are recomputed too.

    The result counts clips per family (0 when it was fresh) and the computed and failed ones overall.
    """
    logger = get_run_logger()
    ws = Workspace.from_paths(cfg.paths)
    clips = prepared_clips(ws)
    group = families(flow_name)
    publish_shared(cfg.paths)  # with features_url: what the stores' clips are, for other machines
    result: dict[str, Any] = {"clips": len(clips), "computed": 0, "failed": 0}
    for fam in group:
        if fam.prepare is not None:
            prepare_family(cfg, fam, clips)
        fp, stale = todo(cfg, fam, clips, verify, ws=ws)
        logger.info("%s: %d clips, %d to compute (fingerprint %s)", fam.name, len(clips), len(stale), fp)
        # before its Dask work, a missing model would fail every clip alike; fresh clips need no model
        # (and checking the face models imports torch). A missing or replaced model changes the fingerprint.
        if stale and fam.check_assets is not None:
            fam.check_assets(cfg)
        counts = run_on_dask(cfg, ws, fam, stale, fp) if stale else 0
        result[fam.name] = counts
        if counts:
            result["computed"] += counts["computed"]
            result["failed"] += counts["failed"]
        if fam.finish is not None:
            fam.finish(cfg)
        _report(ws, fam.store_names[0])
    return result


@pipeline_flow("face-features")
def face_features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None, verify: bool = False
) -> dict[str, Any]:
    """3DMM coefficients, 70-dim motion, landmarks and crop parameters for every prepared clip.

    Args:
        verify: read every stored clip back and recompute those that do not match their checksums.
    """
    return compute_families(resolve_config(config, overrides), "face", verify)


@pipeline_flow("audio-features")
def audio_features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None, verify: bool = False
) -> dict[str, Any]:
    """HuBERT emotion + content features, k-means content tokens and mel windows for every clip.

    Args:
        verify: read every stored clip back and recompute those that do not match their checksums.
    """
    return compute_families(resolve_config(config, overrides), "audio", verify)


def _report(ws: Workspace, family: str) -> None:
    failures = load_failures(ws.stores, family)
    table_artifact(
        f"{family.replace('_', '-')}-failures",
        [{"clip_id": k, "error": v["error"]} for k, v in sorted(failures.items())],
        f"clips without {family} features",
    )


@pipeline_flow("features")
def features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None, verify: bool = False
) -> dict[str, Any]:
    """Both feature families; each subflow can also be rerun on its own to refresh it.

    A family whose stores are already fresh is reported here without starting its subflow run, so a
    rerun with nothing changed costs one flow run and the freshness checks (no array is read).

    Args:
        verify: read every stored clip back (``FeatureStore.verify_clip``) and recompute corrupt ones.
    """
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    ws = Workspace.from_paths(cfg.paths)
    clips = prepared_clips(ws)
    out: dict[str, Any] = {}
    for name, subflow in (("face", face_features_flow), ("audio", audio_features_flow)):
        group = families(name)
        if not all(up_to_date(cfg, fam, clips, verify, ws=ws) for fam in group):
            out[name] = subflow(config, overrides, verify)
        else:
            out[name] = {"clips": len(clips), "computed": 0, "failed": 0, **{f.name: 0 for f in group}}
            _log_fresh(ws, logger, name, tuple(f.store_names[0] for f in group), len(clips))
    return out


def _log_fresh(ws: Workspace, logger: Any, name: str, stores: tuple[str, ...], n: int) -> None:
    failed = {s: len(load_failures(ws.stores, s)) for s in stores}
    known = ", ".join(f"{k} {v} ({failures_file(k)})" for k, v in failed.items() if v)
    logger.info(
        "%s: all %d clips up to date, %s-features not started%s",
        name,
        n,
        name,
        f"; recorded failures: {known}" if known else "",
    )
