"""Issue 30 case 10: ten minutes of silence ran for 7 minutes without a word. ``generate`` warns once when
the speech is silent or nearly, and says what it is doing from its first second."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from emotalker.storage.workspace import Workspace
from emotalker.tasks.generation.run import silence_warning


def test_silent_and_nearly_silent_speech_is_warned_about_and_speech_is_not() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(16_000 * 3) / 16_000
    speech = (0.1 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t))).astype(np.float32)
    assert silence_warning(speech, "talk.wav") is None  # baseline: speech-level audio
    quiet = (0.1 * speech).astype(np.float32)  # -20 dB: quiet speech is still speech
    assert silence_warning(quiet, "quiet.wav") is None
    zeros = np.zeros(16_000 * 600, dtype=np.float32)  # ten minutes of digital silence
    msg = silence_warning(zeros, "silence.wav")
    assert msg is not None and msg.startswith("silence.wav: the speech is silent") and "600 s" in msg
    hiss = (rng.standard_normal(16_000 * 3) * 2e-4).astype(np.float32)  # a noise floor, no speech
    assert silence_warning(hiss, "hiss.wav") is not None
    click = np.zeros(16_000 * 3, dtype=np.float32)
    click[100] = 0.5  # one click on silence: a loud peak, but one sounding frame in 75
    assert silence_warning(click, "click.wav") is not None


def test_generate_warns_once_and_logs_before_any_model_loads(
    tmp_path, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning and the first progress line come before the slow steps: here the first model load fails
    (no tokens store), and both lines are already out, the warning once."""
    import soundfile as sf

    from emotalker.configs.schema import load_config
    from emotalker.tasks.generation.animate import InputError
    from emotalker.tasks.generation.run import generate_from_image

    wav, img = tmp_path / "silence.wav", tmp_path / "face.png"
    sf.write(str(wav), np.zeros(16_000 * 2, dtype=np.float32), 16_000)
    import cv2

    cv2.imwrite(str(img), np.full((64, 64, 3), 128, np.uint8))
    cfg = load_config("configs/demo.yaml", [f"paths.root={tmp_path}"])
    with caplog.at_level(logging.INFO, logger="emotalker"), pytest.raises(InputError, match="tokens store"):
        generate_from_image(cfg, img, wav, tmp_path / "out", ws=Workspace.from_paths(cfg.paths))
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("emotalker")]
    assert any(line.startswith("generate: 2.0 s of speech -> 50 frames") for line in lines)
    assert sum("the speech is silent" in line for line in lines) == 1
