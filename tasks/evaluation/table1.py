"""Table 1 as the paper measures it, one row per method with a 95% bootstrap interval over clips, then
the paper's rows; per emotion x intensity tables and EmoAcc's confusion matrix.

A row is averaged only over the full test list: a method lacking clips is marked incomplete with its
coverage and gets no means (an average over a different clip set would not be comparable).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emotalker.configs.constants import EMOTIONS
from emotalker.tasks.evaluation.bootstrap import bootstrap_interval
from emotalker.tasks.evaluation.metrics import PAPER_TABLE1
from emotalker.tasks.evaluation.motion import BASELINE_LABELS, BASELINES

CONFIDENCE = 0.95
# per-clip key -> Table 1 column; F-LMD / M-LMD are the authors' definition, EAT's variant beside
TABLE1_METRICS: dict[str, str] = {
    "ssim": "SSIM",
    "cpbd": "CPBD",
    "f_lmd": "F-LMD",
    "m_lmd": "M-LMD",
    "sync": "Sync",
    "emo_acc": "EmoAcc",
    "f_lmd_eat": "F-LMD_EAT",
    "m_lmd_eat": "M-LMD_EAT",
}


def metric_intervals(
    clips: list[dict[str, Any]], resamples: int, seed: int
) -> dict[str, dict[str, float | int]]:
    """Per Table 1 metric some clip has: the bootstrap mean, low, high and clip counts."""
    out = {}
    for key, name in TABLE1_METRICS.items():
        if any(key in c for c in clips):
            values = [c.get(key) for c in clips]
            out[name] = bootstrap_interval(values, CONFIDENCE, resamples, seed).as_dict()
    return out


def method_row(
    name: str,
    clips: list[dict[str, Any]],
    test_ids: list[str],
    *,
    resamples: int,
    seed: int,
    standin: bool = False,
) -> dict[str, Any]:
    """One method's Table 1 row over ``test_ids``: ``<metric>``, ``<metric>_low``, ``<metric>_high``
    when it covers every clip; else ``status`` says incomplete with its coverage and no means."""
    by_id = {c["clip_id"]: c for c in clips}
    have = [by_id[c] for c in test_ids if c in by_id]
    row: dict[str, Any] = {
        "method": name + (" †" if standin else ""),
        "clips": f"{len(have)}/{len(test_ids)}",
        "status": "complete" if len(have) == len(test_ids) else f"incomplete ({len(have)}/{len(test_ids)})",
    }
    if len(have) < len(test_ids):
        return row
    for metric, iv in metric_intervals(have, resamples, seed).items():
        row |= {metric: iv["mean"], f"{metric}_low": iv["low"], f"{metric}_high": iv["high"]}
    return row


def table1(
    rows_by_method: dict[str, list[dict[str, Any]]],
    test_ids: list[str],
    *,
    resamples: int,
    seed: int,
    standin: set[str] = frozenset(),  # type: ignore[assignment]
) -> list[dict[str, Any]]:
    """Every method's row (in the given order), then the paper's Table 1 rows."""
    table = [
        method_row(m, clips, test_ids, resamples=resamples, seed=seed, standin=m in standin)
        for m, clips in rows_by_method.items()
    ]
    return table + [{"method": name, "status": "paper", **vals} for name, vals in PAPER_TABLE1.items()]


def display_rows(table: list[dict[str, Any]], digits: int = 3) -> list[dict[str, Any]]:
    """The table for the page: each metric one short cell ``mean [low, high]``."""
    out = []
    for row in table:
        shown = {k: v for k, v in row.items() if not k.endswith(("_low", "_high"))}
        for metric in TABLE1_METRICS.values():
            if isinstance(row.get(metric), float):
                cell = f"{row[metric]:.{digits}f}"
                if f"{metric}_low" in row:
                    cell += f" [{row[f'{metric}_low']:.{digits}f}, {row[f'{metric}_high']:.{digits}f}]"
                shown[metric] = cell
        out.append(shown)
    return out


def emotion_level_table(
    rows_by_method: dict[str, list[dict[str, Any]]], *, resamples: int, seed: int, digits: int = 3
) -> list[dict[str, Any]]:
    """Per method x emotion x intensity level: clip count and each metric's ``mean [low, high]``."""
    out = []
    for method, clips in rows_by_method.items():
        groups: dict[tuple[str, Any], list[dict[str, Any]]] = {}
        for c in clips:
            groups.setdefault((c["emotion"], c["level"]), []).append(c)
        for (emotion, level), group in sorted(groups.items(), key=lambda kv: (kv[0][0], str(kv[0][1]))):
            row: dict[str, Any] = {"method": method, "emotion": emotion, "level": level, "clips": len(group)}
            for metric, iv in metric_intervals(group, resamples, seed).items():
                if iv["n"]:
                    row[metric] = f"{iv['mean']:.{digits}f} [{iv['low']:.{digits}f}, {iv['high']:.{digits}f}]"
            out.append(row)
    return out


