"""Feature flows: Deep3DFace coefficients, HuBERT features, k-means tokens and mel windows into Zarr.

The heavy work runs on a Dask cluster (``dask.address`` or a loopback LocalCluster); every worker
writes its clips straight into the Zarr stores. A clip is recomputed only when it is missing from its
store or its fingerprint (model files + settings) changed, so a rerun with nothing changed starts no
cluster at all.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed

from emotalker.configs.schema import PipelineConfig
from emotalker.flows.common import CredentialFree, Overrides, resolve_config, table_artifact
from emotalker.storage.failures import failures_file, load_failures, record_failures
from emotalker.storage.shared import publish_shared
from emotalker.tasks.features.cluster import dask_client
from emotalker.tasks.features.plan import (
    MEL_FINGERPRINT,
    audio_up_to_date,
    check_audio_assets,
    check_face_assets,
    face_todo,
    hubert_todo,
    kmeans_config,
    kmeans_file,
    kmeans_fit_ids,
    pending,
    prepared_clips,
    store_root,
    tokens_todo,
)
from emotalker.tasks.features.workers import face_chunk, hubert_chunk, mel_chunk, tokens_chunk
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
    cfg: PipelineConfig,
    family: str,
    fn: Any,
    clips: list[dict[str, Any]],
    run_fp: str,
    also_record: tuple[str, ...] = (),
    **kwargs: Any,
) -> dict[str, int]:
    """Map ``fn`` over chunks of clips on Dask, one Prefect task run per chunk; record failures, log progress.

    ``also_record``: other families the same chunks write (HuBERT writes emotion and content at once).
    """
    chunks = _chunks(clips)
    device = f" on {kwargs['device']}" if "device" in kwargs else ""
    get_run_logger().info("%s: %d clips in %d chunks%s", family, len(clips), len(chunks), device)
    for name in (family, *also_record):  # once here, so workers writing new clips need not (one PUT each)
        store_root(cfg).store(name).ensure_clips_group()
    updates: dict[str, dict[str, str] | None] = {}
    done = ok = 0
    bar = progress_bar(len(clips), family, unit="clip")  # advances per finished chunk
    with dask_client(cfg.dask) as client:
        futures = client.map(
            fn, chunks, pure=False, key=[f"{family}-{i}-{run_fp}" for i in range(len(chunks))], **kwargs
        )
        runs = [
            await_chunk.submit(family, i, [c["clip_id"] for c in chunk], fut)
            for i, (chunk, fut) in enumerate(zip(chunks, futures, strict=True))
        ]
        for run in as_completed(runs):
            for status in run.result():
                done += 1
                if status["ok"]:
                    ok += 1
                    updates[status["clip_id"]] = None
                else:
                    updates[status["clip_id"]] = {"error": status["error"], "fingerprint": run_fp}
                bar.update(1)
            bar.set_postfix(failed=done - ok)
    bar.close()
    for name in (family, *also_record):
        record_failures(store_root(cfg), name, updates)
    return {"computed": ok, "failed": done - ok}


@task(name="fit-kmeans")
def fit_content_kmeans(cfg: PipelineConfig, clip_ids: list[str]) -> tuple[str, str]:
    """Fit K-means on a deterministic sample of layer-k content frames (train split when available)."""
    from emotalker.tasks.features.kmeans import fit_kmeans, sample_frames, store_kmeans

    kcfg = kmeans_config(cfg)
    rel, fp = kmeans_file(cfg)
    root = store_root(cfg)
    if root.exists(rel):
        return rel, fp
    content = root.store("hubert_content")
    feats = [content.read_clip(c, ["feats"])["feats"] for c in clip_ids if content.has_clip(c)]
    sample = sample_frames(feats, cfg.audio.kmeans_sample_frames, cfg.audio.seed)
    km = fit_kmeans(
        sample,
        k=cfg.audio.kmeans_k,
        seed=cfg.audio.seed,
        batch_size=cfg.audio.kmeans_batch_size,
        max_iter=cfg.audio.kmeans_max_iter,
        n_init=cfg.audio.kmeans_n_init,
        max_no_improvement=cfg.audio.kmeans_max_no_improvement,
    )
    store_kmeans(km, root, rel, kcfg)
    return rel, fp


@flow(name="face-features", log_prints=True)
def face_features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """3DMM coefficients, 70-dim motion, landmarks and crop parameters for every prepared clip.

    Args:
        config: a shipped config by name (paper, demo) or a YAML file path.
        overrides: ``key=value`` config overrides, e.g. ``["train.vqvae.steps=100"]``.
    """
    cfg = resolve_config(config, overrides)
    clips = prepared_clips(cfg)
    check_face_assets(cfg)
    publish_shared(cfg.paths)  # with features_url: what the stores' clips are, for other machines
    fp, todo = face_todo(cfg, clips)
    get_run_logger().info("face: %d clips, %d to compute (fingerprint %s)", len(clips), len(todo), fp)
    result = {"clips": len(clips), "computed": 0, "failed": 0}
    if todo:
        face_cfg = cfg.face.model_dump(mode="json")
        result.update(
            run_on_dask(
                cfg,
                "face",
                face_chunk,
                todo,
                fp,
                store_root=store_root(cfg),
                face_cfg=face_cfg,
                device=cfg.torch_device(),
                fp=fp,
            )
        )
    _report(cfg, "face")
    return result


@flow(name="audio-features", log_prints=True)
def audio_features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """HuBERT emotion + content features, k-means content tokens and mel windows for every clip.

    Args:
        config: a shipped config by name (paper, demo) or a YAML file path.
        overrides: ``key=value`` config overrides, e.g. ``["train.vqvae.steps=100"]``.
    """
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    clips = prepared_clips(cfg)
    check_audio_assets(cfg)
    publish_shared(cfg.paths)
    root = store_root(cfg)
    result: dict[str, Any] = {"clips": len(clips)}

    hfp, todo = hubert_todo(cfg, clips)
    logger.info("hubert: %d to compute", len(todo))
    result["hubert"] = (
        run_on_dask(
            cfg,
            "hubert_emotion",
            hubert_chunk,
            todo,
            hfp,
            also_record=("hubert_content",),
            store_root=root,
            audio_cfg=cfg.audio.model_dump(mode="json"),
            device=cfg.torch_device(),  # resolved only when there is work (``auto`` imports torch)
            fp=hfp,
        )
        if todo
        else 0
    )

    mel_todo = pending(cfg, "mel", clips, MEL_FINGERPRINT)
    logger.info("mel: %d to compute", len(mel_todo))
    result["mel"] = (
        run_on_dask(cfg, "mel", mel_chunk, mel_todo, MEL_FINGERPRINT, store_root=root, fp=MEL_FINGERPRINT)
        if mel_todo
        else 0
    )

    content = root.store("hubert_content")
    fit_ids = kmeans_fit_ids(cfg, [c["clip_id"] for c in clips if content.has_clip(c["clip_id"], hfp)])
    if not fit_ids:
        raise RuntimeError("no clip has content features: see hubert_content.failures.json")
    km_path, kfp = fit_content_kmeans(cfg, fit_ids)
    tok_todo = tokens_todo(cfg, clips, hfp, kfp)
    logger.info("tokens: %d to compute with %s", len(tok_todo), km_path)
    result["tokens"] = (
        run_on_dask(cfg, "tokens", tokens_chunk, tok_todo, kfp, store_root=root, kmeans_path=km_path, fp=kfp)
        if tok_todo
        else 0
    )
    root.store("tokens").set_meta(kmeans_path=km_path, kmeans_fingerprint=kfp, k=cfg.audio.kmeans_k)
    for family in ("hubert_emotion", "mel", "tokens"):
        _report(cfg, family)
    return result


def _report(cfg: PipelineConfig, family: str) -> None:
    failures = load_failures(store_root(cfg), family)
    table_artifact(
        f"{family.replace('_', '-')}-failures",
        [{"clip_id": k, "error": v["error"]} for k, v in sorted(failures.items())],
        f"clips without {family} features",
    )


@flow(name="features", log_prints=True)
def features_flow(
    config: CredentialFree = "configs/paper.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """Both feature families; each subflow can also be rerun on its own to refresh it.

    A family whose stores are already fresh is reported here without starting its subflow run, so a
    rerun with nothing changed costs one flow run and the freshness checks.

    Args:
        config: a shipped config by name (paper, demo) or a YAML file path.
        overrides: ``key=value`` config overrides, e.g. ``["train.vqvae.steps=100"]``.
    """
    cfg = resolve_config(config, overrides)
    logger = get_run_logger()
    clips = prepared_clips(cfg)
    if face_todo(cfg, clips)[1]:
        face = face_features_flow(config, overrides)
    else:
        face = {"clips": len(clips), "computed": 0, "failed": 0}
        _log_fresh(cfg, logger, "face", ("face",), len(clips))
    if not audio_up_to_date(cfg, clips):
        audio = audio_features_flow(config, overrides)
    else:
        audio = {"clips": len(clips), "hubert": 0, "mel": 0, "tokens": 0}
        _log_fresh(cfg, logger, "audio", ("hubert_emotion", "mel", "tokens"), len(clips))
    return {"face": face, "audio": audio}


def _log_fresh(cfg: PipelineConfig, logger: Any, name: str, families: tuple[str, ...], n: int) -> None:
    failed = {f: len(load_failures(store_root(cfg), f)) for f in families}
    known = ", ".join(f"{k} {v} ({failures_file(k)})" for k, v in failed.items() if v)
    logger.info(
        "%s: all %d clips up to date, %s-features not started%s",
        name,
        n,
        name,
        f"; recorded failures: {known}" if known else "",
    )
