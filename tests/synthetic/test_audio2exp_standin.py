"""The demo's SadTalker audio2exp stand-in learns to follow the synthetic speech's lips (issue 28)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from emotalker.models.lip import ExpNet, load_sadtalker_audio2exp
from emotalker.tasks.demo.standins.audio2exp import AUDIO2EXP_RECORD, SECTION, pretrain_audio2exp
from emotalker.tasks.demo.standins.fake_renderer import write_renderer_standins


@pytest.mark.slow
def test_pretraining_beats_the_training_mean_on_held_out_actors_and_needs_the_speech(tmp_path: Path) -> None:
    path = write_renderer_standins(tmp_path, seed=0, layouts=("safetensors",))["safetensors"]
    original = load_file(str(path))
    record = pretrain_audio2exp(
        path, train_actors=["M012", "W021"], held_out_actors=["M003", "W009"], seed=0, steps=100
    )
    l2 = record["held_out_lip_l2"]
    assert l2["after"] < l2["before"]  # baseline 1: the random stand-in
    assert l2["after"] < 0.8 * l2["training_mean"]  # baseline 2: the training split's mean lips
    # negative control: the same model fed other frames' speech loses its advantage over the mean
    assert l2["after_shuffled_audio"] > 0.9 * l2["training_mean"]
    # written back in SadTalker's layout: only the audio2exp section changed, and it loads strictly
    trained = load_file(str(path))
    assert trained.keys() == original.keys()
    assert all((trained[k] == v).all() for k, v in original.items() if not k.startswith(SECTION))
    assert any((trained[k] != v).any() for k, v in original.items() if k.startswith(SECTION))
    assert load_sadtalker_audio2exp(ExpNet(), path, strict=True) == {"missing": [], "unexpected": []}
    assert json.loads((path.parent / AUDIO2EXP_RECORD).read_text())["held_out_lip_l2"] == l2


def test_the_config_key_trains_only_the_demos_own_stand_in_once(tmp_path: Path, monkeypatch) -> None:
    """``synthetic.audio2exp_steps`` trains the renderer file only where demo-data wrote it (its marker),
    once (the record), and 0 leaves it alone."""
    from emotalker.configs.schema import load_config
    from emotalker.tasks.demo import assets
    from emotalker.tasks.demo.standins import audio2exp

    calls = []

    def fake(path, **kw):
        calls.append(kw["steps"])
        (Path(path).parent / AUDIO2EXP_RECORD).write_text("{}")
        return {"seconds": 0.0, "held_out_lip_l2": {"after": 0.0, "before": 0.0, "training_mean": 0.0}}

    monkeypatch.setattr(audio2exp, "pretrain_audio2exp", fake)
    ckpt = tmp_path / "sadtalker" / "SadTalker_V0.0.2_256.safetensors"
    ckpt.parent.mkdir()
    ckpt.write_bytes(b"")
    cfg = load_config("configs/demo.yaml", [f"render.checkpoint={ckpt}", "synthetic.audio2exp_steps=7"])
    assert assets.pretrained_audio2exp(cfg) is None and calls == []  # no marker: a real checkpoint
    (ckpt.parent / assets.RENDERER_MARKER).write_text("{}")
    assert assets.pretrained_audio2exp(cfg) is not None and calls == [7]
    assert assets.pretrained_audio2exp(cfg) is None and calls == [7]  # recorded: not trained twice
    (ckpt.parent / AUDIO2EXP_RECORD).unlink()
    off = load_config("configs/demo.yaml", [f"render.checkpoint={ckpt}", "synthetic.audio2exp_steps=0"])
    assert assets.pretrained_audio2exp(off) is None and calls == [7]


def test_the_renderer_stand_in_is_rewritten_and_retrained_when_its_speakers_change(tmp_path: Path) -> None:
    """The audio2exp stand-in learns from the training actors' speech: a change of the demo's actors (or of
    the synthetic seed, which picks their voices and sentences) writes the renderer stand-in again, random,
    so that it is trained again; the same settings keep it (and its record)."""
    from emotalker.configs.schema import load_config
    from emotalker.tasks.demo import assets
    from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides

    base = relocated_demo_overrides(tmp_path)
    cfg = load_config("configs/demo.yaml", base)
    assert assets.renderer_standins(cfg)  # written
    record = Path(cfg.render.checkpoint).parent / AUDIO2EXP_RECORD
    record.write_text("{}")  # as if trained
    assert assets.renderer_standins(cfg) == {} and record.exists()
    for change in ("synthetic.actors=[M003,W009,M012,W021,M005]", "synthetic.seed=1"):
        assert assets.renderer_standins(load_config("configs/demo.yaml", [*base, change]))
        assert not record.exists()  # random again: pretrained_audio2exp trains it
        record.write_text("{}")
