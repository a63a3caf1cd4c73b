"""The demo's emotion HuBERT stand-in learns the synthetic speech's emotion cue (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emotalker.tasks.demo.standins.emotion_hubert import PROBE_FILE, finetune_emotion_hubert
from emotalker.tasks.demo.standins.fake_hubert import write_er_from_base, write_tiny_hubert
from emotalker.tasks.features.hubert import load_hubert


def _standin(root: Path) -> Path:
    content = write_tiny_hubert(root / "content", hidden_size=32, num_hidden_layers=4, seed=0)
    return write_er_from_base(content, root / "emotion", seed=1)


@pytest.mark.slow
def test_finetuning_carries_emotion_to_held_out_actors_and_shuffled_labels_do_not(tmp_path: Path) -> None:
    split = {"train_actors": ["M012", "W021"], "held_out_actors": ["M003", "W009"], "steps": 300}
    real = finetune_emotion_hubert(_standin(tmp_path / "real"), seed=0, **split)
    control = finetune_emotion_hubert(_standin(tmp_path / "control"), seed=0, shuffle_labels=True, **split)
    acc, ctl = real["probe_accuracy_held_out"], control["probe_accuracy_held_out"]
    assert acc["before_finetuning"] == ctl["before_finetuning"]  # the same random stand-in
    # the features: a linear probe gains over the random stand-in (any training spreads the near-constant
    # features of a random HuBERT, so the probe alone cannot tell real labels from shuffled ones)
    assert acc["after_finetuning"] >= 2 * real["chance"]
    assert acc["after_finetuning"] > acc["before_finetuning"] + 0.05  # baseline: the random stand-in
    # the classifier fine-tuned on real labels recognises held-out actors' emotions; on shuffled labels
    # (the negative control) it stays near chance
    assert real["classifier_accuracy_held_out"] >= 2 * real["chance"]
    assert real["classifier_accuracy_held_out"] > control["classifier_accuracy_held_out"] + 0.1
    assert control["classifier_accuracy_held_out"] < 2 * real["chance"]
    recorded = json.loads((tmp_path / "real" / "emotion" / PROBE_FILE).read_text())
    assert recorded["probe_accuracy_held_out"] == acc
    assert recorded["classifier_accuracy_held_out"] == real["classifier_accuracy_held_out"]
    assert recorded["utterances"] == {"train": 44, "held_out": 44}
    # saved whole, in the released layout: the pipeline's loader finds every encoder weight
    load_hubert(tmp_path / "real" / "emotion")
