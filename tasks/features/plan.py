"""Which clips each feature family still needs: the fingerprints, freshness checks and asset checks.

A family's clip is fresh when its store holds it complete with the family's current fingerprint (model
files + settings), or when it failed with that fingerprint (recorded in ``<family>.failures.json``).
The flows only ask this module what to compute, for each family ``families.py`` declares.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from emotalker.configs.constants import HUBERT_FPS, MEL_FMAX, MEL_FMIN, MEL_HOP, MEL_N_FFT
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.failures import load_failures
from emotalker.storage.manifest import Manifest
from emotalker.storage.split import load_split
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.hubert_files import resolve_model_dir
from emotalker.tasks.features.workers import file_signature, fingerprint

if TYPE_CHECKING:
    from emotalker.tasks.features.families import FeatureFamily


def prepared_clips(cfg: PipelineConfig) -> list[dict[str, Any]]:
    """The manifest's prepared clips by clip_id; an error naming the manifest when there are none."""
    rows = Manifest(cfg.paths.resolve("manifest")).select(status="prepared")
    if not rows:
        raise FileNotFoundError(
            f"no prepared clips in {cfg.paths.resolve('manifest')}: run the prepare flow first"
        )
    return sorted(rows, key=lambda r: r["clip_id"])


def store_root(cfg: PipelineConfig) -> StoreRoot:
    """Where the stores, k-means models and failure records live (with the configured storage options)."""
    return StoreRoot.from_paths(cfg.paths)


def pending(cfg: PipelineConfig, family: str, clips: list[dict[str, Any]], fp: str) -> list[dict[str, Any]]:
    """Clips whose family is missing or stale; clips that failed with the same fingerprint stay skipped.

    Each comes back with ``in_store``: False when the store holds no object of it (one listing tells),
    so its writer skips clearing an earlier version (``write_clip(replace=False)``) and this check skips
    reading its metadata.
    """
    store = store_root(cfg).store(family)
    failed = load_failures(store_root(cfg), family)
    stored = set(store.clip_ids(complete_only=False))
    out = []
    for c in clips:
        cid = c["clip_id"]
        if failed.get(cid, {}).get("fingerprint") == fp:
            continue
        if cid not in stored:
            out.append(dict(c, in_store=False))
        elif not store.has_clip(cid, fp):
            out.append(dict(c, in_store=True))
    return out


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


def mel_fingerprint(cfg: PipelineConfig) -> str:
    """Mel windows depend only on the fixed SadTalker constants."""
    return MEL_FINGERPRINT


def face_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.face.model_dump(mode="json")


def audio_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.audio.model_dump(mode="json")


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
    for name in (cfg.audio.emotion_model, cfg.audio.content_model):
        resolve_model_dir(name)


def kmeans_file(cfg: PipelineConfig) -> tuple[str, str]:
    """The k-means model for the current content features and settings: its path relative to the
    stores' root (it lives beside them, so every machine finds it there) and its id."""
    from emotalker.tasks.features.kmeans import kmeans_relpath

    fp = kmeans_fingerprint(cfg)
    return kmeans_relpath(fp), fp


def kmeans_fingerprint(cfg: PipelineConfig) -> str:
    """The tokens' fingerprint: the k-means settings and the content features it clusters."""
    return fingerprint(kmeans_config(cfg))


def kmeans_settings(cfg: PipelineConfig) -> dict[str, Any]:
    """What the token workers need: the k-means model's path beside the stores and its id."""
    rel, fp = kmeans_file(cfg)
    return {"kmeans_path": rel, "kmeans_fingerprint": fp}


def kmeans_exists(cfg: PipelineConfig) -> bool:
    return store_root(cfg).exists(kmeans_file(cfg)[0])


def ensure_kmeans(cfg: PipelineConfig, clips: list[dict[str, Any]]) -> None:
    """Fit k-means on a deterministic sample of fresh layer-k content frames (the train split's when there
    is one), unless the model for these settings already lies beside the stores."""
    from emotalker.tasks.features.kmeans import fit_kmeans, sample_frames, store_kmeans

    root, a = store_root(cfg), cfg.audio
    content, hfp = root.store("hubert_content"), hubert_fingerprint(cfg)
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
    store_root(cfg).store("tokens").set_meta(kmeans_path=rel, kmeans_fingerprint=fp, k=cfg.audio.kmeans_k)


def todo(
    cfg: PipelineConfig, family: FeatureFamily, clips: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]]]:
    """The family's fingerprint and the clips missing or stale in any of its stores (one run writes them
    all), less those whose inputs (``family.needs``) are not fresh yet. A clip is marked ``in_store``
    False only when none of the stores holds anything of it (a store that holds it fresh does)."""
    fp = family.fingerprint(cfg)
    stale = {
        name: {c["clip_id"]: c["in_store"] for c in pending(cfg, name, clips, fp)}
        for name in family.store_names
    }
    ids = {cid for per_store in stale.values() for cid in per_store}
    for need in family.needs:
        nfp, stores = need.fingerprint(cfg), [store_root(cfg).store(s) for s in need.store_names]
        ids = {i for i in ids if all(s.has_clip(i, nfp) for s in stores)}
    return fp, [
        dict(c, in_store=any(per_store.get(c["clip_id"], True) for per_store in stale.values()))
        for c in clips
        if c["clip_id"] in ids
    ]


def up_to_date(cfg: PipelineConfig, family: FeatureFamily, clips: list[dict[str, Any]]) -> bool:
    """True when running the family would compute nothing (its ``prepare`` output included)."""
    if family.prepared is not None and not family.prepared(cfg):
        return False
    return not todo(cfg, family, clips)[1]


def kmeans_fit_ids(cfg: PipelineConfig, ids: list[str]) -> list[str]:
    """The clips k-means is fitted on: the train split's among ``ids`` (all of ``ids`` without a split)."""
    split_path = cfg.paths.resolve("split")
    if split_path.exists():
        train = set(load_split(split_path)["train"])
        chosen = [i for i in ids if i in train]
        if chosen:
            return chosen
    return ids
