"""The evaluation report: one self-contained HTML file (images inlined) a researcher opens in a browser.

It holds this run's Table 1 row beside the paper's, per-emotion and per-intensity breakdowns, the
t-SNE of the stage-1 codes, a grid of frames from whatever rendered test videos exist, and the training
loss curves. The evaluation run (``run.py``) gathers the inputs and calls :func:`write_report`.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

# per-clip key -> column name, in the order the breakdowns show them (only keys some clip has are shown)
CLIP_METRICS = {
    "lip_l2": "LipL2",
    "face_l2": "FaceL2",
    "emotion_correct": "EmoAcc_motion",
    "m_lmd": "M-LMD",
    "f_lmd": "F-LMD",
    "m_lmd_eat": "M-LMD_EAT",
    "f_lmd_eat": "F-LMD_EAT",
    "ssim": "SSIM",
    "cpbd": "CPBD",
    "sync": "Sync",
    "emo_acc": "EmoAcc",
    "f_lmd_motion": "F-LMD_motion",
    "m_lmd_motion": "M-LMD_motion",
}


def breakdown(per_clip: list[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Mean of every per-clip metric grouped by ``key`` (``emotion`` or ``level``), one row per group."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for clip in per_clip:
        groups.setdefault(clip.get(key), []).append(clip)
    rows = []
    for group in sorted(groups, key=str):
        clips = groups[group]
        row: dict[str, Any] = {key: group, "clips": len(clips)}
        for k, name in CLIP_METRICS.items():
            values = [_clip_value(c, k) for c in clips]
            values = [v for v in values if v is not None and math.isfinite(v)]
            if values:
                row[name] = float(np.mean(values))
        rows.append(row)
    return rows


def _clip_value(clip: dict[str, Any], key: str) -> float | None:
    if key == "emotion_correct":
        if "emotion_pred" not in clip or "emotion_label" not in clip:
            return None
        return float(clip["emotion_pred"] == clip["emotion_label"])
    value = clip.get(key)
    return float(value) if isinstance(value, int | float) else None


def frame_grid(
    videos: Iterable[Path], frames_per_video: int = 4, max_videos: int = 6, height: int = 128
) -> bytes | None:
    """PNG of ``frames_per_video`` evenly spaced frames from each of up to ``max_videos`` videos, one row
    per video labelled with its file name; None when no video can be read."""
    import cv2

    rows = []
    for video in list(videos)[:max_videos]:
        cap = cv2.VideoCapture(str(video))
        n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        frames = []
        for idx in np.linspace(0, max(n - 1, 0), frames_per_video).astype(int) if n > 0 else []:
            cap.set(cv2.CAP_PROP_POS_FRAMES, int(idx))
            ok, frame = cap.read()
            if ok:
                scale = height / frame.shape[0]
                frames.append(cv2.resize(frame, (max(1, round(frame.shape[1] * scale)), height)))
        cap.release()
        if not frames:
            continue
        row = np.concatenate(frames, axis=1)
        label = np.full((22, row.shape[1], 3), 255, np.uint8)
        cv2.putText(
            label, Path(video).stem, (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA
        )
        rows.append(np.concatenate([label, row], axis=0))
    if not rows:
        return None
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 0), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    ok, png = cv2.imencode(".png", np.concatenate(padded, axis=0))
    return png.tobytes() if ok else None


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.4g}"
    return "" if value is None else html.escape(str(value))


def _table(rows: list[dict[str, Any]], table_id: str, highlight: str | None = None) -> str:
    if not rows:
        return "<p>none</p>"
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cls = ' class="ours"' if highlight is not None and row.get("method") == highlight else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_fmt(row.get(c))}</td>" for c in columns) + "</tr>")
    return f'<table id="{table_id}"><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'


@dataclass(kw_only=True)
class ProtocolSection:
    """Table 1 as the paper measures it: display rows (``mean [low, high]``), the protocol card, the
    stand-in weights behind the numbers, per emotion x level rows and EmoAcc's confusion rows."""

    table1: list[dict[str, Any]]
    card: dict[str, str]
    standin: list[str]
    emotion_level: list[dict[str, Any]]
    confusion: list[dict[str, Any]]


