"""Issue 26 point 7: Table 5's driving-frame setting drives each test clip with another sentence of the same
actor, emotion and level (the clip's own frames are an oracle, a named setting), and renders it for all six
metrics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from emotalker.configs.schema import EvalConfig, load_config
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.evaluation.run import RENDERED, driving_clips, evaluation_table, settings_skipped


def row(actor: str, emotion: str, level: int, sentence: str, view: str = "front") -> dict:
    cid = f"{actor}_{view}_{emotion}_level_{level}_{sentence}"
    return {
        "clip_id": cid,
        "actor": actor,
        "view": view,
        "emotion": emotion,
        "level": level,
        "sentence": sentence,
    }


def test_driving_frames_come_from_another_sentence_of_the_same_actor_emotion_and_level(
    tmp_path: Path,
) -> None:
    assert EvalConfig().settings == ["neutral"]
    cfg = load_config(None, [f"paths.root={tmp_path}"])
    rows = [
        row("M003", "happy", 1, "001"),
        row("M003", "happy", 1, "002"),
        row("M003", "happy", 1, "003"),
        row("M003", "happy", 2, "001"),
        row("M003", "happy", 1, "001", view="left_30"),
        row("M003", "sad", 1, "001"),
        row("W009", "happy", 1, "001"),
        row("W009", "happy", 1, "002"),  # no face features: never a driver
    ]
    face = StoreRoot.from_paths(cfg.paths).store("face")
    for r in rows[:-1]:
        face.write_clip(r["clip_id"], {"motion": np.zeros((4, 70), np.float32)}, attrs={"n_frames": 4})
    d = driving_clips(rows, Workspace.from_paths(cfg.paths))
    ids = [r["clip_id"] for r in rows]
    assert d[ids[0]] == ids[1] and d[ids[1]] == ids[2] and d[ids[2]] == ids[0]  # next sentence, cyclic
    assert d[ids[3]] == ids[0]  # the actor has no other level-2 happy sentence: another level's
    assert all(v != k for k, v in d.items())  # never the clip's own frames (that is driving_oracle)
    for k, v in d.items():
        a, b = next(r for r in rows if r["clip_id"] == k), next(r for r in rows if r["clip_id"] == v)
        assert (a["actor"], a["view"], a["emotion"]) == (b["actor"], b["view"], b["emotion"])
    assert ids[4] not in d and ids[5] not in d  # no other happy left_30 / sad clip of the actor
    assert ids[6] not in d and d[ids[7]] == ids[6]  # its only partner lacks face features


def test_driving_settings_are_rendered_and_scored_on_every_metric(tmp_path: Path) -> None:
    cfg = load_config(None, [f"paths.root={tmp_path}", "eval.settings=[neutral, driving, driving_oracle]"])
    with_renderer = settings_skipped(cfg, "renderer")
    for s in ("driving", "driving_oracle"):
        for (
            m
        ) in RENDERED:  # skipped exactly when the neutral setting's is (missing weights), never for rendering
            assert (f"{s}/{m}" in with_renderer) == (m in with_renderer), (s, m)
    rendered_dir = settings_skipped(cfg, "rendered_dir")
    assert all(f"driving/{m}" in rendered_dir for m in RENDERED)  # external videos are the neutral setting's
    table = evaluation_table(
        {"neutral": {"FaceL2": 1.0}, "driving": {"FaceL2": 2.0}, "driving_oracle": {}}, {}
    )
    assert [t["method"] for t in table[:3]] == [
        "this run (neutral reference)",
        "this run (driving frames)",
        "this run (driving frames: the clip's own, oracle)",
    ]
    with pytest.raises(ValueError, match="settings"):
        load_config(None, ["eval.settings=[own_frames]"])
