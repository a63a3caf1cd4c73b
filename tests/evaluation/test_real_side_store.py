"""The real side of the comparison (crop box, landmarks, classifier labels of a real test clip) is stored
once per clip and fingerprint: later evaluations, ablation rows and scored methods read it."""

from __future__ import annotations

import numpy as np
import pytest

from emotalker.configs.schema import PipelineConfig
from emotalker.storage.failures import load_failures
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.demo.standins.fake_eval_assets import write_fake_esr9
from emotalker.tasks.demo.synthetic.mead import write_mp4
from emotalker.tasks.evaluation.methods import Scoring, score_methods, videos_method
from emotalker.tasks.evaluation.reference import REAL_SIDE_STORE, RealSideStore, real_side_models
from emotalker.tasks.evaluation.rendered import ImageMetricModels, compare_videos
from emotalker_testkit.squares import BrightnessClassifier, SquareDetector, square_frames

FRAMES = 8


class CountingDetector(SquareDetector):
    """``detect`` is what the real side calls (crop box and landmarks); renders go through
    ``detect_boxes`` + ``landmarks_from_boxes``. Counts the frames ``detect`` sees."""

    def __init__(self) -> None:
        self.real_frames = 0

    def detect(self, frames, boxes=None):
        self.real_frames += len(frames)
        return super().detect(frames, boxes)


@pytest.fixture(autouse=True)
def cheap_cpbd(monkeypatch):
    """CPBD (rendered frames only, ~0.1 s a frame) stands in as the frame's mean: not what is tested."""
    monkeypatch.setattr("emotalker.tasks.evaluation.rendered.cpbd", lambda f: float(f.mean()))


@pytest.fixture
def clips(tmp_path):
    """Two real test clips (a square at two places) and, per clip, the renders of two "models" (the
    square moved by 3 and by 6 pixels, on a grey background), as manifest rows."""
    rows, renders = [], {"a": tmp_path / "model_a", "b": tmp_path / "model_b"}
    for d in renders.values():
        d.mkdir()
    for i, x in enumerate((150, 170)):
        real = tmp_path / "prepared" / f"c{i}.mp4"
        real.parent.mkdir(exist_ok=True)
        write_mp4(square_frames(FRAMES, (240, 320), (x, 120), 20), real, fps=25)
        for shift, d in zip((3, 6), renders.values(), strict=True):
            frames = square_frames(
                FRAMES, (240, 320), (x + shift, 120), 20, 100 + np.arange(FRAMES)
            )  # distinct frames
            write_mp4(frames, d / f"c{i}.mp4", fps=25)
        rows.append(
            {
                "clip_id": f"c{i}",
                "actor": "A",
                "emotion": "happy",
                "level": 1,
                "prepared_video": str(real),
                "prepared_audio": str(tmp_path / "unused.wav"),
            }
        )
    return rows, renders


def _models(store: RealSideStore | None) -> ImageMetricModels:
    """One evaluation's models: fresh stand-ins (nothing kept in memory from another evaluation)."""
    return ImageMetricModels(
        CountingDetector(), classifier=BrightnessClassifier(), authors_crop=True, reference=store
    )


def _evaluate(models: ImageMetricModels, rows, folder) -> list[dict]:
    """One evaluation's comparisons of ``folder``'s renders with the real clips."""
    return [
        compare_videos(folder / f"{r['clip_id']}.mp4", r["prepared_video"], r["prepared_audio"], models)
        for r in rows
    ]


def _scored(models: ImageMetricModels, rows, folder, tmp_path) -> list[dict]:
    """A Table 1 method's row (a folder of videos) scored as ``run_evaluation`` scores ``eval.methods``."""
    s = Scoring(
        models=models, renderer=None, ref_rows={}, refs={}, video_dir=tmp_path / "v", frames=lambda c: FRAMES
    )
    return score_methods([videos_method("method", folder)], s, rows)["method"]


def test_a_second_evaluation_and_a_scored_method_make_no_real_side_detector_calls(
    tmp_path, clips, monkeypatch
):
    from emotalker.tasks.evaluation.rendered import FrameMemo

    # every rendered frame classified, so the counts below are the real side's and the renders' exactly
    # (byte-identical crops of two clips' renders would otherwise share a label)
    monkeypatch.setattr(FrameMemo, "per_distinct", lambda self, kind, frames, compute: compute(frames))
    rows, renders = clips
    store = RealSideStore(StoreRoot(tmp_path / "features"), "models-1")
    first = _models(store)
    ours_a = _evaluate(first, rows, renders["a"])
    # per clip: the crop box on its first frame, then every frame; the classifier on frames 0 and 5 of both
    assert first.detector.real_frames == 2 * (1 + FRAMES)
    assert first.classifier.seen == 2 * (2 + 2)
    assert sorted(store.root.store(REAL_SIDE_STORE).clip_ids()) == ["c0", "c1"]

    second = _models(store)  # another evaluation (a new model, an ablation row): fresh models, same store
    ours_b = _evaluate(second, rows, renders["b"])
    method = _scored(second, rows, renders["a"], tmp_path)
    assert second.detector.real_frames == 0
    assert second.classifier.seen == 2 * 2 * 2  # the renders' sampled frames only, two rows

    # the same numbers as today's in-memory real side on the same inputs
    np.testing.assert_equal(ours_a, _evaluate(_models(None), rows, renders["a"]))
    np.testing.assert_equal(ours_b, _evaluate(_models(None), rows, renders["b"]))
    np.testing.assert_equal([{k: m[k] for k in ours_a[0]} for m in method], ours_a)
    assert ours_a != ours_b and ours_b[0]["f_lmd"] > ours_a[0]["f_lmd"] > 0  # the renders differ
    assert ours_a[0]["emo_frames_real"] == ["happy", "happy"]  # frames 0 and 5, read back from the store


