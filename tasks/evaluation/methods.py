"""Table 1's other rows, scored exactly as ours: every method is a "method" that gives, per test clip,
either a video (``kind="video"``) or a motion (``kind="motion"``, rendered by the same renderer from the
actor's same neutral reference), then compared with the real clip by the same ``compare_videos``.

Built in: the real video (the ceiling), copy-reference (the neutral reference with no motion) and mean
motion (the training set's mean motion on the reference) as floors, and any folder of ``<clip_id>.mp4``
videos. Another method (e.g. SadTalker's ExpNet + PoseVAE) registers itself with :func:`register_method`
and is named in ``eval.methods``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from emotalker.configs.constants import RENDERER_STANDIN_MARKER
from emotalker.storage.workspace import Workspace
from emotalker.tasks.evaluation.rendered import ClipRenderer, ImageMetricModels, compare_videos
from emotalker.tasks.progress import progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClipInput:
    """What a method may use for one test clip: its manifest row, the actor's neutral reference motion
    frame (70,) (None where no face features were read: scoring a folder of videos) and how many motion
    frames to produce."""

    row: dict[str, Any]
    reference: np.ndarray | None
    frames: int


@dataclass(frozen=True)
class Method:
    """One Table 1 row's producer; ``clip`` returns a video path, a (T, 70) motion, or None (no clip)."""

    name: str
    kind: Literal["video", "motion"]
    clip: Callable[[ClipInput], Path | np.ndarray | None]
    standin: bool = False  # its numbers come from stand-in weights (marked in the report)


MethodFactory = Callable[[Any, Workspace, list[dict[str, Any]]], Method]  # (cfg, ws, train rows) -> Method
METHODS: dict[str, MethodFactory] = {}


def register_method(name: str, factory: MethodFactory) -> None:
    """Make ``name`` usable in ``eval.methods``; ``factory(cfg, ws, train_rows)`` builds the method once."""
    METHODS[name] = factory


def real_video(cfg: Any, ws: Workspace, train_rows: list[dict[str, Any]]) -> Method:
    """The ceiling: the real clip scored against itself (SSIM 1, LMD 0, its own CPBD and Sync)."""
    return Method("real video", "video", lambda c: Path(c.row["prepared_video"]))


def copy_reference(cfg: Any, ws: Workspace, train_rows: list[dict[str, Any]]) -> Method:
    """A floor: the neutral reference frame held still for the whole clip."""
    return Method("copy reference", "motion", lambda c: np.repeat(c.reference[None], c.frames, axis=0))


def training_mean_motion(ws: Workspace, train_rows: list[dict[str, Any]]) -> np.ndarray:
    """(70,) the mean motion frame over every stored training clip's frames."""
    face = ws.store("face")
    total, count = None, 0
    for r in train_rows:
        if not face.has_clip(r["clip_id"]):
            continue
        m = face.read_clip(r["clip_id"], ["motion"])["motion"].astype(np.float64)
        total = m.sum(axis=0) if total is None else total + m.sum(axis=0)
        count += len(m)
    if total is None or count == 0:
        raise ValueError("mean motion: no training clip has face features (run the features flow)")
    return (total / count).astype(np.float32)


def mean_motion(cfg: Any, ws: Workspace, train_rows: list[dict[str, Any]]) -> Method:
    """A floor: the training set's mean motion frame for the whole clip, rendered on the reference."""
    mean = training_mean_motion(ws, train_rows)
    return Method("mean motion", "motion", lambda c: np.repeat(mean[None], c.frames, axis=0))


