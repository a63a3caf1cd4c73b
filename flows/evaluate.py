"""Evaluation on the test split: coefficient-space metrics always; Table 1's image metrics on rendered
videos (SadTalker's renderer run here, or ``eval.rendered_dir``) when the assets allow."""

from __future__ import annotations

from typing import Any

from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    markdown_artifact,
    pipeline_flow,
    resolve_config,
    table_artifact,
)
from emotalker.storage.workspace import Workspace
from emotalker.tasks.evaluation.run import EvaluationRun, log_evaluation_run, run_evaluation
from emotalker.tasks.evaluation.table1 import display_rows


def show_table1(ev: EvaluationRun) -> None:
    """Table 1 (one row per method with its 95% interval, then the paper's) and its protocol card as
    Prefect artifacts."""
    if not ev.table1:
        return
    note = f" († stand-in weights: {', '.join(ev.standin)})" if ev.standin else ""
    table_artifact("table1", display_rows(ev.table1), f"Table 1, mean [95% bootstrap interval]{note}")
    card = "\n".join(f"- **{k}**: `{v}`" for k, v in ev.card.items())
    markdown_artifact(
        "protocol-card", card, "the protocol behind Table 1: scores are comparable when cards match"
    )


@pipeline_flow("evaluate")
def evaluate_flow(
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
    parent_run_id: str | None = None,
    model: str | dict[str, str] = "current",
    method: str = "emotalker",
) -> dict[str, Any]:
    """Generate every test clip from audio + neutral reference and compare with its ground truth; with
    ``eval.settings`` holding ``driving``, also from audio + the clip's own frames as emotional driving
    frames (Table 5), logged as ``driving/<metric>``.

    Args:
        model: the registered versions to evaluate: {stage: version} as a run's training flows returned
            them (``reproduce`` passes its own), ``current`` (the newest trained on these stores) or a
            registry alias such as ``best``.
        method: ``emotalker``; ``sadtalker`` (SadTalker's ExpNet + PoseVAE motion); ``sadtalker_lips``
            (the model's face branch + SadTalker's released ExpNet lips, frozen): Table 2's rows.
    """
    cfg = resolve_config(config, overrides)
    ws = Workspace.from_paths(cfg.paths)
    ev = run_evaluation(cfg, model, method, ws=ws)
    table_artifact(
        "evaluation-vs-table1",
        ev.table,
        "metrics of this run beside the paper's Table 1 (neutral reference) and Table 5 (driving frames)",
    )
    show_table1(ev)
    markdown_artifact(
        "evaluation-skipped",
        "\n".join(f"- **{k}**: {v}" for k, v in ev.skipped.items()) or "none",
        "metrics that could not be computed and what they need",
    )
    logged = log_evaluation_run(cfg, ev, parent_run_id, ws=ws)
    report = logged["report"]
    markdown_artifact(
        "evaluation-report",
        f"Evaluation report (open in a browser): [{report}]({report.resolve().as_uri()})\n\n"
        f"Logged to MLflow run `{logged['run_id']}` as `{logged['report_uri']}`",
        "the self-contained HTML evaluation report",
    )
    out = {**ev.summary, "run_id": logged["run_id"], "skipped": ev.skipped, "table": ev.table}
    out |= {"table1": ev.table1, "protocol_card": ev.card, "standin_weights": ev.standin}
    return out | {"report": str(report), "models": ev.versions}
