import numpy as np
import pytest

from emotalker.tasks.demo.standins.fake_eval_assets import FER7_LABELS as FER7
from emotalker.tasks.demo.standins.fake_eval_assets import (
    write_fake_expression_classifier as _save_classifier,
)
from emotalker.tasks.evaluation.emotion_classifier import (
    emotion_accuracy,
    load_emotion_classifier,
    mead_label,
)


def test_labels_map_to_mead_emotions_by_name():
    assert [mead_label(n) for n in FER7] == [
        "angry", "disgusted", "fear", "happy", "neutral", "sad", "surprised",
    ]  # fmt: skip
    assert mead_label("Contempt") == "contempt" and mead_label("bored") is None


def test_classifier_labels_frames_and_reports_emotions_it_cannot_see(tmp_path):
    clf = load_emotion_classifier(_save_classifier(tmp_path / "fer", FER7, "Surprise"))
    frames = np.random.default_rng(0).integers(0, 255, (12, 48, 48, 3), dtype=np.uint8)
    assert clf.frame_labels(frames) == ["surprised"] * 12
    assert clf.missing == ["contempt"]
    happy = load_emotion_classifier(_save_classifier(tmp_path / "fer2", FER7, "Happy"))
    assert happy.frame_labels(frames[:3]) == ["happy"] * 3


def test_labels_naming_one_emotion_pool_their_probability(tmp_path):
    """Two labels mapping to "sad" (0.3 + 0.3) beat one "happy" at 0.4."""
    import torch

    clf = load_emotion_classifier(_save_classifier(tmp_path / "fer", ["Happy", "Sad", "Sadness"]))
    with torch.no_grad():
        clf.model.classifier.weight.zero_()
        clf.model.classifier.bias.copy_(torch.log(torch.tensor([0.4, 0.3, 0.3])))
    frames = np.zeros((2, 32, 32, 3), np.uint8)
    assert clf.frame_labels(frames) == ["sad", "sad"]


def test_emotion_accuracy_compares_sampled_labels():
    assert emotion_accuracy(["happy", "sad", "sad"], ["happy", "sad", "angry"]) == pytest.approx(2 / 3)
    assert emotion_accuracy(["happy"] * 4, ["happy"] * 3) == 1.0  # the shorter video ends the comparison
    assert np.isnan(emotion_accuracy([], ["happy"]))


def test_bad_classifier_directories_fail_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="image-classification model"):
        load_emotion_classifier(tmp_path / "nothing")
    odd = _save_classifier(tmp_path / "odd", ["cat", "dog"], "cat")
    with pytest.raises(ValueError, match="names a MEAD emotion"):
        load_emotion_classifier(odd)
