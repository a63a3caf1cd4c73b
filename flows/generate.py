"""Generation flows: animate one face image with one speech file (``generate``), or every row of a job
file with one model load (``generate-batch``), using the registered models."""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger

from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.storage.workspace import Workspace
from emotalker.tasks.generation.batch import run_batch, summary_lines
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


@pipeline_flow("generate-batch")
def generate_batch_flow(
    jobs: CredentialFree,
    out_dir: CredentialFree | None = None,
    *,
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    mode: str | None = None,
    model: str = "current",
    method: str = "emotalker",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Every row of a job file animated with one model load and each distinct image prepared once
    (instead of a loop of ``generate`` calls, each paying every load again).

    Rows run in order; each gets ``out_dir/<output>/`` (the same files as ``generate``) and a status
    (done, or failed with a one-line reason) in ``<jobs>.status.csv`` beside the outputs. A rerun skips
    the rows done with the same inputs and redoes the failed ones.

    Args:
        jobs: a ``.csv`` (header: image, audio, output and optionally emotion_reference) or ``.jsonl``
            job file; relative paths are relative to its folder.
        out_dir: where the rows' output folders and the status file go (default: the job file's folder).
        mode: video layout, ``crop`` / ``full`` / ``still`` (default ``render.mode``).
        model: the registered versions to use: ``current``, a registry alias such as ``best`` or a version.
        method: ``emotalker`` (the registered models) or ``sadtalker`` (SadTalker's released networks).
        overwrite: replace output folders this job file did not write (otherwise such a row fails).
    """
    cfg = resolve_config(config, overrides)
    result = run_batch(
        cfg,
        jobs,
        out_dir,
        mode=mode,
        model=model,
        method=method,
        overwrite=overwrite,
        ws=Workspace.from_paths(cfg.paths),
    )
    logger = get_run_logger()
    for line in summary_lines(result):
        logger.info(line)
    table_artifact(
        "generate-batch-status",
        [{k: r.get(k, "") for k in ("output", "status", "reason", "seconds")} for r in result["rows"]],
        f"status of each row of {jobs}",
    )
    return result
