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
from emotalker.tasks.evaluation.run import log_evaluation_run, run_evaluation


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
    ev = run_evaluation(cfg, model, method)
    table_artifact(
        "evaluation-vs-table1",
        ev.table,
        "metrics of this run beside the paper's Table 1 (neutral reference) and Table 5 (driving frames)",
    )
    markdown_artifact(
        "evaluation-skipped",
        "\n".join(f"- **{k}**: {v}" for k, v in ev.skipped.items()) or "none",
        "metrics that could not be computed and what they need",
    )
    logged = log_evaluation_run(cfg, ev, parent_run_id)
    report = logged["report"]
    markdown_artifact(
        "evaluation-report",
        f"Evaluation report (open in a browser): [{report}]({report.resolve().as_uri()})\n\n"
        f"Logged to MLflow run `{logged['run_id']}` as `{logged['report_uri']}`",
        "the self-contained HTML evaluation report",
    )
    out = {**ev.summary, "run_id": logged["run_id"], "skipped": ev.skipped, "table": ev.table}
    return out | {"report": str(report), "models": ev.versions}
