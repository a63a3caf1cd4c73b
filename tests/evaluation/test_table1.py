"""Table 1's rows: every method scored the same way on the same clips, incomplete rows marked with their
coverage, 95% bootstrap intervals, per emotion x level rows and EmoAcc's confusion matrix."""

from __future__ import annotations

import numpy as np
import pytest

from emotalker.configs.constants import EMOTIONS
from emotalker.tasks.demo.synthetic.mead import write_mp4
from emotalker.tasks.evaluation.methods import (
    METHODS,
    Method,
    Scoring,
    build_methods,
    copy_reference,
    real_video,
    score_methods,
    videos_method,
)
from emotalker.tasks.evaluation.rendered import ImageMetricModels
from emotalker.tasks.evaluation.table1 import (
    confusion_matrix,
    display_rows,
    emotion_level_table,
    method_row,
    table1,
    table1_text,
)
from emotalker_testkit.squares import BrightnessClassifier, SquareDetector, square_frames


def _clips(values: list[float], key: str = "ssim") -> list[dict]:
    return [{"clip_id": f"c{i}", key: v, "emotion": "happy", "level": 1} for i, v in enumerate(values)]


def test_row_has_mean_and_interval_of_every_metric():
    clips = _clips([0.5, 0.7, 0.9])
    row = method_row("m", clips, ["c0", "c1", "c2"], resamples=500, seed=0)
    assert row["status"] == "complete" and row["clips"] == "3/3"
    assert row["SSIM"] == pytest.approx(0.7)
    assert 0.5 <= row["SSIM_low"] < 0.7 < row["SSIM_high"] <= 0.9
    assert display_rows([row])[0]["SSIM"] == f"0.700 [{row['SSIM_low']:.3f}, {row['SSIM_high']:.3f}]"


def test_row_lacking_clips_is_incomplete_and_not_averaged():
    row = method_row("m", _clips([0.5, 0.7]), ["c0", "c1", "c2"], resamples=100, seed=0)
    assert row["status"] == "incomplete (2/3)" and "SSIM" not in row


def test_interval_narrows_with_more_clips_and_is_seeded():
    rng = np.random.default_rng(1)
    few, many = _clips(list(rng.normal(0.7, 0.1, 10))), _clips(list(rng.normal(0.7, 0.1, 400)))

    def width(clips):
        r = method_row("m", clips, [c["clip_id"] for c in clips], resamples=1000, seed=3)
        return r["SSIM_high"] - r["SSIM_low"]

    assert width(many) < width(few) / 3  # ~ 1 / sqrt(40)
    ids = [c["clip_id"] for c in few]
    assert method_row("m", few, ids, resamples=200, seed=5) == method_row(
        "m", few, ids, resamples=200, seed=5
    )


def test_table_puts_methods_then_the_paper_and_marks_standins():
    t = table1(
        {"ours": _clips([0.7]), "real video": _clips([1.0])}, ["c0"], resamples=100, seed=0, standin={"ours"}
    )
    assert [r["method"] for r in t[:2]] == ["ours †", "real video"]
    assert t[2]["method"] == "EmoTalker (paper)" and t[2]["status"] == "paper"
    text = table1_text(t, {"test_clips": "1"}, ["ESR-9"])
    assert "ours †" in text and "test_clips: 1" in text and "ESR-9" in text


def test_confusion_matrix_counts_sampled_frames_real_label_down():
    clips = [{"emo_frames_real": ["happy", "happy", "sad"], "emo_frames_pred": ["happy", "sad", "sad"]}]
    m = confusion_matrix(clips)
    h, s = EMOTIONS.index("happy"), EMOTIONS.index("sad")
    assert m[h, h] == 1 and m[h, s] == 1 and m[s, s] == 1 and m.sum() == 3


def test_emotion_level_rows_per_method_and_group():
    clips = _clips([0.5, 0.9]) + [{"clip_id": "c9", "ssim": 0.1, "emotion": "sad", "level": 3}]
    rows = emotion_level_table({"m": clips}, resamples=100, seed=0)
    assert [(r["emotion"], r["level"], r["clips"]) for r in rows] == [("happy", 1, 2), ("sad", 3, 1)]
    assert rows[1]["SSIM"] == "0.100 [0.100, 0.100]"


