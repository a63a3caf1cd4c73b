"""The HTML evaluation report: self-contained, Table 1 beside the paper, breakdowns, figures, video frames."""

from __future__ import annotations

import re

import numpy as np
import pytest

from emotalker.tasks.evaluation.report import breakdown, frame_grid, write_report


def _clip(cid: str, emotion: str, level: int, lip: float, correct: bool, **extra: float) -> dict:
    return {
        "clip_id": cid,
        "emotion": emotion,
        "level": level,
        "lip_l2": lip,
        "face_l2": 2 * lip,
        "emotion_pred": 1,
        "emotion_label": 1 if correct else 2,
        **extra,
    }


CLIPS = [
    _clip("a", "angry", 1, 1.0, True),
    _clip("b", "angry", 3, 3.0, False, ssim=0.5),
    _clip("c", "happy", 3, 5.0, True),
]


def test_breakdowns_average_each_metric_per_group_and_show_only_metrics_some_clip_has() -> None:
    by_emotion = {r["emotion"]: r for r in breakdown(CLIPS, "emotion")}
    assert by_emotion["angry"]["clips"] == 2 and by_emotion["angry"]["LipL2"] == pytest.approx(2.0)
    assert by_emotion["angry"]["EmoAcc_motion"] == pytest.approx(0.5)
    assert by_emotion["angry"]["SSIM"] == pytest.approx(0.5) and "SSIM" not in by_emotion["happy"]
    by_level = {r["level"]: r for r in breakdown(CLIPS, "level")}
    assert by_level[3]["FaceL2"] == pytest.approx(8.0) and by_level[1]["EmoAcc_motion"] == 1.0
    assert all("Sync" not in r for r in by_level.values())


def _video(path, n: int = 10, color: int = 200) -> None:
    from emotalker.tasks.demo.synthetic.mead import write_mp4

    frames = np.zeros((n, 64, 48, 3), np.uint8)
    frames[:, 16:48, 8:40] = color
    write_mp4(frames, path, 25)


def test_frame_grid_takes_whatever_videos_exist_one_row_each(tmp_path) -> None:
    import cv2

    _video(tmp_path / "one.mp4")
    _video(tmp_path / "two.mp4")
    png = frame_grid([tmp_path / "one.mp4", tmp_path / "two.mp4", tmp_path / "missing.mp4"], height=64)
    img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape[0] == 2 * (64 + 22) and img.shape[1] == 4 * 48  # 2 rows (label + frames), 4 frames
    assert frame_grid([tmp_path / "missing.mp4"]) is None


def test_report_is_one_self_contained_file_with_every_section(tmp_path) -> None:
    from emotalker.tasks.training.plots import loss_curves

    curves = loss_curves({"train/loss": [(1, 2.0), (2, 1.0)]}, tmp_path / "loss.png")
    _video(tmp_path / "a.mp4")
    table = [
        {"method": "this run", "LipL2": 3.0, "SSIM": "skipped"},
        {"method": "EmoTalker", "LipL2": None, "SSIM": 0.7},
    ]
    out = write_report(
        tmp_path / "out" / "report.html",
        title="EmoTalker evaluation: demo",
        table=table,
        skipped={"SSIM": "skipped: needs rendered test videos"},
        per_clip=CLIPS,
        tsne=curves,
        loss_curves={"vqvae": curves, "lip": tmp_path / "absent.png"},
        videos=[tmp_path / "a.mp4"],
    )
    page = out.read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert not re.search(r'src="(?!data:)', page)  # nothing loaded from elsewhere
    assert page.count("data:image/png;base64,") == 3  # t-SNE, video grid, one loss curve
    table1 = page[page.index('<table id="table-settings">') :].split("</table>")[0]
    assert '<tr class="ours"><td>this run</td><td>3</td><td>skipped</td>' in table1
    assert "<td>EmoTalker</td><td></td><td>0.7</td>" in table1
    assert '<table id="per-emotion">' in page and '<table id="per-level">' in page
    assert "needs rendered test videos" in page
    without = write_report(
        tmp_path / "bare.html", title="t", table=table, skipped={}, per_clip=CLIPS, videos=[]
    ).read_text()
    assert "no rendered test videos" in without and "no t-SNE plot" in without and "no loss curves" in without


def test_report_shows_table1_with_intervals_the_protocol_card_and_standins(tmp_path) -> None:
    from emotalker.tasks.evaluation.report import ProtocolSection

    section = ProtocolSection(
        table1=[{"method": "EmoTalker (this run) †", "clips": "2/2", "SSIM": "0.700 [0.650, 0.750]"}],
        card={"test_list_sha256": "abc123", "syncnet_sha256": "def456"},
        standin=["renderer", "ESR-9"],
        emotion_level=[{"method": "m", "emotion": "happy", "level": 1, "clips": 2}],
        confusion=[{"real \\ rendered": "happy", "happy": 3}],
    )
    page = write_report(
        tmp_path / "r.html", title="t", table=[], skipped={}, per_clip=CLIPS, protocol=section
    ).read_text()
    table1 = page[page.index('<table id="table1">') :].split("</table>")[0]
    assert "<td>0.700 [0.650, 0.750]</td>" in table1 and "†" in table1
    assert "stand-in (random) weights: renderer, ESR-9" in page
    assert (
        "<td>abc123</td>" in page
        and '<table id="confusion">' in page
        and '<table id="emotion-level">' in page
    )
    assert page.index('<div class="scroll"><table id="table1">') < page.index('id="protocol-card"')
    assert "overflow-x: auto" in page  # wide tables scroll inside the page instead of widening it
    assert 'id="standin-settings"' in page and "weights (renderer, ESR-9)" in page  # under the settings table


def test_frames_of_a_stand_in_renderer_are_labelled_beside_them(tmp_path) -> None:
    from emotalker.tasks.demo.synthetic.mead import write_mp4
    from emotalker.tasks.evaluation.report import ProtocolSection

    video = tmp_path / "v.mp4"
    write_mp4(np.zeros((3, 32, 32, 3), np.uint8), video, fps=25)

    def page(standin: list[str]) -> str:
        section = ProtocolSection(table1=[], card={}, standin=standin, emotion_level=[], confusion=[])
        return write_report(
            tmp_path / "r.html",
            title="t",
            table=[],
            skipped={},
            per_clip=CLIPS,
            videos=[video],
            protocol=section,
        ).read_text()

    labelled = page(["renderer"])
    assert labelled.index('alt="frames from rendered test videos"') < labelled.index('id="standin-frames"')
    assert 'id="standin-frames"' not in page(["ESR-9"])  # a real renderer's frames carry no label
