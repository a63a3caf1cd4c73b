"""Feature flows: Deep3DFace coefficients, HuBERT features, k-means tokens and mel windows into Zarr.

The heavy work runs on a Dask cluster (``dask.address`` or a loopback LocalCluster); every worker
writes its clips straight into the Zarr stores. A clip is recomputed only when it is missing from its
store or its fingerprint (model files + settings) changed, so a rerun with nothing changed starts no
cluster at all.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task

from emotalker.configs.constants import HUBERT_FPS, MEL_FMAX, MEL_FMIN, MEL_HOP, MEL_N_FFT
from emotalker.configs.schema import PipelineConfig
from emotalker.flows.common import resolve_config, table_artifact
from emotalker.storage.manifest import Manifest
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.cluster import dask_client
from emotalker.tasks.features.workers import (
    face_chunk,
    file_signature,
    fingerprint,
    hubert_chunk,
    mel_chunk,
    tokens_chunk,
)
from emotalker.tasks.progress import progress_bar

CHUNK_CLIPS = 16


def prepared_clips(cfg: PipelineConfig) -> list[dict[str, Any]]:
    rows = Manifest(cfg.paths.resolve("manifest")).select(status="prepared")
    if not rows:
        raise FileNotFoundError(
            f"no prepared clips in {cfg.paths.resolve('manifest')}: run the prepare flow first"
        )
    return sorted(rows, key=lambda r: r["clip_id"])


def store_root(cfg: PipelineConfig) -> StoreRoot:
    """Where the stores, k-means models and failure records live (with the configured storage options)."""
    return StoreRoot.from_paths(cfg.paths)


def _failures_file(family: str) -> str:
    return f"{family}.failures.json"  # beside the family's store


def _load_failures(cfg: PipelineConfig, family: str) -> dict[str, dict[str, str]]:
    data = store_root(cfg).read_bytes(_failures_file(family))
    return json.loads(data) if data is not None else {}


def _save_failures(cfg: PipelineConfig, family: str, updates: dict[str, dict[str, str] | None]) -> None:
    """Merge this run's outcomes (None: the clip is fine now) into the failures file under a lock.

    Re-reading inside the lock means two flows on the same stores never drop each other's records.
    """
    root, name = store_root(cfg), _failures_file(family)
    with root.lock(name):
        failures = _load_failures(cfg, family)
        for clip_id, entry in updates.items():
            if entry is None:
                failures.pop(clip_id, None)
            else:
                failures[clip_id] = entry
        root.write_bytes(name, json.dumps(failures, indent=1, sort_keys=True).encode())


def pending(cfg: PipelineConfig, family: str, clips: list[dict[str, Any]], fp: str) -> list[dict[str, Any]]:
    """Clips whose family is missing or stale; clips that failed with the same fingerprint stay skipped."""
    store = store_root(cfg).store(family)
    failed = _load_failures(cfg, family)
    return [
        c
        for c in clips
        if not store.has_clip(c["clip_id"], fp) and failed.get(c["clip_id"], {}).get("fingerprint") != fp
    ]


def _chunks(clips: list[dict[str, Any]], size: int = CHUNK_CLIPS) -> list[list[dict[str, Any]]]:
    ordered = sorted(clips, key=lambda c: int(c.get("n_frames") or 0))  # length-bucketed batches
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def run_on_dask(
    cfg: PipelineConfig,
    family: str,
    fn: Any,
    clips: list[dict[str, Any]],
    run_fp: str,
    also_record: tuple[str, ...] = (),
    **kwargs: Any,
) -> dict[str, int]:
    """Map ``fn`` over chunks of clips on Dask, record failures, log progress.

    ``also_record``: other families the same chunks write (HuBERT writes emotion and content at once).
    """
    from distributed import as_completed  # imported only when there is work (no-op reruns skip Dask)

    logger = get_run_logger()
    chunks = _chunks(clips)
    updates: dict[str, dict[str, str] | None] = {}
    done = ok = 0
    bar = progress_bar(len(clips), family, unit="clip")  # advances per finished chunk
    with dask_client(cfg.dask) as client:
        futures = client.map(
            fn, chunks, pure=False, key=[f"{family}-{i}-{run_fp}" for i in range(len(chunks))], **kwargs
        )
        for fut in as_completed(futures):
            for status in fut.result():
                done += 1
                if status["ok"]:
                    ok += 1
                    updates[status["clip_id"]] = None
                else:
                    updates[status["clip_id"]] = {"error": status["error"], "fingerprint": run_fp}
                    logger.warning("%s %s failed: %s", family, status["clip_id"], status["error"])
                bar.update(1)
            bar.set_postfix(failed=done - ok)
    bar.close()
    for name in (family, *also_record):
        _save_failures(cfg, name, updates)
    return {"computed": ok, "failed": done - ok}


def face_fingerprint(cfg: PipelineConfig) -> str:
    f = cfg.face
    parts: list[Any] = ["face-v1", f.source, f.missing_face]
    if f.source == "extract":
        parts += [
            file_signature(f.deep3dface_checkpoint),
            file_signature(f.lm3d_mat),
            f.face_detector,
            file_signature(f.face_alignment_dir) if f.face_alignment_dir else "torch-hub",
        ]
    elif f.source == "import":
        parts.append(file_signature(f.import_dir) if f.import_dir else None)  # re-exported files restale
    else:
        parts.append(file_signature(f.ground_truth_dir) if f.ground_truth_dir else None)
    return fingerprint(*parts)


def hubert_fingerprint(cfg: PipelineConfig) -> str:
    a = cfg.audio
    return fingerprint(
        "hubert-v2",  # v2: stored at HuBERT's native rate, not resampled to 25 fps
        HUBERT_FPS,
        file_signature(a.emotion_model),
        a.emotion_layer,
        file_signature(a.content_model),
        a.content_layer,
        a.waveform_normalization,
        a.chunk_seconds,  # changes the features of clips longer than the chunk
        a.chunk_context_seconds,
    )


def kmeans_config(cfg: PipelineConfig) -> dict[str, Any]:
    a = cfg.audio
    return {
        "k": a.kmeans_k,
        "sample_frames": a.kmeans_sample_frames,
        "batch_size": a.kmeans_batch_size,
        "max_iter": a.kmeans_max_iter,
        "n_init": a.kmeans_n_init,
        "max_no_improvement": a.kmeans_max_no_improvement,
        "seed": a.seed,
        "content": hubert_fingerprint(cfg),
    }


MEL_FINGERPRINT = fingerprint("mel-v1", MEL_N_FFT, MEL_HOP, MEL_FMIN, MEL_FMAX)


def check_face_assets(cfg: PipelineConfig) -> None:
    """Fail before any Dask work when an extraction asset is missing, naming it and where to get it.

    Otherwise every clip would be recorded as failed with the same error in ``face.failures.json``.
    """
    if cfg.face.source != "extract":
        return
    from emotalker.models.deep3dface import CHECKPOINT_HELP
    from emotalker.tasks.features.face_coeffs import FA_FILES, FA_URLS, _fa_model_dir, load_lm3d

    f = cfg.face
    if not Path(f.deep3dface_checkpoint).is_file():
        raise FileNotFoundError(
            f"Deep3DFace checkpoint not found at {f.deep3dface_checkpoint}: {CHECKPOINT_HELP}"
        )
    load_lm3d(f.lm3d_mat)  # raises naming the file and its source
    fa_dir = _fa_model_dir(f.face_alignment_dir)
    needed = ["2DFAN-4"] + (["sfd"] if f.face_detector == "sfd" else [])
    for key in needed:
        if not (fa_dir / FA_FILES[key]).is_file():
            raise FileNotFoundError(
                f"face-alignment model {FA_FILES[key]} not found in {fa_dir}; download {FA_URLS[key]} there "
                "(or set face.face_alignment_dir / TORCH_HOME)"
            )


def check_audio_assets(cfg: PipelineConfig) -> None:
    """Fail before any Dask work when a HuBERT model is neither a local directory nor in the HF cache."""
    from emotalker.tasks.features.hubert import resolve_model_dir

    for name in (cfg.audio.emotion_model, cfg.audio.content_model):
        resolve_model_dir(name)


def kmeans_file(cfg: PipelineConfig) -> tuple[str, str]:
    """The k-means model for the current content features and settings: its path relative to the
    stores' root (it lives beside them, so every machine finds it there) and its id."""
    from emotalker.tasks.features.kmeans import kmeans_relpath

    fp = fingerprint(kmeans_config(cfg))
    return kmeans_relpath(fp), fp


