"""The built-in demo: synthetic MEAD-shaped archives + stand-in model assets, then ``reproduce``.

Real Deep3DFace / face-alignment / HuBERT weights cannot be fetched in this environment, so the demo
writes randomly initialised models in the real formats (``tasks/demo/assets.py``) where the config
points. With ``face.source: synthetic_ground_truth`` (demo default) the face family holds the motion the
renderer drew, so the training curves show real learning; ``--set face.source=extract`` runs the real
Deep3DFace extraction path with the stand-in weights instead.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import get_run_logger, task

from emotalker.configs.schema import PipelineConfig
from emotalker.flows.common import (
    CredentialFree,
    Overrides,
    pipeline_flow,
    resolve_config,
)
from emotalker.flows.reproduce import reproduce
from emotalker.tasks.demo.assets import stand_in_assets, synthetic_mead
from emotalker.tasks.demo.standins.quiet import quiet_transformers
from emotalker.tasks.evaluation.metrics import PAPER_TABLE1
from emotalker.tasks.evaluation.table1 import baselines_text, table1_text

TABLE1_METRICS = tuple(next(iter(PAPER_TABLE1.values())))  # SSIM, CPBD, F-LMD, M-LMD, Sync, EmoAcc


@task(name="synthetic-mead")
def make_synthetic_mead(cfg: PipelineConfig, mirror: Path) -> list[str]:
    """The synthetic MEAD archives (rewritten only when the synthetic settings change)."""
    return synthetic_mead(cfg, mirror)


@task(name="stand-in-assets")
def make_stand_in_assets(cfg: PipelineConfig) -> dict[str, str]:
    """Tiny HuBERTs, Deep3DFace/face-alignment and evaluation stand-ins in the real formats (skipped when
    present)."""
    with quiet_transformers():
        return stand_in_assets(cfg)


@pipeline_flow("demo-data")
def demo_data_flow(
    config: CredentialFree = "configs/demo.yaml", overrides: Overrides = None
) -> dict[str, Any]:
    """Write the synthetic MEAD mirror and the stand-in assets the demo config points at."""
    cfg = resolve_config(config, overrides)
    if cfg.download.urls_file is None:
        raise ValueError("the demo config must set download.urls_file to the synthetic mirror directory")
    mirror = Path(cfg.download.urls_file)
    tars = make_synthetic_mead(cfg, mirror)
    assets = make_stand_in_assets(cfg)
    get_run_logger().info("synthetic MEAD: %d actor archives in %s", len(tars), mirror)
    return {"archives": tars, "assets": assets}


def standin_table1(evaluation: dict[str, Any]) -> dict[str, str]:
    """Each Table 1 metric of the demo's evaluation, labelled as computed with stand-in weights."""
    out = {}
    for name in TABLE1_METRICS:
        if name in evaluation:
            out[name] = f"{evaluation[name]:.4f} (computed with stand-in weights)"
        else:
            out[name] = evaluation.get("skipped", {}).get(name, "skipped")
    return out


def stage_times_text(seconds: dict[str, float]) -> str:
    """One line: each stage's wall seconds and its share of the total."""
    total = sum(seconds.values())
    parts = [f"{k} {v:.0f} s ({v / total:.0%})" for k, v in seconds.items()] if total > 0 else []
    return f"Time by stage (total {total:.0f} s): " + ", ".join(parts)


def demo_summary(ev: dict[str, Any], with_bfm: bool, seconds: dict[str, float] | None = None) -> str:
    """What `make demo` prints at the end: our Table 1 numbers marked as stand-in results, ours beside the
    motion baselines, then Table 1 with every method's intervals and the protocol card, and the time each
    stage took."""
    standins = ["renderer", "face-alignment", "SyncNet", "ESR-9 classifier", *(["BFM"] if with_bfm else [])]
    table = standin_table1(ev)
    parts = [
        f"Table 1 on the synthetic test clips. The {', '.join(standins[:-1])} and {standins[-1]} are "
        "randomly initialised stand-ins in the released formats, so these numbers show that every metric "
        "runs end to end, not the paper's values:\n" + "\n".join(f"  {k:7s} {v}" for k, v in table.items()),
        "Generated motion against the ground truth (coefficients), ours beside the baselines:\n"
        + baselines_text(ev),
    ]
    if ev.get("table1"):
        parts.append(table1_text(ev["table1"], ev["protocol_card"], ev["standin_weights"]))
    if seconds:
        parts.append(stage_times_text(seconds))
    return "\n".join(parts)


@pipeline_flow("demo")
def demo_flow(config: CredentialFree = "configs/demo.yaml", overrides: Overrides = None) -> dict[str, Any]:
    """Everything, end to end, on the synthetic data: what `make demo` runs."""
    t0 = time.perf_counter()
    data = demo_data_flow(config, overrides)
    seconds = {"demo_data": round(time.perf_counter() - t0, 1)}
    result = reproduce(config, overrides)
    # BFM only when the config draws motion landmarks through one
    print(
        demo_summary(
            result["evaluate"], with_bfm="bfm" in data["assets"], seconds=seconds | result["seconds"]
        )
    )
    return {"demo_data": data, **result, "table1": standin_table1(result["evaluate"])}
