"""Per-clip feature computation that runs on Dask workers and writes straight into the Zarr stores.

Models are loaded once per worker process (``_MODEL_CACHE``) and reused for every chunk of clips.
Each family's function (named in ``families.py``) turns a chunk of manifest rows into each clip's arrays
or its error; ``compute_chunk`` checks and writes them for every family alike and returns one status
per clip, so a clip that fails (no face, unreadable audio) is reported and never stops the others.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emotalker.configs.constants import (
    COEFF_DIM,
    COEFF_SLICES,
    EXP_DIM,
    FPS,
    HUBERT_FPS,
    SAMPLE_RATE,
    WaveformNormalization,
)
from emotalker.storage.zarr_store import FeatureStore, StoreRoot

if TYPE_CHECKING:
    from emotalker.tasks.features.families import ClipOutputs, FeatureFamily

_MODEL_CACHE: dict[tuple, Any] = {}
_CACHE_LOCK = threading.Lock()


def file_signature(path: str | Path) -> list[Any]:
    """Cheap identity of a model file or directory (names, sizes, mtimes) for staleness checks."""
    p = Path(path)
    if p.is_file():
        st = p.stat()
        return [p.name, st.st_size, st.st_mtime_ns]
    if p.is_dir():
        return [file_signature(f) for f in sorted(p.rglob("*")) if f.is_file() and not f.name.startswith(".")]
    return [str(path)]  # an HF cache id: the id is its identity


def fingerprint(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _cached(key: tuple, build: Any) -> Any:
    with _CACHE_LOCK:
        if key not in _MODEL_CACHE:
            _MODEL_CACHE[key] = build()
        return _MODEL_CACHE[key]


def _replace(clip: dict[str, Any]) -> bool:
    """Whether the clip's write must first clear an earlier version: unless the flow's listing found
    nothing of it in the store (``in_store`` False, set by ``plan.pending``)."""
    return clip.get("in_store", True) is not False


def _status(clip_id: str, error: Exception | None = None) -> dict[str, Any]:
    return {
        "clip_id": clip_id,
        "ok": error is None,
        "error": None if error is None else f"{type(error).__name__}: {error}",
    }


# --------------------------------------------------------------------------------------------- face
def _face_extractor(face_cfg: dict[str, Any], device: str) -> Any:
    from emotalker.models.deep3dface import load_recon_net
    from emotalker.tasks.features.face_coeffs import FaceCoeffExtractor, LandmarkDetector, load_lm3d

    def build() -> Any:
        recon = load_recon_net(face_cfg["deep3dface_checkpoint"], device)
        detector = LandmarkDetector(
            device=device,
            face_detector=face_cfg["face_detector"],
            batch_size=face_cfg["batch_size"],
            model_dir=face_cfg.get("face_alignment_dir"),
            flip_input=face_cfg["flip_input"],
            detect_max_side=face_cfg["detect_max_side"],
        )
        return FaceCoeffExtractor(
            recon,
            detector,
            load_lm3d(face_cfg["lm3d_mat"]),
            device=device,
            batch_size=face_cfg["batch_size"],
            missing_face=face_cfg["missing_face"],
        )

    # keyed by every setting and the model files' signatures: a long-lived worker must not reuse a model
    # built from a checkpoint that has since been replaced, or with other settings
    files = [face_cfg["deep3dface_checkpoint"], face_cfg["lm3d_mat"], face_cfg.get("face_alignment_dir")]
    key = ("face", json.dumps([face_cfg, [file_signature(f) for f in files if f]], sort_keys=True), device)
    return _cached(key, build)


def motion_to_coeffs(motion: np.ndarray) -> np.ndarray:
    """Place a (T, 70) motion into a (T, 257) coefficient vector (identity/texture/lighting zero)."""
    coeffs = np.zeros((len(motion), COEFF_DIM), np.float32)
    coeffs[:, COEFF_SLICES["exp"]] = motion[:, :EXP_DIM]
    coeffs[:, COEFF_SLICES["angle"]] = motion[:, EXP_DIM : EXP_DIM + 3]
    coeffs[:, COEFF_SLICES["trans"]] = motion[:, EXP_DIM + 3 :]
    return coeffs


def resample_frames(x: np.ndarray, src_fps: float, n_out: int, dst_fps: float = FPS) -> np.ndarray:
    """Linear interpolation of per-frame values at the destination frame times (edge-clamped)."""
    t_src = np.arange(len(x)) / src_fps
    t_dst = np.arange(n_out) / dst_fps
    flat = x.reshape(len(x), -1)
    out = np.stack([np.interp(t_dst, t_src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape((n_out,) + x.shape[1:]).astype(np.float32)


def face_arrays(clip: dict[str, Any], face_cfg: dict[str, Any], device: str) -> dict[str, np.ndarray]:
    """The face family for one clip, from the configured source (extract / import / synthetic GT)."""
    n = int(clip["n_frames"])
    source = face_cfg["source"]
    if source == "extract":
        from emotalker.tasks.media import read_video_frames

        frames, _ = read_video_frames(clip["prepared_video"])
        out = _face_extractor(face_cfg, device).extract(frames[:n], name=clip["clip_id"])
        return {k: np.asarray(v) for k, v in out.items()}
    if source == "import":
        from emotalker.tasks.features.coeff_import import import_deep3dface_mat

        root = Path(face_cfg["import_dir"])
        candidates = [root / clip["actor"] / f"{clip['clip_id']}.mat", root / f"{clip['clip_id']}.mat"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no imported coefficients for {clip['clip_id']}: looked at {candidates}")
        coeffs = import_deep3dface_mat(found)[:n].astype(np.float32)
    elif source == "synthetic_ground_truth":
        from emotalker.tasks.demo.synthetic.mead import load_ground_truth

        motion30 = load_ground_truth(Path(face_cfg["ground_truth_dir"]), clip)
        coeffs = motion_to_coeffs(resample_frames(motion30, 30.0, n))
    else:
        raise ValueError(f"unknown face.source {source!r}")
    from emotalker.models.motion import coeffs_to_motion

    if len(coeffs) < n:
        raise ValueError(f"{clip['clip_id']}: {len(coeffs)} coefficient frames for {n} video frames")
    return {
        "coeffs": coeffs,
        "motion": coeffs_to_motion(coeffs).astype(np.float32),
        "valid": np.ones(n, bool),
    }


def face_outputs(
    clips: list[dict[str, Any]], face_cfg: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    return each_clip(clips, lambda clip: {"face": (face_arrays(clip, face_cfg, device), _frames(clip))})


# -------------------------------------------------------------------------------------------- audio
def _hubert(name: str, device: str, normalization: WaveformNormalization) -> Any:
    from emotalker.tasks.features.hubert import load_hubert

    sig = json.dumps(file_signature(name))  # a replaced model dir is reloaded on long-lived workers
    return _cached(
        ("hubert", name, sig, device, normalization),
        lambda: load_hubert(name, device, normalization=normalization),
    )


def hubert_features(
    waves: list[np.ndarray], audio_cfg: dict[str, Any], device: str
) -> dict[str, list[np.ndarray]]:
    """HuBERT frames (~49 Hz) of each clip for both families: emotion (ER model) and content (layer k).

    Checkpoints with the same encoder (e.g. superb ER and the HuBERT base it was converted from) share
    one forward pass that returns every requested layer. ``audio_cfg`` is ``AudioFeatureConfig`` as a dict
    (what crosses to Dask workers); keys it omits take the config's defaults.
    """
    from emotalker.configs.schema import AudioFeatureConfig
    from emotalker.tasks.features.hubert import extract_hubert

    a = AudioFeatureConfig.model_validate(audio_cfg)

    jobs = [
        ("hubert_emotion", a.emotion_model, a.emotion_layer),
        ("hubert_content", a.content_model, a.content_layer),
    ]
    passes: dict[str, tuple[Any, Any, list[tuple[str, int]]]] = {}
    for family, name, layer in jobs:
        model, settings = _hubert(name, device, a.waveform_normalization)
        passes.setdefault(settings.encoder_digest, (model, settings, []))[2].append((family, layer))
    feats: dict[str, list[np.ndarray]] = {}
    for model, settings, wanted in passes.values():
        out = extract_hubert(
            model,
            waves,
            sorted({layer for _, layer in wanted}),
            device=device,
            batch_seconds=a.batch_seconds,
            normalize=settings.do_normalize,
            chunk_seconds=a.chunk_seconds,
            context_seconds=a.chunk_context_seconds,
        )
        for family, layer in wanted:
            feats[family] = [o[layer] for o in out]
    return feats


def hubert_outputs(
    clips: list[dict[str, Any]], audio_cfg: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    """Emotion features (last layer of the ER model) and content features (layer k of HuBERT).

    Stored at HuBERT's native rate (floor((N - 400) / 320) + 1 frames, ~50 Hz; Eq. 6-7's T'_a), not
    resampled to the video; the clip attributes record ``frame_rate`` and the clip's ``video_frames``.
    One batched forward pass per chunk, so a model failure fails the chunk.
    """
    from emotalker.tasks.features.audio_io import load_audio, validate_audio

    waves, ok = [], []
    for clip in clips:
        try:
            waves.append(
                validate_audio(load_audio(clip["prepared_audio"], SAMPLE_RATE), SAMPLE_RATE, clip["clip_id"])
            )
            ok.append(clip)
        except Exception as exc:
            yield clip["clip_id"], exc
    if not ok:
        return
    feats = hubert_features(waves, audio_cfg, device)

    row = {clip["clip_id"]: i for i, clip in enumerate(ok)}

    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        out = {}
        for store in feats:
            native = np.asarray(feats[store][row[clip["clip_id"]]], dtype=np.float32)
            attrs = {"n_frames": len(native), "frame_rate": HUBERT_FPS, "video_frames": int(clip["n_frames"])}
            out[store] = ({"feats": native}, attrs)
        return out

    yield from each_clip(ok, outputs)


def tokens_outputs(
    clips: list[dict[str, Any]], settings: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    """Tokens from the k-means model at ``settings["kmeans_path"]`` (relative to ``store_root``, beside
    the stores), one per content-feature frame."""
    from emotalker.tasks.features.kmeans import apply_kmeans, fetch_kmeans

    path, fp = settings["kmeans_path"], settings["kmeans_fingerprint"]
    km = _cached(("kmeans", store_root.url(path), fp), lambda: fetch_kmeans(store_root, path))
    km = km[0] if isinstance(km, tuple) else km
    content = FeatureStore(store_root, "hubert_content")

    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        feats = content.read_clip(clip["clip_id"], ["feats"])["feats"]
        attrs = {"n_frames": len(feats), "frame_rate": HUBERT_FPS}
        return {"tokens": ({"tokens": apply_kmeans(km, feats)}, attrs)}

    return each_clip(clips, outputs)


def mel_outputs(
    clips: list[dict[str, Any]], settings: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    from emotalker.tasks.features.audio_io import load_audio
    from emotalker.tasks.features.mel import mel_windows, melspectrogram

    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        mel = melspectrogram(load_audio(clip["prepared_audio"], SAMPLE_RATE))
        windows = mel_windows(mel, int(clip["n_frames"])).astype(np.float32)
        return {"mel": ({"windows": windows}, _frames(clip))}

    return each_clip(clips, outputs)


# -------------------------------------------------------------------------------------- any family
def _frames(clip: dict[str, Any]) -> dict[str, Any]:
    return {"n_frames": int(clip["n_frames"])}


def each_clip(
    clips: list[dict[str, Any]], outputs: Callable[[dict[str, Any]], ClipOutputs]
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    """``outputs`` of each clip, or the clip's error (recorded per clip; it never stops the others)."""
    for clip in clips:
        try:
            yield clip["clip_id"], outputs(clip)
        except Exception as exc:
            yield clip["clip_id"], exc


