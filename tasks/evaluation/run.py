"""One evaluation of the test split as a plain function (no Prefect): every test clip generated per
setting, its coefficient-space metrics, Table 1's image metrics on rendered videos when the assets allow,
the per-setting summaries, the table beside the paper's and the notes on what was skipped.

The evaluate flow resolves the config, calls :func:`run_evaluation`, shows the table and notes as Prefect
artifacts and logs everything with :func:`log_evaluation_run`.
"""

from __future__ import annotations

import json
import logging
import re
import tempfile
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import mlflow
import numpy as np

from emotalker.configs.schema import PipelineConfig
from emotalker.models.bfm import BFMLandmarks, load_bfm
from emotalker.models.emotalker import EmoTalker
from emotalker.models.syncnet import load_syncnet
from emotalker.storage.split import load_split
from emotalker.storage.workspace import Workspace
from emotalker.tasks.evaluation.fanout import map_clips, on_worker
from emotalker.tasks.evaluation.methods import (
    build_methods,
    check_methods,
    score_methods,
    scoring_for,
    training_mean_motion,
)
from emotalker.tasks.evaluation.metrics import PAPER_TABLE1, PAPER_TABLE5, accuracy
from emotalker.tasks.evaluation.motion import (
    BASELINE_LABELS,
    BASELINES,
    clip_features,
    evaluate_clip,
    landmark_metrics,
)
from emotalker.tasks.evaluation.protocol import (
    classifier_skip_note,
    load_eval_classifier,
    protocol_card,
    standin_weights,
)
from emotalker.tasks.evaluation.rendered import (
    EVAL_SIZE,
    ClipRenderer,
    ImageMetricModels,
    compare_videos,
    missing_renderer_files,
    skip_metric,
    video_source,
)
from emotalker.tasks.evaluation.report import ProtocolSection, write_report
from emotalker.tasks.evaluation.subset import balanced_subset
from emotalker.tasks.evaluation.table1 import (
    confusion_rows,
    display_rows,
    emotion_level_table,
    mlflow_table,
    table1,
)
from emotalker.tasks.generation.inference import load_emotalker
from emotalker.tasks.generation.sadtalker import (
    SadTalkerModels,
    clip_sadtalker_motion,
    load_sadtalker,
    sadtalker_lip_branch,
)
from emotalker.tasks.tracking import (
    config_params,
    describe_run,
    download_stage_plots,
    log_data_inputs,
    setup_mlflow,
)
from emotalker.tasks.training.registry import registered_name
from emotalker.tasks.training.stages import STAGES

log = logging.getLogger(__name__)  # an emotalker logger: its lines reach the Prefect flow run's log

# how test clips' motion is made: EmoTalker; SadTalker itself (ExpNet + PoseVAE, Table 1 / Table 2 row 1);
# the EmoTalker face branch with SadTalker's released ExpNet lips, frozen (Table 2 row 2)
METHODS = ("emotalker", "sadtalker", "sadtalker_lips")

# per-clip result key -> summary / Table 1 name
PER_CLIP_METRICS: dict[str, str] = {
    "ssim": "SSIM",
    "cpbd": "CPBD",
    "f_lmd": "F-LMD",  # the authors' eval.py: mean |gt - gen| on raw coordinates
    "m_lmd": "M-LMD",
    "f_lmd_eat": "F-LMD_EAT",  # EAT's: mean-centred, Euclidean
    "m_lmd_eat": "M-LMD_EAT",
    "sync": "Sync",
    "emo_acc": "EmoAcc",
    "f_lmd_motion": "F-LMD_motion",
    "m_lmd_motion": "M-LMD_motion",
}
MOTION_LMD = {"f_lmd_motion": "F-LMD_motion", "m_lmd_motion": "M-LMD_motion"}
RENDERED = (
    "SSIM",
    "CPBD",
    "F-LMD",
    "M-LMD",
    "F-LMD_EAT",
    "M-LMD_EAT",
    "Sync",
    "EmoAcc",
)  # metrics of rendered videos


