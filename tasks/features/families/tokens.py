"""The tokens family: k-means tokens of the HuBERT content features, one per content frame.

Before its chunks, k-means is fitted once on the content features (``ensure_kmeans``); the model lies
beside the stores, and the tokens store names it (``record_kmeans``) for training to read its centres.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from emotalker.configs.constants import HUBERT_FPS
from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.split import load_split
from emotalker.storage.zarr_store import FeatureStore, StoreRoot
from emotalker.tasks.features import plan
from emotalker.tasks.features.families import hubert
from emotalker.tasks.features.kmeans import (
    apply_kmeans,
    fetch_kmeans,
    fit_kmeans,
    kmeans_relpath,
    sample_frames,
    store_kmeans,
)
from emotalker.tasks.features.spec import ArraySpec, ClipOutputs, FeatureFamily, StoreSpec
from emotalker.tasks.features.workers import cached_model, each_clip


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
        "content": hubert.hubert_fingerprint(cfg),
    }


def tokens_fingerprint(cfg: PipelineConfig) -> str:
    """The tokens' fingerprint: the k-means settings and the content features it clusters."""
    return fingerprint(kmeans_config(cfg))


def kmeans_file(cfg: PipelineConfig) -> tuple[str, str]:
    """The k-means model for the current content features and settings: its path relative to the
    stores' root (it lives beside them, so every machine finds it there) and its id."""
    fp = tokens_fingerprint(cfg)
    return kmeans_relpath(fp), fp


def kmeans_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What the token workers need: the k-means model's path beside the stores and its id."""
    rel, fp = kmeans_file(cfg)
    return {"kmeans_path": rel, "kmeans_fingerprint": fp}


def kmeans_exists(cfg: PipelineConfig) -> bool:
    return plan.store_root(cfg).exists(kmeans_file(cfg)[0])


def kmeans_fit_ids(cfg: PipelineConfig, ids: list[str]) -> list[str]:
    """The clips k-means is fitted on: the train split's among ``ids`` (all of ``ids`` without a split)."""
    split_path = cfg.paths.resolve("split")
    if split_path.exists():
        train = set(load_split(split_path)["train"])
        chosen = [i for i in ids if i in train]
        if chosen:
            return chosen
    return ids


def ensure_kmeans(cfg: PipelineConfig, clips: list[dict[str, Any]]) -> None:
    """Fit k-means on a deterministic sample of fresh layer-k content frames (the train split's when there
    is one), unless the model for these settings already lies beside the stores."""
    root, a = plan.store_root(cfg), cfg.audio
    content, hfp = root.store("hubert_content"), hubert.hubert_fingerprint(cfg)
    fit_ids = kmeans_fit_ids(cfg, [c["clip_id"] for c in clips if content.has_clip(c["clip_id"], hfp)])
    if not fit_ids:
        raise RuntimeError("no clip has content features: see hubert_content.failures.json")
    rel, _ = kmeans_file(cfg)
    if root.exists(rel):
        return
    feats = [content.read_clip(c, ["feats"])["feats"] for c in fit_ids]  # fit_ids hold fresh features
    km = fit_kmeans(
        sample_frames(feats, a.kmeans_sample_frames, a.seed),
        k=a.kmeans_k,
        seed=a.seed,
        batch_size=a.kmeans_batch_size,
        max_iter=a.kmeans_max_iter,
        n_init=a.kmeans_n_init,
        max_no_improvement=a.kmeans_max_no_improvement,
    )
    store_kmeans(km, root, rel, kmeans_config(cfg))


def record_kmeans(cfg: PipelineConfig) -> None:
    """Name the tokens' k-means model in the tokens store (training reads its centres from there)."""
    rel, fp = kmeans_file(cfg)
    plan.store_root(cfg).store("tokens").set_meta(
        kmeans_path=rel, kmeans_fingerprint=fp, k=cfg.audio.kmeans_k
    )


def tokens_outputs(
    clips: list[dict[str, Any]], settings: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    """Tokens from the k-means model at ``settings["kmeans_path"]`` (relative to ``store_root``, beside
    the stores), one per content-feature frame."""
    path, fp = settings["kmeans_path"], settings["kmeans_fingerprint"]
    km = cached_model(("kmeans", store_root.url(path), fp), lambda: fetch_kmeans(store_root, path))
    km = km[0] if isinstance(km, tuple) else km
    content = FeatureStore(store_root, "hubert_content")

    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        feats = content.read_clip(clip["clip_id"], ["feats"])["feats"]
        attrs = {"n_frames": len(feats), "frame_rate": HUBERT_FPS}
        return {"tokens": ({"tokens": apply_kmeans(km, feats)}, attrs)}

    return each_clip(clips, outputs)


FAMILY = FeatureFamily(
    name="tokens",
    flow="audio",
    stores=(StoreSpec("tokens", {"tokens": ArraySpec((), "int16")}, HUBERT_FPS),),  # one per frame
    fingerprint=tokens_fingerprint,
    compute=tokens_outputs,
    settings=kmeans_settings,
    needs=(hubert.FAMILY,),
    prepare=ensure_kmeans,
    prepared=kmeans_exists,
    finish=record_kmeans,
)