def confusion_matrix(clips: list[dict[str, Any]]) -> np.ndarray:
    """(8, 8) counts of the classifier's sampled-frame labels: row = its label on the real video (EmoAcc's
    ground truth), column = its label on the rendered one, in ``EMOTIONS`` order."""
    m = np.zeros((len(EMOTIONS), len(EMOTIONS)), dtype=np.int64)
    for c in clips:
        for real, pred in zip(c.get("emo_frames_real", []), c.get("emo_frames_pred", []), strict=False):
            m[EMOTIONS.index(real), EMOTIONS.index(pred)] += 1
    return m


def confusion_rows(clips: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The confusion matrix as table rows (real-video label down, rendered label across)."""
    m = confusion_matrix(clips)
    return [
        {"real \\ rendered": e, **dict(zip(EMOTIONS, map(int, m[i]), strict=True))}
        for i, e in enumerate(EMOTIONS)
    ]


def table1_text(table: list[dict[str, Any]], card: dict[str, str], standin: list[str]) -> str:
    """Table 1 (``mean [low, high]`` per metric) and its protocol card as plain text for a terminal."""
    rows = display_rows(table)
    columns = ["method", "clips", *[m for m in TABLE1_METRICS.values() if any(m in r for r in rows)]]
    cells = [[str(r.get(c, r.get("status", "") if c == "clips" else "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    incomplete = [
        f"{r['method']}: {r['status']}" for r in table if str(r.get("status", "")).startswith("incomplete")
    ]
    if incomplete:
        lines.append("incomplete rows (no means: not the same clips): " + "; ".join(incomplete))
    if standin:
        lines.append(f"† computed with stand-in (random) weights: {', '.join(standin)}")
    lines.append("protocol card (scores are comparable only when cards match):")
    lines += [f"  {k}: {v}" for k, v in card.items()]
    return "\n".join(lines)


def baselines_text(summary: dict[str, Any]) -> str:
    """Our coefficient-space metrics beside the baselines' on the same clips (an evaluation summary), and
    by how much ours is lower than each floor's LipL2 / FaceL2 (the learning issue asks for >= 20%)."""
    metrics = ("LipL2", "FaceL2", "EmoAcc_stage1_head")
    rows = [("EmoTalker (this run)", {m: summary.get(m) for m in metrics})]
    rows += [(BASELINE_LABELS[b], {m: summary.get(f"{b}.{m}") for m in metrics}) for b in BASELINES]
    lines = [f"{'':40s}" + "".join(f"{m:>20s}" for m in metrics)]
    for name, vals in rows:
        cells = "".join(f"{'-' if v is None else f'{v:.4f}':>20s}" for v in vals.values())
        lines.append(f"{name:40s}{cells}")
    for b in ("copy_reference", "mean_motion"):
        gains = [
            f"{m} {1 - summary[m] / summary[f'{b}.{m}']:+.0%}"
            for m in ("LipL2", "FaceL2")
            if summary.get(f"{b}.{m}") and m in summary
        ]
        if gains:
            lines.append(f"ours lower than '{BASELINE_LABELS[b]}' by: {', '.join(gains)}")
    return "\n".join(lines)


def mlflow_table(table: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Table 1's display rows column-wise as strings (``mlflow.log_table``'s input; "" where a row has no
    value)."""
    rows = display_rows(table)
    columns: list[str] = []
    for r in rows:
        columns += [c for c in r if c not in columns]
    return {c: ["" if r.get(c) is None else str(r.get(c)) for r in rows] for c in columns}