@dataclass(kw_only=True)
class EvaluationRun:
    """What one evaluation produced: the rows the evaluate flow logs and the summary it returns."""

    per_clip: list[dict[str, Any]]
    summary: dict[str, Any]  # the neutral setting's plain names, other settings' prefixed "<setting>/"
    skipped: dict[str, str]
    table: list[dict[str, Any]]
    versions: dict[str, str]
    videos: str | None  # where the test videos came from (``video_source``), None: no image metrics
    out_dir: Path
    logged_videos: list[Path] = field(default_factory=list)
    # Table 1 as the paper measures it: one row per method (ours first) with 95% intervals, then the
    # paper's; every method's per-clip rows; the protocol card; the stand-in weights behind the numbers
    table1: list[dict[str, Any]] = field(default_factory=list)
    methods_per_clip: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    card: dict[str, str] = field(default_factory=dict)
    standin: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class _Generation:
    """What every clip of one evaluation shares: the stores, the models, the video sources and where
    outputs go."""

    ws: Workspace
    generator: EmoTalker
    bfm: BFMLandmarks | None
    rendered: Path | None
    image_models: ImageMetricModels | None
    renderer: ClipRenderer | None
    ref_clips: dict[str, str]
    refs: dict[str, np.ndarray]
    out_dir: Path
    video_dir: Path
    drivers: dict[str, str] = field(default_factory=dict)  # clip -> the clip whose frames drive it
    sadtalker: SadTalkerModels | None = None  # set: the clips' motion is SadTalker's own
    mean_motion: np.ndarray | None = None  # the training split's mean frame (the mean-motion baseline)


def reference_clips(rows: list[dict[str, Any]], ws: Workspace) -> dict[str, str]:
    """Per actor, a neutral clip (the paper's neutral reference), else any clip with face features."""
    face = ws.store("face")
    refs: dict[str, str] = {}
    for r in sorted(rows, key=lambda r: (r["emotion"] != "neutral", r["clip_id"])):
        if r["actor"] not in refs and face.has_clip(r["clip_id"]):
            refs[r["actor"]] = r["clip_id"]
    return refs


def reference_frames(rows: list[dict[str, Any]], ws: Workspace) -> dict[str, np.ndarray]:
    """Per actor, the first motion frame of its reference clip."""
    face = ws.store("face")
    return {a: face.read_slice(c, "motion", 0, 1)[0] for a, c in reference_clips(rows, ws).items()}


def driving_clips(rows: list[dict[str, Any]], ws: Workspace) -> dict[str, str]:
    """Per clip, the clip whose frames drive it in the "driving" setting (Table 5): another sentence of
    the same actor, view, emotion and level (the next one in sentence order), else the same sentence at
    another level of that emotion; clips with neither (or without face features) have no driver."""
    face = ws.store("face")
    usable = sorted(
        (r for r in rows if face.has_clip(r["clip_id"])),
        key=lambda r: (r["level"], r["sentence"], r["clip_id"]),
    )
    drivers: dict[str, str] = {}
    for r in rows:
        same = [
            o
            for o in usable
            if (o["actor"], o["view"], o["emotion"]) == (r["actor"], r["view"], r["emotion"])
        ]
        same = [o for o in same if o["clip_id"] != r["clip_id"]]
        level = [o for o in same if o["level"] == r["level"] and o["sentence"] != r["sentence"]]
        pool = level or [o for o in same if o["level"] != r["level"]]
        if pool:
            after = [o for o in pool if (o["level"], o["sentence"]) > (r["level"], r["sentence"])]
            drivers[r["clip_id"]] = (after or pool)[0]["clip_id"]
    return drivers


