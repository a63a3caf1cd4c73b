"""Image metrics of a rendered video against the real clip: same crop, landmark LMD, per-5-frame EmoAcc."""

import numpy as np
import pytest

from emotalker.tasks.demo.synthetic.mead import write_mp4
from emotalker.tasks.evaluation.rendered import ImageMetricModels, compare_videos, crop_resize
from emotalker_testkit.squares import BrightnessClassifier, SquareDetector, square_frames

BOX = (60, 20, 260, 220)  # 200 x 200 in the real 320 x 240 frame -> 256 x 256: scale 1.28


@pytest.fixture
def real_clip(tmp_path):
    path = tmp_path / "real.mp4"
    write_mp4(square_frames(12, (240, 320), (160, 120), 20), path, fps=25)
    return path


def test_render_in_the_real_crop_has_no_landmark_error(tmp_path, real_clip):
    """A render that is the real clip's crop matches it; a real-sized render is cut with the same box."""
    models = ImageMetricModels(SquareDetector())
    crop = tmp_path / "crop.mp4"  # (160, 120) -> (128, 128) in the 256 crop, half-size 20 -> 25.6
    write_mp4(square_frames(12, (256, 256), (128, 128), 25.6), crop, fps=25)
    res = compare_videos(crop, real_clip, tmp_path / "unused.wav", models, box=BOX)
    assert res["f_lmd"] < 1.0 and res["m_lmd"] < 1.0 and res["ssim"] > 0.9
    assert res["lmd_frames"] == res["image_frames"] == 12
    same = compare_videos(real_clip, real_clip, tmp_path / "unused.wav", models, box=BOX)
    assert same["f_lmd"] == 0.0 and same["ssim"] > 0.99


def test_eat_lmd_measures_shape_in_crop_pixels_not_position(tmp_path, real_clip):
    models = ImageMetricModels(SquareDetector())
    bigger = tmp_path / "bigger.mp4"  # 6 crop pixels larger radius, and moved: centring removes the shift
    write_mp4(square_frames(12, (256, 256), (100, 140), 25.6 + 6), bigger, fps=25)
    res = compare_videos(bigger, real_clip, tmp_path / "unused.wav", models, box=BOX)
    assert res["f_lmd_eat"] == pytest.approx(6.0, abs=1.0)  # every point moves radially by the radius change
    assert res["m_lmd_eat"] == pytest.approx(6.0, abs=1.0)
    assert res["f_lmd"] > 10.0  # the authors' F-LMD (raw coordinates) also counts the (-28, +12) move
    short = compare_videos(bigger, real_clip, tmp_path / "unused.wav", models, box=BOX, max_frames=7)
    assert short["image_frames"] == 7


def test_authors_lmd_counts_a_translated_face_and_eat_does_not(tmp_path, real_clip):
    """F-LMD / M-LMD are the authors' (raw coordinates): a face moved by (-28, +12) crop pixels scores the
    mean absolute shift, (28 + 12) / 2 = 20; EAT's centred variant scores ~0."""
    models = ImageMetricModels(SquareDetector())
    moved = tmp_path / "moved.mp4"
    write_mp4(square_frames(12, (256, 256), (100, 140), 25.6), moved, fps=25)
    res = compare_videos(moved, real_clip, tmp_path / "unused.wav", models, box=BOX)
    assert res["f_lmd"] == pytest.approx(20.0, abs=1.0) and res["m_lmd"] == pytest.approx(20.0, abs=1.0)
    assert res["f_lmd_eat"] < 1.0 and res["m_lmd_eat"] < 1.0