def test_builtin_methods_are_registered_and_unknown_fails():
    assert {"real_video", "copy_reference", "mean_motion"} <= set(METHODS)
    with pytest.raises(ValueError, match="eval.methods: unknown"):
        build_methods(None, ["sadtalker_nonexistent"], [], ws=None)
    ref = np.arange(70, dtype=np.float32)
    from emotalker.tasks.evaluation.methods import ClipInput

    still = copy_reference(None, None, []).clip(ClipInput(row={}, reference=ref, frames=4))
    assert still.shape == (4, 70) and (still == ref).all()


@pytest.fixture
def test_clips(tmp_path):
    """Three real test clips (a bright square moving right), as manifest rows."""
    rows = []
    for i in range(3):
        video = tmp_path / "real" / f"c{i}.mp4"
        video.parent.mkdir(exist_ok=True)
        write_mp4(square_frames(10, (64, 64), (30 + i, 32), 10), video, fps=25)
        rows.append(
            {
                "clip_id": f"c{i}",
                "actor": "A",
                "emotion": "happy",
                "level": 1,
                "prepared_video": str(video),
                "prepared_audio": str(tmp_path / "unused.wav"),
            }
        )
    return rows


def _scoring(tmp_path) -> Scoring:
    models = ImageMetricModels(SquareDetector(), classifier=BrightnessClassifier())
    return Scoring(
        models=models, renderer=None, ref_rows={}, refs={"A": np.zeros(70)}, video_dir=tmp_path / "v",
        frames=lambda cid: 10,
    )  # fmt: skip


def test_score_a_folder_complete_and_incomplete(tmp_path, test_clips):
    """A folder with every clip gets a complete row; one lacking a clip is marked incomplete with its
    coverage. Shifted squares: F-LMD (authors', raw coordinates) counts the shift, EAT's does not."""
    full, partial = tmp_path / "full", tmp_path / "partial"
    for d in (full, partial):
        d.mkdir()
    for r in test_clips:
        i = int(r["clip_id"][1])
        write_mp4(square_frames(10, (64, 64), (34 + i, 32), 10), full / f"{r['clip_id']}.mp4", fps=25)
    write_mp4(square_frames(10, (64, 64), (30, 32), 10), partial / "c0.mp4", fps=25)
    methods = [real_video(None, None, []), videos_method("full", full), videos_method("partial", partial)]
    by_method = score_methods(methods, _scoring(tmp_path), test_clips)
    ids = [r["clip_id"] for r in test_clips]
    t = {r["method"]: r for r in table1(by_method, ids, resamples=200, seed=0)}
    assert t["real video"]["SSIM"] == pytest.approx(1.0) and t["real video"]["F-LMD"] == 0.0
    assert t["real video"]["EmoAcc"] == 1.0
    assert t["full"]["status"] == "complete" and t["full"]["F-LMD"] == pytest.approx(8.0, abs=1.0)
    assert t["full"]["F-LMD_EAT"] < 0.5  # x moves 4 px in 64 = 16 in the 256 crop, y 0: mean |d| = 8
    assert t["partial"]["status"] == "incomplete (1/3)" and "SSIM" not in t["partial"]


def test_motion_method_without_renderer_has_no_clips(tmp_path, test_clips):
    still = Method("still", "motion", lambda c: np.zeros((c.frames, 70)))
    assert score_methods([still], _scoring(tmp_path), test_clips) == {"still": []}


def test_missing_folder_fails_naming_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        videos_method("x", tmp_path / "nope")


def test_mlflow_table_is_column_wise_strings_with_blanks_for_incomplete_rows():
    from emotalker.tasks.evaluation.table1 import mlflow_table

    t = table1({"half": _clips([0.5]), "all": _clips([0.5, 0.5])}, ["c0", "c1"], resamples=10, seed=0)
    cols = mlflow_table(t)
    assert cols["method"][:2] == ["half", "all"] and cols["SSIM"][:2] == ["", "0.500 [0.500, 0.500]"]
    assert all(len(v) == len(t) for v in cols.values())