def skipped_metrics(cfg: Any, videos: str | None) -> dict[str, str]:
    """Metrics this run cannot compute, each with exactly what it needs."""
    e = cfg.eval
    notes = {}
    if cfg.face.bfm_path is None:
        for m in MOTION_LMD.values():
            notes[m] = "skipped: needs the BFM (face.bfm_path) to project motion to landmarks"
    missing = ", ".join(f"render.{k}" for k in missing_renderer_files(cfg))
    needs_videos = (
        f"skipped: needs rendered test videos: SadTalker's renderer checkpoints ({missing} not found) or "
        "eval.rendered_dir/<clip_id>.mp4"
    )
    if videos is None:
        for m in ("SSIM", "CPBD", "F-LMD", "M-LMD", "F-LMD_EAT", "M-LMD_EAT"):
            notes[m] = needs_videos
    if e.syncnet_checkpoint is None:
        notes["Sync"] = "skipped: needs SyncNet weights (eval.syncnet_checkpoint = syncnet_v2.model)"
    elif videos is None:
        notes["Sync"] = needs_videos
    if (note := classifier_skip_note(cfg)) is not None:
        notes["EmoAcc"] = note
    elif videos is None:
        notes["EmoAcc"] = needs_videos
    return notes


def settings_skipped(cfg: Any, videos: str | None) -> dict[str, str]:
    """:func:`skipped_metrics`, plus each driving setting's (``<setting>/<metric>``) when it is evaluated:
    the renderer renders every setting; ``eval.rendered_dir`` holds the neutral setting's videos only."""
    base = skipped_metrics(cfg, videos)
    skipped = dict(base)
    for s in cfg.eval.settings:
        if s == "neutral":
            continue
        skipped |= {f"{s}/{m}": note for m, note in base.items()}
        if videos == "rendered_dir":
            skipped |= {
                f"{s}/{m}": "skipped: eval.rendered_dir holds the neutral setting's videos only"
                for m in RENDERED
            }
    return skipped


def image_metric_models(cfg: Any, device: str, ws: Workspace | None = None) -> ImageMetricModels:
    """face-alignment (the project's loading), and SyncNet / the classifier when configured; a bad file
    fails here, before any clip. With ``ws`` the real clips' side is read from (and, on first need,
    written to) its ``eval_real_side`` store, so no evaluation computes it twice."""
    from emotalker.tasks.evaluation.reference import RealSideStore, real_side_models
    from emotalker.tasks.features.face_coeffs import LandmarkDetector, detector_dtype

    f = cfg.face
    detector = LandmarkDetector(
        device=device,
        face_detector=f.face_detector,
        batch_size=f.batch_size,
        model_dir=f.face_alignment_dir,
        flip_input=cfg.eval.flip_input,
        detect_max_side=f.detect_max_side,
        dtype=detector_dtype(cfg.eval.detector_dtype, device),
    )
    syncnet = load_syncnet(cfg.eval.syncnet_checkpoint, device) if cfg.eval.syncnet_checkpoint else None
    classifier = load_eval_classifier(cfg, device)
    if classifier is not None:
        if classifier.missing:
            log.warning("the emotion classifier cannot predict %s", ", ".join(classifier.missing))
    reference = RealSideStore(ws.stores, real_side_models(cfg)) if ws is not None else None
    return ImageMetricModels(detector, syncnet, classifier, device, authors_crop=True, reference=reference)


