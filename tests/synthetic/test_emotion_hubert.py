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


def test_stand_in_speech_is_what_the_pipeline_reads_at_16_khz(tmp_path: Path) -> None:
    """The stand-ins train on the clips' speech as the pipeline reads it: the demo generator's utterance
    (written at MEAD's 48 kHz) at 16 kHz, so the same duration and the same spectrum (a 48 kHz wave read
    as 16 kHz would be three times longer and lower)."""
    import numpy as np
    from scipy.signal import resample_poly

    from emotalker.configs.constants import EMOTIONS, MEAD_AUDIO_RATE, SAMPLE_RATE
    from emotalker.tasks.demo.standins.emotion_hubert import corpus_speakers, speak
    from emotalker.tasks.demo.synthetic.mead import clip_sentences
    from emotalker.tasks.demo.synthetic.speech import prosody_for, synthesize, voice_for_actor

    first = speak(["W009"], seed=0)[0]
    text = clip_sentences("W009", first.emotion, first.level, seed=0)[0]  # the generator's clip 001
    written = synthesize(text, voice_for_actor("W009", 0), prosody_for(first.emotion, first.level))
    assert abs(len(first.wave) / SAMPLE_RATE - len(written) / MEAD_AUDIO_RATE) < 0.01
    read = resample_poly(written, SAMPLE_RATE, MEAD_AUDIO_RATE)[: len(first.wave)]
    spectrum = lambda x: np.abs(np.fft.rfft(x, n=SAMPLE_RATE))[: SAMPLE_RATE // 2]  # noqa: E731
    assert np.corrcoef(spectrum(first.wave[: len(read)]), spectrum(read))[0, 1] > 0.9
    # the sentences are drawn per speaker: none stands for an emotion across the speakers the stand-ins
    # train on (with one sentence per emotion and level, a stand-in read the words: 0.73 on held-out
    # speech of the same sentences, 0.41 on the clips)
    speakers = ["M012", "W021", *corpus_speakers(8, exclude=[])]
    for emotion in EMOTIONS:
        assert len({clip_sentences(a, emotion, 1, seed=0)[0] for a in speakers}) > len(speakers) // 2


def test_the_stand_in_is_re_tuned_when_its_settings_change_and_a_real_checkpoint_never_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``synthetic.emotion_model_steps`` / ``emotion_model_speakers`` act on an existing demo world: the
    stand-in is rebuilt from the content model and fine-tuned again with the new settings; the same
    settings reuse it; a checkpoint without the stand-in's marker (a real one) is left as it is."""
    from emotalker.configs.schema import load_config
    from emotalker.tasks.demo import assets
    from emotalker.tasks.demo.standins import emotion_hubert
    from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides

    calls: list[dict] = []

    def fake_finetune(directory: Path, **kwargs: object) -> dict:
        calls.append(kwargs)
        (Path(directory) / PROBE_FILE).write_text("{}")
        acc = {"before_finetuning": 0.1, "after_finetuning": 0.2}
        return {
            "probe_accuracy_held_out": acc,
            "classifier_accuracy_held_out": 0.2,
            "chance": 0.125,
            "seconds": 0,
        }

    monkeypatch.setattr(emotion_hubert, "finetune_emotion_hubert", fake_finetune)
    base = ["audio.content_layer=3", *relocated_demo_overrides(tmp_path)]
    cfg = load_config("configs/demo.yaml", base)
    emotion = Path(cfg.audio.emotion_model)
    write_tiny_hubert(cfg.audio.content_model, hidden_size=32, num_hidden_layers=4, seed=0)
    assets.emotion_standin(cfg)
    assert [c["steps"] for c in calls] == [cfg.synthetic.emotion_model_steps]
    assert len(calls[0]["train_actors"]) == 2 + 2 * cfg.synthetic.emotion_model_speakers  # actors + corpus
    assets.emotion_standin(cfg)
    assert len(calls) == 1  # same settings: reused
    assets.emotion_standin(load_config("configs/demo.yaml", [*base, "synthetic.emotion_model_steps=7"]))
    assets.emotion_standin(load_config("configs/demo.yaml", [*base, "synthetic.emotion_model_speakers=1"]))
    assert [c["steps"] for c in calls][1:] == [7, cfg.synthetic.emotion_model_steps]
    assert len(calls[2]["train_actors"]) == 2 + 2
    assets.emotion_standin(load_config("configs/demo.yaml", [*base, "synthetic.emotion_model_steps=0"]))
    assert len(calls) == 3 and not (emotion / PROBE_FILE).exists()  # rebuilt untuned

    real = tmp_path / "real-er"
    write_er_from_base(cfg.audio.content_model, real, seed=5)
    weights = (real / "model.safetensors").read_bytes()
    assets.emotion_standin(load_config("configs/demo.yaml", [*base, f"audio.emotion_model={real}"]))
    assert len(calls) == 3 and (real / "model.safetensors").read_bytes() == weights
