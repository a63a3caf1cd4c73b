"""Score another method's folder of test videos with Table 1's protocol (no training, no generation)."""

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
from emotalker.tasks.evaluation.score import log_score_run, run_score, score_display


@pipeline_flow("score")
def score_flow(
    videos: str,
    name: str,
    config: CredentialFree = "configs/paper.yaml",
    overrides: Overrides = None,
) -> dict[str, Any]:
    """Score ``videos``/<clip_id>.mp4 (e.g. Wav2Lip's renders of the test list) as Table 1 scores ours.

    Args:
        videos: folder of the method's videos, one ``<clip_id>.mp4`` per test clip.
        name: the method's name, the row's label in Table 1 and MLflow.
    """
    cfg = resolve_config(config, overrides)
    sr = run_score(cfg, videos, name, ws=Workspace.from_paths(cfg.paths))
    note = f" († stand-in weights: {', '.join(sr.standin)})" if sr.standin else ""
    table_artifact(
        "table1-score", score_display(sr), f"{name} on Table 1's protocol, mean [95% interval]{note}"
    )
    card = "\n".join(f"- **{k}**: `{v}`" for k, v in sr.card.items())
    markdown_artifact(
        "protocol-card", card, "the protocol behind the row: scores are comparable when cards match"
    )
    run_id = log_score_run(cfg, sr)
    return {"table1": sr.table1, "protocol_card": sr.card, "standin_weights": sr.standin, "run_id": run_id}
