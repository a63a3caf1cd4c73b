import numpy as np
import pytest

from emotalker.tasks.data.standins.fake_eval_assets import FER7_LABELS as FER7
from emotalker.tasks.data.standins.fake_eval_assets import (
    write_fake_expression_classifier as _save_classifier,
)
from emotalker.tasks.evaluation.emotion_classifier import load_emotion_classifier, mead_label


def test_labels_map_to_mead_emotions_by_name():
    assert [mead_label(n) for n in FER7] == [
        "angry", "disgusted", "fear", "happy", "neutral", "sad", "surprised",
    ]  # fmt: skip
    assert mead_label("Contempt") == "contempt" and mead_label("bored") is None


def test_classifier_predicts_a_video_and_reports_emotions_it_cannot_see(tmp_path):
    clf = load_emotion_classifier(_save_classifier(tmp_path / "fer", FER7, "Surprise"))
    frames = np.random.default_rng(0).integers(0, 255, (12, 48, 48, 3), dtype=np.uint8)
    assert clf.predict(frames) == "surprised"
    assert clf.missing == ["contempt"]
    happy = load_emotion_classifier(_save_classifier(tmp_path / "fer2", FER7, "Happy"))
    assert happy.predict(frames) == "happy"


def test_bad_classifier_directories_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="image-classification model"):
        load_emotion_classifier(tmp_path / "nothing")
    odd = _save_classifier(tmp_path / "odd", ["cat", "dog"], "cat")
    with pytest.raises(ValueError, match="names a MEAD emotion"):
        load_emotion_classifier(odd)