def setting_summary(per_clip: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean metrics over the clips of one setting."""
    summary: dict[str, Any] = {
        "LipL2": float(np.mean([p["lip_l2"] for p in per_clip])),
        "FaceL2": float(np.mean([p["face_l2"] for p in per_clip])),
        # not the paper's EmoAcc: the model's own stage-1 emotion head scores its generated motion
        "EmoAcc_stage1_head": accuracy(
            np.array([p["emotion_pred"] for p in per_clip]), np.array([p["emotion_label"] for p in per_clip])
        ),
        "EmoAcc_stage1_head_gt_motion": accuracy(
            np.array([p["emotion_pred_gt_motion"] for p in per_clip]),
            np.array([p["emotion_label"] for p in per_clip]),
        ),
        "clips": len(per_clip),
    }
    labels = np.array([p["emotion_label"] for p in per_clip])
    for b in BASELINES:  # the same metrics of the baselines, on the same clips
        if f"{b}.face_l2" not in per_clip[0]:
            continue
        if f"{b}.lip_l2" in per_clip[0]:
            summary[f"{b}.LipL2"] = float(np.mean([p[f"{b}.lip_l2"] for p in per_clip]))
        summary[f"{b}.FaceL2"] = float(np.mean([p[f"{b}.face_l2"] for p in per_clip]))
        summary[f"{b}.EmoAcc_stage1_head"] = accuracy(
            np.array([p[f"{b}.emotion_pred"] for p in per_clip]), labels
        )
    for key, name in PER_CLIP_METRICS.items():
        values = [p[key] for p in per_clip if key in p]
        if values and np.isfinite(values).any():
            summary[name] = float(np.nanmean(values))
    return summary


def evaluation_table(summaries: dict[str, dict[str, Any]], skipped: dict[str, str]) -> list[dict[str, Any]]:
    """This run's row per setting (rounded, its skipped metrics marked), then the baselines' rows on the same
    clips, above the paper's Tables 1 and 5."""
    label = {
        "neutral": "this run (neutral reference)",
        "driving": "this run (driving frames)",
        "driving_oracle": "this run (driving frames: the clip's own, oracle)",
    }
    table = []
    for s, sm in summaries.items():
        prefix = "" if s == "neutral" else f"{s}/"
        missing = [m[len(prefix) :] for m in skipped if m.startswith(prefix) and "/" not in m[len(prefix) :]]
        ours = {k: v for k, v in sm.items() if k.split(".")[0] not in BASELINES}
        table.append(
            {
                "method": label[s],
                **{k: round(v, 4) if isinstance(v, float) else v for k, v in ours.items()},
                **{m: "skipped" for m in missing},
            }
        )
    for s, sm in summaries.items():  # the baselines on the same clips, coefficient-space metrics only
        for b in BASELINES:
            vals = {k.split(".", 1)[1]: round(v, 4) for k, v in sm.items() if k.startswith(f"{b}.")}
            if vals:
                table.append({"method": f"{BASELINE_LABELS[b]} ({s})", **vals, "clips": sm["clips"]})
    for name, vals in {**PAPER_TABLE1, **PAPER_TABLE5}.items():
        table.append({"method": name, **vals})
    return table


def _test_split(
    cfg: PipelineConfig, ws: Workspace
) -> tuple[dict[str, dict[str, Any]], list[str], list[dict[str, Any]]]:
    """The manifest rows by clip id, the test clips to evaluate (``eval.max_clips`` of them, every emotion,
    level and actor in turn) and every test row."""
    split_path = ws.split_path
    split = load_split(split_path)
    rows = {r["clip_id"]: r for r in ws.manifest().records()}
    test_ids = balanced_subset([rows[c] for c in split["test"] if c in rows], cfg.eval.max_clips)
    if not test_ids:
        raise ValueError(f"the test split in {split_path} is empty")
    return rows, test_ids, [rows[c] for c in split["test"] if c in rows]


def _train_rows(ws: Workspace, rows: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """The training split's manifest rows (the mean-motion baseline's clips)."""
    split = load_split(ws.split_path)
    return [rows[c] for c in split["train"] if c in rows]


def _evaluate_one(
    cfg: PipelineConfig, g: _Generation, r: dict[str, Any], setting: str
) -> tuple[dict[str, Any] | None, Path | None]:
    """One clip in one setting: its per-clip row (its motion saved under ``out_dir``; None: skipped) and
    the video this run rendered of it (None: none rendered)."""
    cid = r["clip_id"]
    max_frames = cfg.eval.render_max_frames
    try:
        feats = clip_features(g.ws, cid)
        # neutral: the actor's neutral reference frame (Table 1); driving: the frames of another sentence
        # of the actor in the same emotion and level (Table 5, upper rows); driving_oracle: the clip's own
        if setting == "neutral":
            reference = g.refs[r["actor"]]
        elif setting == "driving_oracle":
            reference = feats["motion"]
        elif cid in g.drivers:
            reference = clip_features(g.ws, g.drivers[cid])["motion"]
        else:
            log.warning("skipping %s (driving): no other clip of its actor and emotion to drive it", cid)
            return None, None
        motion = None
        if g.sadtalker is not None:  # SadTalker's motion, scored as every other method's
            motion = clip_sadtalker_motion(cfg, g.sadtalker, feats["mel"], reference.reshape(-1, 70)[0])
        res = evaluate_clip(
            g.generator, feats, reference, r["emotion"], motion=motion, mean_motion=g.mean_motion
        )
    except KeyError as exc:
        log.warning("skipping %s: %s", cid, exc)
        return None, None
    if setting == "driving":
        res["driver"] = g.drivers[cid]
    if g.bfm is not None:
        try:
            res.update(landmark_metrics(g.bfm, res["motion"], feats["motion"], feats["coeffs"]))
        except ValueError as exc:  # one clip's metric, not the run's
            skip_metric(res, "landmark metrics", exc)
    video, box = None, None
    name = cid if setting == "neutral" else f"{cid}.{setting}"
    if g.renderer is not None:  # every setting is rendered from the actor's reference image
        source = g.renderer.source(r["actor"], g.ref_clips[r["actor"]])
        video, box = g.renderer.render(
            source, res["motion"][:max_frames], Path(r["prepared_audio"]), g.video_dir / f"{name}.mp4"
        )
    elif g.rendered is not None and setting == "neutral":
        video = g.rendered / f"{cid}.mp4"
        if not video.is_file():
            log.warning("%s: no rendered video %s", cid, video)
            video = None
    if video is not None and g.image_models is not None:
        try:
            res.update(
                compare_videos(
                    video,
                    Path(r["prepared_video"]),
                    Path(r["prepared_audio"]),
                    g.image_models,
                    box=box,
                    max_frames=max_frames,
                )
            )
        except ValueError as exc:  # an unreadable or empty video: this clip's image metrics only
            skip_metric(res, "image metrics", exc)
    np.save(g.out_dir / f"{name}.npy", res.pop("motion"))
    row = {"clip_id": cid, "setting": setting, "emotion": r["emotion"], "level": r["level"], **res}
    return row, video if g.renderer is not None else None


@dataclass(frozen=True)
class _ClipWork:
    """What a Dask worker needs to evaluate clips as this run does: it pickles (config, exact registered
    versions, stores), and the worker loads the models from it once (:func:`on_worker`)."""

    cfg: PipelineConfig
    versions: dict[str, str]
    method: str
    ws: Workspace

    def key(self) -> str:
        """The worker cache key: the config (its model files) and the registered versions."""
        return json.dumps([self.cfg.model_dump(mode="json"), self.versions, self.method], sort_keys=True)


def _clip_on_worker(work: _ClipWork, item: tuple[str, str]) -> tuple[Any, Path | None, dict, dict]:
    """One (clip, setting) on a Dask worker, with the worker's models; also the real clip's side of the
    image comparison, which the evaluating process keeps for Table 1's other rows on the same clip."""
    cid, setting = item
    g, rows, _, _ = on_worker(work.key(), lambda: _generation(work.cfg, work.versions, work.method, work.ws))
    row, video = _evaluate_one(work.cfg, g, rows[cid], setting)
    sides, boxes = {}, {}
    if g.image_models is not None:
        real = str(Path(rows[cid]["prepared_video"]))  # as compare_videos keys its caches
        sides = {k: v for k, v in g.image_models.real_sides.items() if k[0] == real}
        boxes = {k: v for k, v in g.image_models.real_boxes.items() if k == real}
    return row, video, sides, boxes


def _evaluate_clips(
    cfg: PipelineConfig, g: _Generation, rows: dict[str, dict[str, Any]], runs: list, work: _ClipWork
) -> list[tuple[dict[str, Any] | None, Path | None]]:
    """Every (clip, setting) of ``runs``, in order: in this process, or on Dask with ``eval.dask``."""
    if not cfg.eval.dask:
        one = lambda item: _evaluate_one(cfg, g, rows[item[0]], item[1])  # noqa: E731
        return map_clips(one, runs, dask=None, device=cfg.torch_device())
    done = map_clips(partial(_clip_on_worker, work), runs, dask=cfg.dask, device=cfg.torch_device())
    for _, _, sides, boxes in done:
        if g.image_models is not None:
            g.image_models.real_sides.update(sides)
            g.image_models.real_boxes.update(boxes)
    return [(row, video) for row, video, _, _ in done]


OURS = "EmoTalker (this run)"


def table1_methods(
    cfg: PipelineConfig, g: _Generation, rows: dict[str, dict[str, Any]], test_ids: list[str], per_clip: list
) -> dict[str, list[dict[str, Any]]]:
    """Per Table 1 row, its per-clip image metrics on the same test clips: ours (the neutral setting's
    renders), then ``eval.methods`` scored by the same renderer and comparison; {} without videos."""
    if g.image_models is None:
        return {}
    ours = [p | {"method": OURS} for p in per_clip if p["setting"] == "neutral" and "ssim" in p]
    methods = build_methods(cfg, cfg.eval.methods, _train_rows(g.ws, rows), ws=g.ws)
    s = scoring_for(cfg, g.image_models, g.renderer, g.ref_clips, g.refs, g.video_dir, ws=g.ws)
    return {OURS: ours, **score_methods(methods, s, [rows[c] for c in test_ids])}


def run_table1(
    cfg: PipelineConfig, by_method: dict[str, list[dict[str, Any]]], test_ids: list[str], standin: list[str]
) -> list[dict[str, Any]]:
    """Table 1 with intervals; rows whose numbers went through a stand-in network are marked: every row
    through a stand-in classifier or SyncNet, ours and rendered-motion rows through a stand-in renderer."""
    marked = {m for m in by_method if set(standin) - {"renderer"}}
    if "renderer" in standin:
        marked |= {m for m, clips in by_method.items() if m == OURS or any(c.get("rendered") for c in clips)}
    e = cfg.eval
    return table1(by_method, test_ids, resamples=e.bootstrap_resamples, seed=cfg.seed, standin=marked)


def _generation(
    cfg: PipelineConfig, model: str | dict[str, str], method: str, ws: Workspace
) -> tuple[_Generation, dict[str, dict[str, Any]], list[str], dict[str, str]]:
    """Every model and asset one evaluation shares (a bad one fails here, before the first clip), the
    manifest rows, the test clips and the registered versions evaluated."""
    rows, test_ids, test_rows = _test_split(cfg, ws)
    device = cfg.torch_device()
    generator, versions = load_emotalker(cfg, model, device, ws=ws)
    log.info("evaluating registered versions %s on %s", versions, device)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    sadtalker = load_sadtalker(cfg, device) if method == "sadtalker" else None
    if method == "sadtalker_lips":
        generator.lip = sadtalker_lip_branch(cfg, device)
    bfm = load_bfm(cfg.face.bfm_path) if cfg.face.bfm_path else None  # a bad path fails before any clip
    rendered = cfg.eval.rendered_dir
    if rendered is not None and not rendered.is_dir():
        raise FileNotFoundError(f"eval.rendered_dir {rendered} is not a directory of <clip_id>.mp4 videos")
    videos = video_source(cfg)
    check_methods(cfg.eval.methods)  # a misspelt Table 1 row fails here, not after every clip
    image_models = image_metric_models(cfg, device, ws) if videos is not None else None
    renderer = ClipRenderer(cfg, device) if videos == "renderer" else None
    ref_clips = {a: rows[c] for a, c in reference_clips(test_rows, ws).items()}
    refs = reference_frames(test_rows, ws)
    out_dir = cfg.paths.resolve("outputs") / "eval"
    out_dir.mkdir(parents=True, exist_ok=True)
    video_dir = cfg.paths.resolve("outputs") / "eval_videos"  # beside, not inside, the logged eval folder
    g = _Generation(
        ws=ws,
        generator=generator,
        bfm=bfm,
        rendered=rendered,
        image_models=image_models,
        renderer=renderer,
        ref_clips=ref_clips,
        refs=refs,
        out_dir=out_dir,
        video_dir=video_dir,
        drivers=driving_clips(test_rows, ws) if "driving" in cfg.eval.settings else {},
        sadtalker=sadtalker,
        mean_motion=training_mean_motion(ws, _train_rows(ws, rows)),
    )
    return g, rows, test_ids, versions


def run_evaluation(
    cfg: PipelineConfig,
    model: str | dict[str, str] = "current",
    method: str = "emotalker",
    *,
    ws: Workspace,
) -> EvaluationRun:
    """Generate every test clip from audio + neutral reference (and, with ``eval.settings`` holding
    ``driving``, from audio + another sentence's frames of the same actor, emotion and level;
    ``driving_oracle``, the clip's own frames) and compare with its ground truth.

    ``method`` (:data:`METHODS`): ``sadtalker`` scores SadTalker's own motion, ``sadtalker_lips`` the
    model's face branch with SadTalker's released ExpNet as the lip branch; the registered model still
    scores ``EmoAcc_stage1_head``.

    ``ws``: the stores, manifest and split to evaluate on (the flow builds it once).
    Every model and asset is loaded (a bad one fails) before the first clip; a clip without features is
    skipped with a warning, and the run fails only when no clip could be evaluated.
    """
    g, rows, test_ids, versions = _generation(cfg, model, method, ws)
    videos = video_source(cfg)
    runs = [(c, s) for c in test_ids for s in cfg.eval.settings]
    done = _evaluate_clips(cfg, g, rows, runs, _ClipWork(cfg=cfg, versions=versions, method=method, ws=ws))
    per_clip = [row for row, _ in done if row is not None]
    logged = [video for _, video in done if video is not None][: cfg.eval.log_videos]
    if not per_clip:
        raise RuntimeError("no test clip could be evaluated (missing features?)")
    summaries = {s: setting_summary([p for p in per_clip if p["setting"] == s]) for s in cfg.eval.settings}
    # neutral (Table 1) metrics keep their plain names; the driving setting's are prefixed "driving/"
    summary = {(k if s == "neutral" else f"{s}/{k}"): v for s, sm in summaries.items() for k, v in sm.items()}
    skipped = settings_skipped(cfg, videos)
    table = evaluation_table(summaries, skipped)
    by_method = table1_methods(cfg, g, rows, test_ids, per_clip)
    standin = standin_weights(cfg)
    return EvaluationRun(
        table1=run_table1(cfg, by_method, test_ids, standin) if by_method else [],
        methods_per_clip=by_method,
        card=protocol_card(cfg, test_ids, EVAL_SIZE),
        standin=standin,
        per_clip=per_clip,
        summary=summary,
        skipped=skipped,
        table=table,
        versions=versions,
        videos=videos,
        out_dir=g.out_dir,
        logged_videos=logged,
    )


def log_evaluation_run(
    cfg: PipelineConfig, ev: EvaluationRun, parent_run_id: str | None = None, *, ws: Workspace
) -> dict[str, Any]:
    """The evaluation as an MLflow run (nested under ``parent_run_id`` when given): params, ``test/``
    metrics, per-clip rows, table, HTML report and the logged renders. Returns the run id, the report and
    its artifact URI."""
    setup_mlflow(cfg)
    kwargs: dict[str, Any] = {"run_name": f"{cfg.name}-evaluate"}
    if parent_run_id:
        kwargs["parent_run_id"] = parent_run_id
        active = mlflow.active_run()
        kwargs["nested"] = active is not None and active.info.run_id == parent_run_id
    out_dir = ev.out_dir
    with mlflow.start_run(**kwargs) as run:
        mlflow.set_tags({"stage": "evaluate", "pipeline": cfg.name, "videos": ev.videos or "none"})
        describe_run("evaluate")
        mlflow.log_params(config_params(cfg))
        log_data_inputs(ws, context="evaluation")
        mlflow.log_params({f"model.{stage}_version": v for stage, v in ev.versions.items()})
        mlflow.log_metrics({f"test/{k}": float(v) for k, v in ev.summary.items()})
        (out_dir / "per_clip.json").write_text(json.dumps(ev.per_clip, indent=1))
        (out_dir / "table.json").write_text(json.dumps({"table": ev.table, "skipped": ev.skipped}, indent=1))
        # the report's per-emotion / per-level tables are of the first setting (Table 1's when evaluated)
        first = [p for p in ev.per_clip if p["setting"] == cfg.eval.settings[0]]
        protocol = log_table1(cfg, ev)
        report = evaluation_report(cfg, out_dir, ev.table, ev.skipped, first, ev.versions, protocol)
        mlflow.log_artifacts(str(out_dir), "evaluation")
        for v in ev.logged_videos:
            mlflow.log_artifact(str(v), "rendered_videos")
        report_uri = f"{mlflow.get_artifact_uri('evaluation')}/{report.name}"
    return {"run_id": run.info.run_id, "report": report, "report_uri": report_uri}


def evaluation_report(
    cfg: Any,
    out_dir: Path,
    table: list[dict[str, Any]],
    skipped: dict[str, str],
    per_clip: list[dict[str, Any]],
    versions: dict[str, str],
    protocol: ProtocolSection | None = None,
) -> Path:
    """Gather the training plots of the evaluated models and whatever rendered test videos exist."""
    names = {stage: registered_name(cfg, stage) for stage in STAGES}
    # renders made by this pipeline (outputs/eval_videos) or supplied in eval.rendered_dir, if any
    dirs = [cfg.paths.resolve("outputs") / "eval_videos", cfg.eval.rendered_dir]
    candidates = [d / f"{p['clip_id']}.mp4" for d in dirs if d is not None for p in per_clip]
    videos = list(dict.fromkeys(v for v in candidates if v.is_file()))
    with tempfile.TemporaryDirectory() as tmp:
        plots = download_stage_plots(cfg.mlflow.tracking_uri, names, versions, Path(tmp))
        return write_report(
            out_dir / "report.html",
            title=f"EmoTalker evaluation: {cfg.name}",
            table=table,
            skipped=skipped,
            per_clip=per_clip,
            tsne=plots["vqvae"] / "codebook_tsne.png" if "vqvae" in plots else None,
            loss_curves={stage: d / "loss_curves.png" for stage, d in plots.items()},
            videos=videos,
            protocol=protocol,
        )


def metric_key(name: str) -> str:
    """A method name as an MLflow metric key part (letters, digits, ``_ - .`` and spaces only)."""
    return re.sub(r"[^\w\-. ]", "", name).strip().replace(" ", "_")


def log_table1(cfg: PipelineConfig, ev: EvaluationRun) -> ProtocolSection | None:
    """Table 1 into the active MLflow run: the protocol card as ``protocol.*`` params, each row's mean and
    interval as ``table1/<method>/<metric>[_low|_high]``, the tables as JSON beside the report."""
    if not ev.table1:
        return None
    mlflow.log_params({f"protocol.{k}": v for k, v in ev.card.items()})
    mlflow.set_tag("protocol.standin_weights", ", ".join(ev.standin) or "none")
    metrics = {
        f"table1/{metric_key(row['method'])}/{k}": float(v)
        for row in ev.table1
        if row.get("status") != "paper"
        for k, v in row.items()
        if isinstance(v, float) and np.isfinite(v)
    }
    mlflow.log_metrics(metrics)
    mlflow.log_table(data=mlflow_table(ev.table1), artifact_file="evaluation/table1_table.json")
    e = cfg.eval
    ours = ev.methods_per_clip.get(OURS, [])
    section = ProtocolSection(
        table1=display_rows(ev.table1),
        card=ev.card,
        standin=ev.standin,
        emotion_level=emotion_level_table(
            ev.methods_per_clip, resamples=e.bootstrap_resamples, seed=cfg.seed
        ),
        confusion=confusion_rows(ours),
    )
    payload = {"table1": ev.table1, "protocol_card": ev.card, "standin_weights": ev.standin}
    payload |= {"emotion_level": section.emotion_level, "confusion": section.confusion}
    (ev.out_dir / "table1.json").write_text(json.dumps(payload, indent=1))
    (ev.out_dir / "methods_per_clip.json").write_text(json.dumps(ev.methods_per_clip, indent=1))
    return section
