"""EmoAcc's classifier choice (ESR-9 by default, the Hugging Face one as the alternative) and the
protocol card."""

from __future__ import annotations

import numpy as np
import pytest

from emotalker.configs.schema import PipelineConfig
from emotalker.tasks.demo.standins.fake_eval_assets import write_fake_esr9, write_fake_expression_classifier
from emotalker.tasks.evaluation.emotion_classifier import VideoEmotionClassifier
from emotalker.tasks.evaluation.esr9 import ESR9EmotionClassifier
from emotalker.tasks.evaluation.protocol import (
    cards_match,
    classifier_skip_note,
    clip_list_hash,
    load_eval_classifier,
    protocol_card,
)


def _cfg(**eval_keys) -> PipelineConfig:
    return PipelineConfig.model_validate({"eval": eval_keys})


def test_esr9_is_the_default_classifier(tmp_path):
    cfg = _cfg(esr9_dir=str(write_fake_esr9(tmp_path / "esr9")))
    assert cfg.eval.emotion_classifier == "esr9"
    clf = load_eval_classifier(cfg, "cpu")
    assert isinstance(clf, ESR9EmotionClassifier) and clf.missing == []  # contempt included
    labels = clf.frame_labels(np.random.default_rng(0).integers(0, 255, (3, 64, 64, 3), dtype=np.uint8))
    assert len(labels) == 3
    assert classifier_skip_note(cfg) is None
    assert "esr9_dir" in classifier_skip_note(_cfg())


def test_huggingface_classifier_stays_an_option(tmp_path):
    fer = write_fake_expression_classifier(tmp_path / "fer")
    cfg = _cfg(emotion_classifier="huggingface", emotion_classifier_checkpoint=str(fer), esr9_dir=None)
    assert isinstance(load_eval_classifier(cfg, "cpu"), VideoEmotionClassifier)
    assert "emotion_classifier_checkpoint" in classifier_skip_note(_cfg(emotion_classifier="huggingface"))


def test_esr9_folder_missing_a_branch_fails_naming_it(tmp_path):
    folder = write_fake_esr9(tmp_path / "esr9")
    (folder / "Net-Branch_9.pt").unlink()
    with pytest.raises(FileNotFoundError, match="Net-Branch_9"):
        load_eval_classifier(_cfg(esr9_dir=str(folder)), "cpu")


def test_protocol_card_changes_with_weights_and_clips(tmp_path):
    folder = write_fake_esr9(tmp_path / "esr9", seed=0)
    cfg = _cfg(esr9_dir=str(folder))
    card = protocol_card(cfg, ["b", "a"], 256)
    assert card["test_clips"] == "2" and card["test_list_sha256"] == clip_list_hash(["a", "b"])
    assert cards_match(card, protocol_card(cfg, ["a", "b"], 256))
    assert not cards_match(card, protocol_card(cfg, ["a", "c"], 256))
    lower = protocol_card(_cfg(esr9_dir=str(folder), detector_dtype="bfloat16"), ["a", "b"], 256)
    assert "bfloat16" in lower["landmark_detector"] and "float32" in card["landmark_detector"]
    assert not cards_match(card, lower)  # detectors in another precision: not comparable
    write_fake_esr9(folder, seed=1)  # other weights: another classifier hash, not comparable
    other = protocol_card(cfg, ["a", "b"], 256)
    assert other["emotion_classifier_sha256"] != card["emotion_classifier_sha256"]
    assert not cards_match(card, other)
