"""Score another method's videos with Table 1's protocol, training nothing: a folder of ``<clip_id>.mp4``
(MakeItTalk, Wav2Lip, Audio2Head, EAT renders, ...) on the test list, compared with the real clips exactly
as the evaluate flow compares ours, one row with 95% intervals beside the paper's and the protocol card.

A folder lacking test clips gives a row marked incomplete with its coverage (no means).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.workspace import Workspace
from emotalker.tasks.evaluation.methods import score_methods, scoring_for, videos_method
from emotalker.tasks.evaluation.protocol import protocol_card, standin_weights
from emotalker.tasks.evaluation.rendered import EVAL_SIZE, ClipRenderer, video_source
from emotalker.tasks.evaluation.run import _test_split, image_metric_models, metric_key, reference_clips
from emotalker.tasks.evaluation.table1 import (
    confusion_rows,
    display_rows,
    emotion_level_table,
    mlflow_table,
    table1,
)
from emotalker.tasks.tracking import config_params, note_run, setup_mlflow


@dataclass(kw_only=True)
class ScoreRun:
    """One folder's Table 1 row (then the paper's), its per-clip rows and the protocol card."""

    name: str
    table1: list[dict[str, Any]]
    per_clip: list[dict[str, Any]]
    card: dict[str, str]
    standin: list[str]
    out_dir: Path


def run_score(cfg: PipelineConfig, videos: str | Path, name: str, *, ws: Workspace) -> ScoreRun:
    """Score ``videos``/<clip_id>.mp4 on the test list (``eval.max_clips``) with Table 1's metrics; the
    crop is the renderer's source crop of the actor's reference when the renderer's files exist (as for
    ours), else the whole frame."""
    if not name.strip():
        raise ValueError("--name must name the method (e.g. Wav2Lip)")
    method = videos_method(name, videos)
    rows, test_ids, test_rows = _test_split(cfg, ws)
    device = cfg.torch_device()
    models = image_metric_models(cfg, device, ws)
    renderer = ClipRenderer(cfg, device) if video_source(cfg) == "renderer" else None
    ref_rows = {a: rows[c] for a, c in reference_clips(test_rows, ws).items()} if renderer else {}
    out_dir = cfg.paths.resolve("outputs") / "score" / metric_key(name)
    out_dir.mkdir(parents=True, exist_ok=True)
    s = scoring_for(cfg, models, renderer, ref_rows, {}, out_dir, ws=ws)  # videos need no reference motion
    per_clip = score_methods([method], s, [rows[c] for c in test_ids])[name]
    standin = [w for w in standin_weights(cfg) if w != "renderer"]  # the renderer made none of these videos
    t = table1({name: per_clip}, test_ids, resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed)
    card = protocol_card(cfg, test_ids, EVAL_SIZE)
    if standin:
        t[0]["method"] += " †"
    return ScoreRun(name=name, table1=t, per_clip=per_clip, card=card, standin=standin, out_dir=out_dir)


def log_score_run(cfg: PipelineConfig, sr: ScoreRun) -> str:
    """The folder's score as an MLflow run: protocol card as params, the row's means and intervals as
    ``table1/<name>/<metric>`` metrics, the tables and per-clip rows as JSON. Returns the run id."""
    setup_mlflow(cfg)
    with mlflow.start_run(run_name=f"{cfg.name}-score-{metric_key(sr.name)}") as run:
        mlflow.set_tags({"stage": "score", "pipeline": cfg.name, "method": sr.name})
        note_run(f"{sr.name}'s videos scored with Table 1's protocol (no training); protocol card as params")
        mlflow.log_params(config_params(cfg) | {f"protocol.{k}": v for k, v in sr.card.items()})
        mlflow.set_tag("protocol.standin_weights", ", ".join(sr.standin) or "none")
        row = sr.table1[0]
        key = metric_key(sr.name)
        mlflow.log_metrics({f"table1/{key}/{k}": v for k, v in row.items() if isinstance(v, float)})
        mlflow.log_table(data=mlflow_table(sr.table1), artifact_file="score/table1_table.json")
        payload = {
            "table1": sr.table1,
            "protocol_card": sr.card,
            "standin_weights": sr.standin,
            "emotion_level": emotion_level_table(
                {sr.name: sr.per_clip}, resamples=cfg.eval.bootstrap_resamples, seed=cfg.seed
            ),
            "confusion": confusion_rows(sr.per_clip),
        }
        (sr.out_dir / "table1.json").write_text(json.dumps(payload, indent=1))
        (sr.out_dir / "per_clip.json").write_text(json.dumps(sr.per_clip, indent=1))
        mlflow.log_artifacts(str(sr.out_dir), "score")
    return run.info.run_id


def score_display(sr: ScoreRun) -> list[dict[str, Any]]:
    """The folder's Table 1 for a Prefect table artifact."""
    return display_rows(sr.table1)