def test_changing_the_classifier_file_recomputes_the_real_side(tmp_path, clips, monkeypatch):
    rows, renders = clips
    root = StoreRoot(tmp_path / "features")
    folder = write_fake_esr9(tmp_path / "esr9", seed=0)
    cfg = PipelineConfig.model_validate({"eval": {"esr9_dir": str(folder)}})

    def evaluation(**kw) -> CountingDetector:
        models = _models(RealSideStore(root, real_side_models(cfg)))
        compare_videos(renders["a"] / "c0.mp4", rows[0]["prepared_video"], "unused.wav", models, **kw)
        return models.detector

    assert evaluation().real_frames == 1 + FRAMES
    assert evaluation().real_frames == 0  # same files and settings: read back
    write_fake_esr9(folder, seed=1)  # other weights in the same files
    assert evaluation().real_frames == 1 + FRAMES
    assert evaluation(max_frames=7).real_frames == 1 + 7  # another protocol setting (render_max_frames)
    assert root.store(REAL_SIDE_STORE).clip_ids() == ["c0"]  # one version per clip, the latest
    flip = PipelineConfig.model_validate({"eval": {"esr9_dir": str(folder), "flip_input": True}})
    assert real_side_models(flip) != real_side_models(cfg)  # the detector's settings count too
    lower = PipelineConfig.model_validate({"eval": {"esr9_dir": str(folder), "detector_dtype": "bfloat16"}})
    assert real_side_models(lower) != real_side_models(cfg)  # and their precision
    auto = PipelineConfig.model_validate({"eval": {"esr9_dir": str(folder), "detector_dtype": "auto"}})
    monkeypatch.setattr("emotalker.tasks.features.face_coeffs.native_bf16_cpu", lambda: False)
    assert real_side_models(auto) == real_side_models(cfg)  # auto without native BF16 is float32
    monkeypatch.setattr("emotalker.tasks.features.face_coeffs.native_bf16_cpu", lambda: True)
    assert real_side_models(auto) == real_side_models(lower)


def test_every_evaluation_of_a_workspace_shares_its_store(tmp_path, monkeypatch):
    """``image_metric_models`` (what ``run_evaluation`` and ``emotalker score`` build) reads and writes
    the workspace's store, with the config's models fingerprint."""
    from emotalker.storage.workspace import Workspace
    from emotalker.tasks.evaluation.run import image_metric_models

    monkeypatch.setattr(
        "emotalker.tasks.features.face_coeffs.LandmarkDetector", lambda **kw: SquareDetector()
    )
    cfg = PipelineConfig.model_validate(
        {"eval": {"esr9_dir": None}, "paths": {"root": str(tmp_path / "run")}}
    )
    ws = Workspace.from_paths(cfg.paths)
    models = image_metric_models(cfg, "cpu", ws)
    assert models.reference == RealSideStore(ws.stores, real_side_models(cfg)) and models.authors_crop
    assert image_metric_models(cfg, "cpu").reference is None


def test_a_clip_that_cannot_be_read_is_recorded_and_not_retried(tmp_path, clips):
    rows, renders = clips
    root = StoreRoot(tmp_path / "features")
    broken = tmp_path / "prepared" / "c0.mp4"
    broken.write_bytes(b"not a video")
    models = _models(RealSideStore(root, "models-1"))
    with pytest.raises(ValueError, match="real side of c0"):
        compare_videos(renders["a"] / "c0.mp4", broken, "unused.wav", models)
    record = load_failures(root, REAL_SIDE_STORE)["c0"]
    assert "cannot decode" in record["error"] or "invalid" in record["error"].lower()
    again = _models(RealSideStore(root, "models-1"))
    with pytest.raises(ValueError, match="failed with these settings"):
        compare_videos(renders["a"] / "c0.mp4", broken, "unused.wav", again)
    assert again.detector.real_frames == 0  # not computed again with the same fingerprint


def test_the_real_video_row_reads_its_whole_side_from_the_store(tmp_path, clips):
    """Table 1's real-video row scores the real clip as a render: with the stored real side, its landmarks,
    face boxes and labels are read back (no detector or classifier call) and the numbers are those of
    computing them."""
    rows, _ = clips
    store = RealSideStore(StoreRoot(tmp_path / "features"), "models-1")
    _evaluate(_models(store), rows, tmp_path / "prepared")  # computes and stores the real sides
    models = _models(store)
    calls = {"boxes": 0}
    boxes = models.detector.detect_boxes

    def counting(frames):
        calls["boxes"] += len(frames)
        return boxes(frames)

    models.detector.detect_boxes = counting
    stored = _evaluate(models, rows, tmp_path / "prepared")
    assert calls["boxes"] == 0 and models.detector.real_frames == 0 and models.classifier.seen == 0
    computed = _evaluate(_models(None), rows, tmp_path / "prepared")
    np.testing.assert_equal(stored, computed)
    assert stored[0]["f_lmd"] == 0.0 and stored[0]["emo_acc"] == 1.0