def face_todo(cfg: PipelineConfig, clips: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The face fingerprint and the clips whose coefficients are missing or stale."""
    fp = face_fingerprint(cfg)
    return fp, pending(cfg, "face", clips, fp)


def hubert_todo(cfg: PipelineConfig, clips: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """The HuBERT fingerprint and the clips missing emotion or content features (both come from one run)."""
    fp = hubert_fingerprint(cfg)
    ids = {c["clip_id"] for fam in ("hubert_emotion", "hubert_content") for c in pending(cfg, fam, clips, fp)}
    return fp, [c for c in clips if c["clip_id"] in ids]


def audio_up_to_date(cfg: PipelineConfig, clips: list[dict[str, Any]]) -> bool:
    """True when the audio flow would compute nothing: HuBERT, mel, the k-means model and tokens are fresh."""
    hfp, todo = hubert_todo(cfg, clips)
    if todo or pending(cfg, "mel", clips, MEL_FINGERPRINT):
        return False
    rel, kfp = kmeans_file(cfg)
    if not store_root(cfg).exists(rel):
        return False
    return not tokens_todo(cfg, clips, hfp, kfp)


def tokens_todo(cfg: PipelineConfig, clips: list[dict[str, Any]], hfp: str, kfp: str) -> list[dict[str, Any]]:
    """Clips whose tokens are missing or stale and whose content features (to tokenise) are fresh."""
    content = store_root(cfg).store("hubert_content")
    return [c for c in pending(cfg, "tokens", clips, kfp) if content.has_clip(c["clip_id"], hfp)]


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
    config: str = "configs/paper.yaml", overrides: list[str] | None = None
) -> dict[str, Any]:
    """3DMM coefficients, 70-dim motion, landmarks and crop parameters for every prepared clip.

    Args:
        config: a shipped config by name (paper, demo) or a YAML file path.
        overrides: ``key=value`` config overrides, e.g. ``["train.vqvae.steps=100"]``.
    """
    cfg = resolve_config(config, overrides)
    clips = prepared_clips(cfg)
    check_face_assets(cfg)
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
    config: str = "configs/paper.yaml", overrides: list[str] | None = None
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
    root, device = store_root(cfg), cfg.torch_device()
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
            device=device,
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
    fit_ids = _train_ids(cfg, [c["clip_id"] for c in clips if content.has_clip(c["clip_id"], hfp)])
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


def _train_ids(cfg: PipelineConfig, ids: list[str]) -> list[str]:
    split_path = cfg.paths.resolve("split")
    if split_path.exists():
        train = set(json.loads(split_path.read_text())["train"])
        chosen = [i for i in ids if i in train]
        if chosen:
            return chosen
    return ids


def _report(cfg: PipelineConfig, family: str) -> None:
    failures = _load_failures(cfg, family)
    table_artifact(
        f"{family.replace('_', '-')}-failures",
        [{"clip_id": k, "error": v["error"]} for k, v in sorted(failures.items())],
        f"clips without {family} features",
    )


@flow(name="features", log_prints=True)
def features_flow(config: str = "configs/paper.yaml", overrides: list[str] | None = None) -> dict[str, Any]:
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
    failed = {f: len(_load_failures(cfg, f)) for f in families}
    known = ", ".join(f"{k} {v} ({_failures_file(k)})" for k, v in failed.items() if v)
    logger.info(
        "%s: all %d clips up to date, %s-features not started%s",
        name,
        n,
        name,
        f"; recorded failures: {known}" if known else "",
    )
