"""Generation flow: animate one face image with one speech file using the registered models."""

from __future__ import annotations

from typing import Any

from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
)
from emotalker.storage.workspace import Workspace
from emotalker.tasks.generation.run import generate_from_image


@pipeline_flow("generate")
def generate_flow(
    image: str,
    audio: str,
    out_dir: str,
    *,
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    mode: str | None = None,
    model: str = "current",
    emotion_reference: str | None = None,
    method: str = "emotalker",
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
        method: ``emotalker`` (the registered models) or ``sadtalker`` (SadTalker's released ExpNet +
            PoseVAE, ``sadtalker.*`` settings), rendered by the same renderer for a side-by-side comparison.
    """
    cfg = resolve_config(config, overrides)
    return generate_from_image(
        cfg,
        image,
        audio,
        out_dir,
        mode=mode,
        model=model,
        emotion_reference=emotion_reference,
        method=method,
        ws=Workspace.from_paths(cfg.paths),
    )
