"""The HuBERT family: emotion features (the ER model's last layer) and content features (layer k) of each
clip's audio, both from one forward pass where the checkpoints share an encoder (``features/hubert.py``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np

from emotalker.configs.constants import HUBERT_FPS, SAMPLE_RATE, WaveformNormalization
from emotalker.configs.fingerprint import file_signature, fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.hubert_files import resolve_model_dir
from emotalker.tasks.features.spec import ArraySpec, ClipOutputs, FeatureFamily, StoreSpec
from emotalker.tasks.features.workers import cached_model, each_clip


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


def audio_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.audio.model_dump(mode="json")


def check_audio_assets(cfg: PipelineConfig) -> None:
    """Fail before any Dask work when a HuBERT model is neither a local directory nor in the HF cache."""
    for name in (cfg.audio.emotion_model, cfg.audio.content_model):
        resolve_model_dir(name)


def _hubert(name: str, device: str, normalization: WaveformNormalization) -> Any:
    from emotalker.tasks.features.hubert import load_hubert

    sig = json.dumps(file_signature(name))  # a replaced model dir is reloaded on long-lived workers
    return cached_model(
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


_FEATS = {"feats": ArraySpec((None,), "float32")}  # the checkpoint's width (768 for base)
FAMILY = FeatureFamily(
    name="hubert",
    flow="audio",
    stores=(
        StoreSpec("hubert_emotion", _FEATS, HUBERT_FPS),
        StoreSpec("hubert_content", _FEATS, HUBERT_FPS),
    ),
    fingerprint=hubert_fingerprint,
    compute=hubert_outputs,
    settings=audio_settings,
    uses_device=True,
    check_assets=check_audio_assets,
)