def protocol_html(p: ProtocolSection) -> list[str]:
    """Table 1 with intervals, its stand-in mark, the protocol card and the breakdowns."""
    parts = [
        "<h2>Table 1: every method measured the same way (mean [95% bootstrap interval over clips])</h2>",
        f'<div class="scroll">{_table(p.table1, "table1", highlight="EmoTalker (this run)")}</div>',
    ]
    if p.standin:
        parts.append(
            '<p class="note">† computed with stand-in (random) weights: '
            f"{html.escape(', '.join(p.standin))}; not comparable with the paper.</p>"
        )
    card = [{"protocol": k, "value": v} for k, v in p.card.items()]
    parts += [
        "<h2>Protocol card</h2>",
        '<p class="note">Two scores are comparable only when their cards match.</p>',
        f'<div class="scroll">{_table(card, "protocol-card")}</div>',
        "<h2>Per method x emotion x intensity</h2>",
        f'<div class="scroll">{_table(p.emotion_level, "emotion-level")}</div>',
        "<h2>EmoAcc confusion matrix (this run; sampled frames, real-video label down)</h2>",
        f'<div class="scroll">{_table(p.confusion, "confusion")}</div>',
    ]
    return parts


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
.scroll { max-width: 100%; overflow-x: auto; } .scroll table { font-size: 0.8em; }
th, td { white-space: nowrap; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9em; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th { background: #f0f0f0; } td:first-child, th:first-child { text-align: left; }
tr.ours { background: #e8f4ff; font-weight: 600; }
img { max-width: 100%; border: 1px solid #eee; margin: 4px; }
.figs { display: flex; flex-wrap: wrap; gap: 8px; } .note { color: #666; font-size: 0.9em; }
"""


def write_report(
    path: Path,
    *,
    title: str,
    table: list[dict[str, Any]],
    skipped: dict[str, str],
    per_clip: list[dict[str, Any]],
    tsne: Path | None = None,
    loss_curves: dict[str, Path] | None = None,
    videos: Iterable[Path] = (),
    protocol: ProtocolSection | None = None,
) -> Path:
    """Write the HTML report to ``path``; every image is inlined, so the file can be moved or mailed."""
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        f'<p class="note">{len(per_clip)} test clips, written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC</p>',
    ]
    if protocol is not None:
        parts += protocol_html(protocol)
    parts += [
        "<h2>This run's settings beside the paper (Tables 1 and 5, means)</h2>",
        f'<div class="scroll">{_table(table, "table-settings", highlight="this run")}</div>',
    ]
    standin = protocol.standin if protocol is not None else []
    if standin:
        parts.append(
            f'<p class="note" id="standin-settings">† the image metrics above went through stand-in (random) '
            f"weights ({html.escape(', '.join(standin))}): they show that every metric runs, not the paper's "
            "values. LipL2, FaceL2 and the baselines' rows need no stand-in network.</p>"
        )
    if skipped:
        items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in skipped.items())
        parts.append(f'<p class="note">Metrics this run could not compute:</p><ul class="note">{items}</ul>')
    parts += [
        "<h2>Per emotion</h2>",
        f'<div class="scroll">{_table(breakdown(per_clip, "emotion"), "per-emotion")}</div>',
    ]
    parts += [
        "<h2>Per intensity level</h2>",
        f'<div class="scroll">{_table(breakdown(per_clip, "level"), "per-level")}</div>',
    ]
    parts.append("<h2>t-SNE of the stage-1 codes by dominant emotion (Fig. 4a)</h2>")
    parts.append(
        _img(tsne.read_bytes(), "t-SNE of codes") if tsne and tsne.is_file() else "<p>no t-SNE plot</p>"
    )
    parts.append("<h2>Rendered test videos</h2>")
    grid = frame_grid(videos)
    parts.append(
        _img(grid, "frames from rendered test videos")
        if grid is not None
        else '<p class="note">no rendered test videos (eval.rendered_dir)</p>'
    )
    if grid is not None and "renderer" in standin:
        parts.append(
            '<p class="note" id="standin-frames">† rendered by a stand-in renderer (random weights in '
            "SadTalker's layout): the frames show the rendering path, not how the model's motion looks.</p>"
        )
    parts.append("<h2>Training loss curves</h2>")
    curves = [
        f"<figure>{_img(p.read_bytes(), stage)}<figcaption>{html.escape(stage)}</figcaption></figure>"
        for stage, p in (loss_curves or {}).items()
        if p.is_file()
    ]
    parts.append(f'<div class="figs">{"".join(curves)}</div>' if curves else "<p>no loss curves</p>")
    page = (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(page, encoding="utf-8")
    return path