def videos_method(name: str, folder: str | Path) -> Method:
    """Any other method from a folder of its videos, ``<clip_id>.mp4``; a clip without one is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"--videos {folder} is not a directory of <clip_id>.mp4 videos")

    def clip(c: ClipInput) -> Path | None:
        path = folder / f"{c.row['clip_id']}.mp4"
        return path if path.is_file() else None

    return Method(name, "video", clip)


def sadtalker(cfg: Any, ws: Workspace, train_rows: list[dict[str, Any]]) -> Method:
    """The paper's main comparison, computed here: SadTalker's released ExpNet + PoseVAE on the clip's mel
    windows and the actor's neutral reference (``tasks/generation/sadtalker.py``), rendered by our
    renderer."""
    from emotalker.tasks.generation.sadtalker import clip_sadtalker_motion, load_sadtalker

    models = load_sadtalker(cfg, cfg.torch_device())
    mel = ws.store("mel")

    def clip(c: ClipInput) -> np.ndarray | None:
        if c.reference is None:
            return None
        windows = mel.read_clip(c.row["clip_id"], ["windows"])["windows"]
        return clip_sadtalker_motion(cfg, models, windows, c.reference)[: c.frames]

    standin = Path(cfg.render.checkpoint).parent.joinpath(RENDERER_STANDIN_MARKER).is_file()
    return Method("SadTalker", "motion", clip, standin=standin)


register_method("real_video", real_video)
register_method("copy_reference", copy_reference)
register_method("mean_motion", mean_motion)
register_method("sadtalker", sadtalker)


def check_methods(names: list[str]) -> None:
    """Fail (naming them) on ``eval.methods`` entries no method registered, before any clip is generated."""
    unknown = [n for n in names if n not in METHODS]
    if unknown:
        raise ValueError(f"eval.methods: unknown {unknown}; registered: {sorted(METHODS)}")


def build_methods(
    cfg: Any, names: list[str], train_rows: list[dict[str, Any]], *, ws: Workspace
) -> list[Method]:
    """The registered methods ``names`` (``eval.methods``), built once before their clips are scored."""
    check_methods(names)
    return [METHODS[n](cfg, ws, train_rows) for n in names]


@dataclass(kw_only=True)
class Scoring:
    """What scoring shares with our own row: the renderer (motion methods), the image models and where
    renders go; ``ref_rows`` / ``refs``: per actor, the neutral reference clip's row and motion frame."""

    models: ImageMetricModels
    renderer: ClipRenderer | None
    ref_rows: dict[str, dict[str, Any]]
    refs: dict[str, np.ndarray]
    video_dir: Path
    frames: Callable[[str], int]  # a test clip's motion frames (its ground truth's length)
    max_frames: int | None = None


def score_clip(method: Method, s: Scoring, row: dict[str, Any]) -> dict[str, Any] | None:
    """One method on one test clip, compared with the real clip as ours is; None when it has no clip."""
    cid, actor = row["clip_id"], row["actor"]
    source = s.renderer.source(actor, s.ref_rows[actor]) if s.renderer is not None else None
    box = tuple(int(v) for v in source.box) if source is not None else None
    n = s.frames(cid) if s.max_frames is None else min(s.frames(cid), s.max_frames)
    out = method.clip(ClipInput(row=row, reference=s.refs.get(actor), frames=n))
    if out is None:
        return None
    if method.kind == "motion":
        if s.renderer is None:
            return None
        video, box = s.renderer.render(
            source,
            np.asarray(out)[:n],
            Path(row["prepared_audio"]),
            s.video_dir / method.name.replace(" ", "_") / f"{cid}.mp4",
        )
    else:
        video = Path(out)
    rendered = method.kind == "motion"  # its video went through the renderer (stand-in marking)
    res = compare_videos(
        video,
        Path(row["prepared_video"]),
        Path(row["prepared_audio"]),
        s.models,
        box=box,
        max_frames=s.max_frames,
    )
    info = {"clip_id": cid, "method": method.name, "emotion": row["emotion"], "level": row["level"]}
    return info | {"rendered": rendered, **res}


def score_method(method: Method, s: Scoring, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every test clip the method has, scored; the missing ones are left out (the table counts them)."""
    out = []
    for r in progress(rows, desc=f"Table 1 row {method.name}", unit="clip"):
        res = score_clip(method, s, r)
        if res is None:
            log.warning("%s: no clip for %s", method.name, r["clip_id"])
        else:
            out.append(res)
    return out


def scoring_for(
    cfg: Any,
    models: ImageMetricModels,
    renderer: ClipRenderer | None,
    ref_rows: dict[str, dict[str, Any]],
    refs: dict[str, np.ndarray],
    video_dir: Path,
    *,
    ws: Workspace,
) -> Scoring:
    """The scoring context of an evaluation: clip lengths from the face store of ``ws``,
    ``eval.render_max_frames``."""
    face = ws.store("face")
    return Scoring(
        models=models,
        renderer=renderer,
        ref_rows=ref_rows,
        refs=refs,
        video_dir=video_dir,
        frames=lambda cid: len(face.read_clip(cid, ["motion"])["motion"]),
        max_frames=cfg.eval.render_max_frames,
    )


def score_methods(
    methods: list[Method], s: Scoring, rows: list[dict[str, Any]]
) -> dict[str, list[dict[str, Any]]]:
    """Every method on the same test rows: {method name: per-clip results}."""
    return {m.name: score_method(m, s, rows) for m in methods}