def compute_chunk(
    clips: list[dict[str, Any]],
    family: FeatureFamily,
    store_root: StoreRoot | str,
    settings: dict[str, Any],
    device: str,
    fp: str,
) -> list[dict[str, Any]]:
    """One chunk of any family on a Dask worker: compute, check against the declaration, write each clip.

    Returns one status per clip; a clip's group is written (and marked complete with ``fp``) only when
    every array of every store the family declares checks out.
    """
    root = store_root if isinstance(store_root, StoreRoot) else StoreRoot(store_root)
    specs = {spec.name: spec for spec in family.stores}
    stores = {name: FeatureStore(root, name) for name in specs}  # opened once per chunk
    replace = {c["clip_id"]: _replace(c) for c in clips}
    results = []
    for clip_id, out in family.compute(clips, settings, device, root):
        try:
            if isinstance(out, Exception):
                raise out
            if set(out) != set(specs):
                raise ValueError(f"{family.name} wrote stores {sorted(out)}, declared {sorted(specs)}")
            for name, (arrays, _) in out.items():
                specs[name].check(clip_id, arrays)
            for name, (arrays, attrs) in out.items():
                stores[name].write_clip(
                    clip_id, arrays, attrs=attrs, fingerprint=fp, replace=replace[clip_id]
                )
            results.append(_status(clip_id))
        except Exception as exc:  # recorded per clip; the flow reports them
            results.append(_status(clip_id, exc))
    return results
