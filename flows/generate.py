"""Generation flow: animate one face image with one speech file using the registered models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import get_run_logger

from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
)
from emotalker.storage.zarr_store import StoreRoot
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


@pipeline_flow("generate")
def generate_flow(
    image: str,
    audio: str,
    out_dir: str,
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    mode: str | None = None,
    model: str = "current",
    emotion_reference: str | None = None,
) -> dict[str, Any]:
    """Image -> identity coefficients; audio -> HuBERT/tokens/mel; models by alias -> 70-dim motion;
    SadTalker's renderer -> ``video.mp4`` in ``mode`` (crop / full / still; default ``render.mode``).

    With ``face.bfm_path`` the preview animates the motion's BFM landmarks on the reference image.

    Args:
        image: reference face image (its identity and pose are kept).
        audio: speech to animate (any format ffmpeg reads; resampled to 16 kHz).
        out_dir: where video.mp4, motion.npy, motion.mat, source.mat, coefficients.png and preview.mp4 go.
        mode: video layout, ``crop`` / ``full`` / ``still`` (default ``render.mode``).
        model: the registered versions to use: ``current`` (the newest trained on these stores), a
            registry alias such as ``best`` or a version number.
        emotion_reference: emotional driving frames (a video, or its .npy (T, 70) / .mat coefficients)
            that stand in for the image's neutral reference frame by frame (the paper's audio + driving
            frames setting, Table 5); None: the image is the neutral reference.
    """
    cfg = resolve_config(config, overrides)
    device = cfg.torch_device()
    img = read_image(Path(image))  # validate inputs before loading any model
    wave, note = load_speech(Path(audio))
    bfm = load_preview_bfm(cfg)  # face.bfm_path set but unusable: fail before loading any model
    root = StoreRoot.from_paths(cfg.paths)
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
    km = recorded_kmeans(root, meta)  # kept beside the stores: found from any machine
    mode = mode or cfg.render.mode
    renderer = load_renderer(cfg, device, (mode,))  # missing renderer files: fail before the slow steps
    identity = identity_coefficients(img, cfg, device)
    reference = identity["motion"]
    if emotion_reference is not None:  # before any stage-2 model is loaded: a bad file fails fast
        reference = driving_motion(Path(emotion_reference), cfg, device)
    feats = audio_features(wave, cfg, device, km)
    generator, versions = load_emotalker(cfg, model, device)
    motion = generator.generate(reference, feats["audio"], feats["tokens"], feats["mel"])
    outputs = save_outputs(Path(out_dir), motion, identity, img, wave, bfm)
    source = prepare_source(img, cfg, mode)
    outputs |= save_video_outputs(
        Path(out_dir), renderer, source, motion, Path(audio), mode, cfg.render.batch_size
    )
    summary = {**generation_inputs_summary(wave, note), **outputs, "models": versions}
    summary["reference"] = (
        f"driving frames: {emotion_reference} ({len(reference)} frames)"
        if emotion_reference is not None
        else "the image (neutral reference)"
    )
    get_run_logger().info("generated %d frames (%s video) on %s -> %s", len(motion), mode, device, out_dir)
    return summary