def test_emoacc_ground_truth_is_the_real_video_per_5_frames(tmp_path):
    # real clip: bright in frames 0-4 and 10-14 ("happy"), dark in 5-9 and 15-19 ("sad")
    light = np.array([100 if (i // 5) % 2 == 0 else 0 for i in range(20)])
    real = tmp_path / "real.mp4"
    write_mp4(square_frames(20, (64, 64), (32, 32), 8, light), real, fps=25)
    always_happy = tmp_path / "happy.mp4"
    write_mp4(square_frames(20, (64, 64), (32, 32), 8, np.full(20, 100)), always_happy, fps=25)
    clf = BrightnessClassifier()
    models = ImageMetricModels(SquareDetector(), classifier=clf)
    assert compare_videos(real, real, tmp_path / "a.wav", models)["emo_acc"] == 1.0
    assert clf.seen == 2 * 4  # frames 0, 5, 10, 15 of each video
    res = compare_videos(always_happy, real, tmp_path / "a.wav", models)
    assert res["emo_acc"] == 0.5  # right on the two happy samples, wrong on the two sad ones
    assert res["emotion_image"] == "happy"


def test_crop_resize_pads_outside_the_frame():
    frame = np.full((1, 10, 10, 3), 200, np.uint8)
    out = crop_resize(frame, (-10, 0, 10, 20), size=20)
    assert out.shape == (1, 20, 20, 3)
    assert (out[0, :10, :10] == 0).all() and (out[0, :10, 10:] == 200).all() and (out[0, 10:] == 0).all()


def test_a_metric_that_cannot_be_computed_is_skipped_for_that_clip_only(tmp_path, real_clip):
    """Issue 30 case 7: a face track too short for SyncNet (5 < 7 frames) skips Sync for this clip, with
    the reason on its row; its other image metrics are kept and nothing is raised."""
    models = ImageMetricModels(SquareDetector(), syncnet=object())  # SyncNet never reached
    crop = tmp_path / "crop.mp4"
    write_mp4(square_frames(12, (256, 256), (128, 128), 25.6), crop, fps=25)
    res = compare_videos(crop, real_clip, tmp_path / "unused.wav", models, box=BOX, max_frames=5)
    assert res["image_frames"] == 5 and res["f_lmd"] < 1.0 and "sync" not in res
    assert res["skipped"].startswith("Sync: face track of 5 frames")


class TemplateFaceDetector(SquareDetector):
    """Finds the same face in every frame: eyes at (40, 40) and (60, 40), mouth corners (42, 70), (58, 70)."""

    def __init__(self, found: bool = True):
        lm = np.full((68, 2), 50.0)
        lm[36:42], lm[42:48] = (40.0, 40.0), (60.0, 40.0)
        lm[48], lm[54] = (42.0, 70.0), (58.0, 70.0)
        self.lm, self.found = lm.astype(np.float32), found

    def detect(self, frames, boxes=None):
        lms = np.repeat(self.lm[None], len(frames), axis=0)
        return (lms if self.found else lms * np.nan), np.full(len(frames), self.found)


def test_authors_crop_is_sadtalkers_croper_box_of_the_real_first_frame(tmp_path):
    from emotalker.tasks.evaluation.rendered import real_crop_box
    from emotalker.tasks.generation.render import sadtalker_crop_box

    real = tmp_path / "real.mp4"
    write_mp4(square_frames(8, (120, 160), (50, 55), 20), real, fps=25)
    box = real_crop_box(real, TemplateFaceDetector())
    assert box == sadtalker_crop_box(TemplateFaceDetector().lm, 160, 120)
    assert real_crop_box(real, TemplateFaceDetector(found=False)) is None


class CountingDetector(SquareDetector):
    """Counts the frames each entry point sees: ``detect`` runs on real frames only."""

    def __init__(self):
        self.real_frames = 0

    def detect(self, frames, boxes=None):
        self.real_frames += len(frames)
        return super().detect(frames, boxes)


def test_each_real_clip_side_is_computed_once_for_every_row(tmp_path, real_clip):
    """Table 1's rows are all compared with the same real clips: the second row reuses the real side
    (landmarks, classifier labels) and scores exactly what a fresh comparison scores."""
    renders = []
    for i, centre in enumerate([(128, 128), (100, 140)]):
        renders.append(tmp_path / f"row{i}.mp4")
        write_mp4(square_frames(12, (256, 256), centre, 25.6, np.arange(12)), renders[-1], fps=25)
    det, clf = CountingDetector(), BrightnessClassifier()
    models = ImageMetricModels(det, classifier=clf)
    first = compare_videos(renders[0], real_clip, tmp_path / "a.wav", models, box=BOX, max_frames=7)
    assert det.real_frames == 7 and clf.seen == 2 * 2  # frames 0 and 5 of both videos
    second = compare_videos(renders[1], real_clip, tmp_path / "a.wav", models, box=BOX, max_frames=7)
    assert det.real_frames == 7 and clf.seen == 2 * 2 + 2  # only the new render's frames
    other = ImageMetricModels(SquareDetector(), classifier=clf)
    fresh = compare_videos(renders[1], real_clip, tmp_path / "a.wav", other, box=BOX, max_frames=7)
    assert second == fresh and first != second
    longer = compare_videos(renders[1], real_clip, tmp_path / "a.wav", models, box=BOX)
    assert det.real_frames == 7 + 12 and longer["image_frames"] == 12  # more frames than stored: recomputed


class BoxCountingDetector(SquareDetector):
    """Counts the rendered frames the face detector sees (``detect`` is the real side's entry point)."""

    def __init__(self):
        self.render_frames = 0

    def detect_boxes(self, frames):
        self.render_frames += len(frames)
        return super().detect_boxes(frames)

    def detect(self, frames, boxes=None):
        return super().detect(frames, super().detect_boxes(frames) if boxes is None else boxes)


def test_identical_rendered_frames_are_scored_once_with_every_frames_numbers(
    tmp_path, real_clip, monkeypatch
):
    """A held render (copy-the-reference) decodes to runs of byte-identical frames: the detector and the
    classifier see each distinct frame once, and the numbers are those of scoring every frame."""
    from emotalker.tasks.evaluation.rendered import FrameMemo

    monkeypatch.setattr("emotalker.tasks.evaluation.rendered.cpbd", lambda f: float(f.mean()))
    held = tmp_path / "held.mp4"
    write_mp4(square_frames(12, (256, 256), (100, 140), 25.6), held, fps=25)

    def score() -> tuple[dict, int, int]:
        det, clf = BoxCountingDetector(), BrightnessClassifier()
        res = compare_videos(
            held, real_clip, tmp_path / "a.wav", ImageMetricModels(det, classifier=clf), box=BOX
        )
        return res, det.render_frames, clf.seen

    once, detected, classified = score()
    assert once["image_frames"] == 12 and detected < 12 and classified < 2 + 3  # frames 0, 5, 10: once each
    # the same held render of another clip (the same actor's floor row) costs no detector call at all

    det, clf = BoxCountingDetector(), BrightnessClassifier()
    models = ImageMetricModels(det, classifier=clf)
    first = compare_videos(held, real_clip, tmp_path / "a.wav", models, box=BOX)
    again = tmp_path / "held_again.mp4"
    again.write_bytes(held.read_bytes())
    seen = det.render_frames, clf.seen
    second = compare_videos(again, real_clip, tmp_path / "a.wav", models, box=BOX)
    assert (det.render_frames, clf.seen) == seen  # nor a classifier call (the real side is kept too)
    assert first == second == once
    monkeypatch.setattr(FrameMemo, "per_distinct", lambda self, kind, frames, compute: compute(frames))
    every, detected_all, classified_all = score()
    assert detected_all == 12 and classified_all == 3 + 3
    assert once == every


def test_every_row_of_a_process_shares_the_prepared_source_of_a_reference_frame(tmp_path, monkeypatch):
    """Table 1's rows and an ablation's rows animate the same reference frames: each is prepared (face
    detection, FAN, Deep3DFace) once per process and settings, not once per row."""
    from emotalker.configs.schema import PipelineConfig
    from emotalker.tasks.evaluation import rendered
    from emotalker.tasks.generation import render

    prepared: list[int] = []
    monkeypatch.setattr(render, "load_renderer", lambda cfg, device: object())
    monkeypatch.setattr(render, "prepare_source", lambda image, cfg, mode: prepared.append(1) or object())
    monkeypatch.setattr(rendered, "_SOURCES", type(rendered._SOURCES)())
    frames = {"a": np.zeros((8, 8, 3), np.uint8), "b": np.ones((8, 8, 3), np.uint8)}
    monkeypatch.setattr(rendered, "reference_image", lambda row: frames[row["actor"]])
    cfg = PipelineConfig()
    rows = [rendered.ClipRenderer(cfg, "cpu") for _ in range(3)]
    sources = [r.source(actor, {"actor": actor}) for r in rows for actor in ("a", "b", "a")]
    assert len(prepared) == 2 and sources[0] is sources[3] is sources[6] and sources[0] is not sources[1]
    other = PipelineConfig.model_validate({"render": {"image_size": 512}})
    rendered.ClipRenderer(other, "cpu").source("a", {"actor": "a"})  # other settings, prepared again
    assert len(prepared) == 3
