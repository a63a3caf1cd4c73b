"""One generation as a plain function (no Prefect): a face image and speech -> motion with the registered
models -> ``video.mp4`` and the other outputs. The generate flow resolves the config and calls
:func:`generate_from_image`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.workspace import Workspace
from emotalker.tasks.features.kmeans import recorded_kmeans
from emotalker.tasks.generation.animate import (
    InputError,
    audio_features,
    driving_motion,
    generation_inputs_summary,
    identity_coefficients,
    load_preview_bfm,
    load_speech,
    read_image,
    save_outputs,
    save_video_outputs,
)
from emotalker.tasks.generation.inference import load_emotalker
from emotalker.tasks.generation.render import load_renderer, prepare_source
from emotalker.tasks.generation.sadtalker import SadTalkerWeightsError, load_sadtalker, sadtalker_motion
from emotalker.tasks.progress import progress_bar

METHODS = ("emotalker", "sadtalker")  # generate --method: the registered EmoTalker models, or SadTalker

log = logging.getLogger(__name__)  # an emotalker logger: its lines reach the Prefect flow run's log

SILENT_DBFS = -60.0  # a 40 ms frame quieter than this (RMS) is silence: room noise, hiss, hum
SILENT_SHARE = 0.02  # speech with at most this share of sounding frames is silent "or nearly"


def silence_warning(wave: Any, audio: str | Path) -> str | None:
    """The warning for speech that is silent or nearly (at most 2 % of its 40 ms frames reach -60 dBFS
    RMS), else None: a long silent file still costs the whole generation, and the face will not talk."""
    import numpy as np

    w = np.asarray(wave, dtype=np.float64)
    n = max(1, len(w) // 640)
    frames = np.resize(w, n * 640).reshape(n, 640) if len(w) >= 640 else w[None]
    level = 20 * np.log10(np.sqrt(np.mean(frames * frames, axis=1)) + 1e-12)
    sounding = float(np.mean(level >= SILENT_DBFS))
    if sounding > SILENT_SHARE:
        return None
    return (
        f"{audio}: the speech is silent or nearly ({100 * sounding:.1f}% of {len(w) / 16_000:.0f} s above "
        f"{SILENT_DBFS:.0f} dBFS): the face will barely move; generating anyway"
    )


def stored_kmeans(ws: Workspace) -> Any:
    """The k-means model the tokens store records (kept beside the stores: found from any machine).

    Read-only: a missing tokens store is never created."""
    root = ws.stores
    tokens = root.store("tokens")
    if not tokens.exists():  # a read-only command: never create the store it reads
        raise InputError(
            f"no tokens store at {root.display()}: run `emotalker run audio-features` with this "
            "config first (generate reads its k-means model)"
        )
    meta = tokens.get_meta()
    if "kmeans_path" not in meta:
        raise InputError(
            f"no k-means model recorded in {tokens.display_url}: run `emotalker run audio-features` with "
            "this config"
        )
    return recorded_kmeans(root, meta)


@dataclass
class GenerationModels:
    """Everything a generation loads once (k-means, preview BFM, renderer, SadTalker or EmoTalker), so a
    batch of rows pays the loading once; the EmoTalker stages load on first use (after the inputs and
    audio features of a single call are checked)."""

    cfg: PipelineConfig
    device: str
    method: str
    mode: str
    model: str
    ws: Workspace
    km: Any
    bfm: Any
    renderer: Any
    sadtalker: Any = None
    _emotalker: tuple[Any, dict[str, str]] | None = field(default=None, repr=False)

    def emotalker(self) -> tuple[Any, dict[str, str]]:
        """The registered EmoTalker generator and its versions, loaded on the first call."""
        if self._emotalker is None:
            self._emotalker = load_emotalker(self.cfg, self.model, self.device, ws=self.ws)
        return self._emotalker


def check_method(method: str, emotion_reference: str | Path | None) -> None:
    """Refuse an unknown method, or driving frames with SadTalker (which takes the image as reference)."""
    if method not in METHODS:
        raise InputError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "sadtalker" and emotion_reference is not None:
        raise InputError("--emotion-reference drives EmoTalker only; SadTalker takes the image as reference")


def load_generation_models(
    cfg: PipelineConfig, *, method: str, mode: str | None, model: str, ws: Workspace
) -> GenerationModels:
    """The preview BFM, the k-means model, SadTalker and the renderer, each checked before the slow steps
    (a missing file fails here, naming its key)."""
    device = cfg.torch_device()
    bfm = load_preview_bfm(cfg)  # face.bfm_path set but unusable: fail before loading any model
    km = stored_kmeans(ws) if method == "emotalker" else None
    sadtalker = None
    if method == "sadtalker":
        try:
            sadtalker = load_sadtalker(cfg, device)
        except SadTalkerWeightsError as exc:
            raise InputError(str(exc)) from exc
    mode = mode or cfg.render.mode
    renderer = load_renderer(cfg, device, (mode,))  # missing renderer files: fail before the slow steps
    return GenerationModels(cfg, device, method, mode, model, ws, km, bfm, renderer, sadtalker)


def generate_motion(models: GenerationModels, wave: Any, reference: Any) -> tuple[Any, dict[str, Any]]:
    """(T, 70) motion of ``wave`` from ``reference`` with the loaded method, and the versions used."""
    seconds = len(wave) / 16_000
    if models.sadtalker is not None:
        st = models.cfg.sadtalker
        log.info("generate: SadTalker's ExpNet + PoseVAE motion of %.1f s of speech", seconds)
        motion = sadtalker_motion(models.sadtalker, wave, reference, st.pose_style, st.seed)
        return motion, {"sadtalker": models.sadtalker.sources, "pose_style": st.pose_style, "seed": st.seed}
    log.info("generate: HuBERT features and tokens of %.1f s of speech", seconds)
    feats = audio_features(wave, models.cfg, models.device, models.km)
    generator, versions = models.emotalker()
    log.info("generate: decoding motion (autoregressive, one token at a time)")
    bar = progress_bar(None, "generate motion", unit="token", every_s=5.0)

    def on_token(done: int, total: int) -> None:
        bar.total = total
        bar.update(1)

    try:
        motion = generator.generate(
            reference, feats["audio"], feats["tokens"], feats["mel"], on_token=on_token
        )
    finally:
        bar.close()
    return motion, versions


def write_generation(
    models: GenerationModels,
    out_dir: Path,
    motion: Any,
    identity: dict[str, Any],
    img: Any,
    wave: Any,
    audio: Path,
    source: Any,
) -> dict[str, str]:
    """Every output of one generation into ``out_dir``: motion files, preview, ``source.mat``, video."""
    log.info("generate: rendering %d frames (%s)", len(motion), models.mode)
    outputs = save_outputs(out_dir, motion, identity, img, wave, models.bfm)
    outputs |= save_video_outputs(
        out_dir,
        models.renderer,
        source,
        motion,
        audio,
        mode=models.mode,
        batch_size=models.cfg.render.batch_size,
    )
    return outputs


def generate_from_image(
    cfg: PipelineConfig,
    image: str | Path,
    audio: str | Path,
    out_dir: str | Path,
    *,
    mode: str | None = None,
    model: str = "current",
    emotion_reference: str | Path | None = None,
    method: str = "emotalker",
    ws: Workspace,
) -> dict[str, Any]:
    """Animate ``image`` with ``audio`` into ``out_dir`` (see the generate flow); every input, the
    preview BFM, the k-means model (in the stores of ``ws``) and the renderer are checked before the slow
    steps.

    ``method="sadtalker"``: SadTalker's own motion (released ExpNet + PoseVAE, ``sadtalker.*`` settings)
    through the same renderer, to compare with EmoTalker on the same photo."""
    check_method(method, emotion_reference)
    img = read_image(Path(image))  # validate inputs before loading any model
    wave, note = load_speech(Path(audio))
    seconds = len(wave) / 16_000
    log.info(
        "generate: %.1f s of speech -> %d frames; checking the inputs and models", seconds, len(wave) // 640
    )
    if (silent := silence_warning(wave, audio)) is not None:
        log.warning(silent)
    models = load_generation_models(cfg, method=method, mode=mode, model=model, ws=ws)
    identity = identity_coefficients(img, cfg, models.device)
    reference = identity["motion"]
    if emotion_reference is not None:  # before any stage-2 model is loaded: a bad file fails fast
        reference = driving_motion(Path(emotion_reference), cfg, models.device)
    motion, versions = generate_motion(models, wave, reference)
    source = prepare_source(img, cfg, models.mode)
    outputs = write_generation(models, Path(out_dir), motion, identity, img, wave, Path(audio), source)
    summary = {**generation_inputs_summary(wave, note), **outputs, "models": versions, "method": method}
    if silent is not None:
        summary["audio_warning"] = silent
    summary["reference"] = (
        f"driving frames: {emotion_reference} ({len(reference)} frames)"
        if emotion_reference is not None
        else "the image (neutral reference)"
    )
    log.info("generated %d frames (%s video) on %s -> %s", len(motion), models.mode, models.device, out_dir)
    return summary
