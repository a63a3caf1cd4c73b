"""The learning test: on a small synthetic world the three stages learn talking-head motion from audio.

What it proves. Stage 1 (the motion VQ-VAE with its emotion head), stage 2 (the cross-modal Transformer
with the alignment mask, the biased mask, the start token from the stage-1 encoding of a neutral reference
and the contrastive loss, as configured by default) and the lip branch are trained with the project's own
datasets (``WindowDataset``, ``ReferencedWindows``, ``LipWindows``), losses (``vqvae_loss``,
``TransformerObjective``, ``lip_loss``) and loop (``run_training``), on in-memory stores of the world
``emotalker_testkit.learning_world`` describes; held-out clips are generated with ``EmoTalker.generate``
and scored with ``evaluate_clip`` (LipL2, FaceL2, the stage-1 head's emotion, and the copy-reference /
mean-motion baselines beside them). No Prefect, MLflow or Zarr.

* ``model``: it beats both baselines by at least 20% on LipL2 and FaceL2, and the stage-1 head reads the
  right emotion in at least half of the generated clips (chance: 1/4).
* ``shuffled_audio`` (negative control): the same training with the audio features, content tokens and
  mel windows permuted across training clips loses the advantage on lips (not 20% better than the
  baselines) and on emotion (accuracy below 0.5): what the model gets right comes from the audio.
* ``shifted_mask``: the alignment window moved by one token (token i sees the audio of tokens i and i+1
  instead of i-1 and i; one line, ``_shift_alignment``) loses the FaceL2 advantage: in this world the face
  of token i is a function of the audio of tokens i-1 and i that neither token determines alone, so the
  face content is out of the shifted window's reach (the emotion, in every audio frame, is not). With more
  than one decoder layer a shifted model could recover part of it through the previous position's
  window; the test's Transformer has one layer.

Thresholds come from the baselines measured on the same clips in the same run; seeds are fixed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import torch

from emotalker.configs.schema import (
    LipConfig,
    LipTrainConfig,
    TransformerConfig,
    TransformerTrainConfig,
    VQVAEConfig,
    VQVAETrainConfig,
)
from emotalker.models import CrossModalTransformer, EmoTalker, LipBranch, MotionVQVAE
from emotalker.models import masks as masks_module
from emotalker.models import transformer as transformer_module
from emotalker.storage.windows import WindowDataset
from emotalker.tasks.evaluation.motion import evaluate_clip
from emotalker.tasks.training.lip import LipWindows, lip_loss
from emotalker.tasks.training.loop import run_training
from emotalker.tasks.training.transformer import ReferencedWindows, TransformerObjective
from emotalker.tasks.training.vqvae import FaceNormalizer, vqvae_loss
from emotalker_testkit.learning_world import (
    WORLD_EMOTIONS,
    NeutralReferences,
    World,
    cheap_audio_encoder,
    make_world,
)

pytestmark = pytest.mark.slow

WINDOW = 32  # frames per stage-1 / stage-2 training window (8 tokens)
MARGIN = 0.8  # "beats the baselines by at least 20%"
CASES = ("model", "shuffled_audio", "shifted_mask")


def _stage(cls: type, steps: int, **kw: Any) -> Any:
    return cls(steps=steps, checkpoint_every=steps, log_every=steps, val_every=steps, seed=0, **kw)


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """The synthetic world; one CPU thread while the module runs (its runtime budget is one core's)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield make_world(seed=0)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def stage1(world: World, tmp_path_factory: pytest.TempPathFactory) -> MotionVQVAE:
    """The stage-1 VQ-VAE with emotion head, shared by every case (its input is motion only)."""
    torch.manual_seed(0)
    vq = MotionVQVAE.from_config(VQVAEConfig(), codebook_size=64, code_dim=16, width=48, depth=2)
    stores = world.stores()
    data = WindowDataset(
        {"face": (stores["face"], "motion")},
        world.ids("train"),
        WINDOW,
        hop=4,
        labels=world.labels(),
        transforms={"face": FaceNormalizer.identity()},
    )
    stage = _stage(VQVAETrainConfig, 600, batch_size=32, lr=2e-3, warmup_steps=50, window=WINDOW)
    run_training(
        vq, vqvae_loss, data, stage=stage, ckpt_dir=tmp_path_factory.mktemp("vq"), device="cpu", threads=1
    )
    return vq.eval()


def _shift_alignment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deliberate bug: token i attends the audio window of token i + 1."""
    original = masks_module.alignment_bounds

    def shifted(i: Any, k: int, window: str = "authors") -> tuple[Any, Any]:
        return original(i + 1, k, window)

    monkeypatch.setattr(masks_module, "alignment_bounds", shifted)  # the masks
    monkeypatch.setattr(transformer_module, "alignment_bounds", shifted)  # generate's audio slice


def _train_transformer(
    world: World, vq: MotionVQVAE, stores: dict[str, Any], ckpt: Path
) -> CrossModalTransformer:
    torch.manual_seed(0)
    tr = CrossModalTransformer.from_config(
        TransformerConfig(),
        d_model=64,
        n_layers=1,
        n_heads=4,
        ff_dim=128,
        dropout=0.0,
        audio_dim=world.audio_dim,
        code_dim=vq.code_dim,
        content_vocab=len(world.content_centres),
        content_dim=world.content_centres.shape[1],
    )
    tr.set_content_centres(torch.from_numpy(world.content_centres))
    norm = FaceNormalizer.identity()
    windows = WindowDataset(
        {
            "face": (stores["face"], "motion"),
            "audio": (stores["audio"], "feats", 2),
            "tokens": (stores["tokens"], "tokens", 2),
        },
        world.ids("train"),
        WINDOW,
        hop=4,
        labels=world.labels(),
        transforms={"face": norm},
    )
    neutral = cast(Any, NeutralReferences(world, world.ids("train")))
    data = ReferencedWindows(windows, norm, "neutral_clip", neutral, resample=True)
    stage = _stage(TransformerTrainConfig, 800, batch_size=32, lr=2e-3, warmup_steps=50, window=WINDOW)
    run_training(tr, TransformerObjective(vq), data, stage=stage, ckpt_dir=ckpt, device="cpu", threads=1)
    return tr.eval()


def _train_lip(world: World, stores: dict[str, Any], ckpt: Path) -> LipBranch:
    torch.manual_seed(0)
    lip = LipBranch.from_config(LipConfig(init_checkpoint=None, freeze_audio_encoder=False))
    lip.expnet.audio_encoder = cheap_audio_encoder()  # type: ignore[assignment]
    windows = WindowDataset(
        {"motion": (stores["face"], "motion"), "mel": (stores["mel"], "windows")},
        world.ids("train"),
        5,
        hop=2,
    )
    data = LipWindows(windows, True, cast(Any, NeutralReferences(world, world.ids("train"))))
    stage = _stage(LipTrainConfig, 400, batch_size=32, lr=2e-3, warmup_steps=20)
    run_training(lip, lip_loss, data, stage=stage, ckpt_dir=ckpt, device="cpu", threads=1)
    return lip.eval()


@dataclass
class Scores:
    lip_l2: float
    face_l2: float
    emotion_acc: float
    floor_lip_l2: float  # the better of copy-reference and mean motion
    floor_face_l2: float
    table: str


def _evaluate(world: World, model: EmoTalker) -> Scores:
    mean = world.mean_motion()
    rows = []
    for cid in world.ids("test"):
        clip = world.clips[cid]
        feats = {"audio": clip.audio, "tokens": clip.tokens, "mel": clip.mel, "motion": clip.motion}
        rows.append(evaluate_clip(model, feats, world.references[cid], clip.emotion, mean_motion=mean))

    def avg(key: str) -> float:
        return float(np.mean([r[key] for r in rows]))

    def acc(key: str) -> float:
        return float(np.mean([r[key] == r["emotion_label"] for r in rows]))

    names = {"ours": "", "copy_reference": "copy_reference.", "mean_motion": "mean_motion."}
    lines = [f"{'':16s} {'LipL2':>7s} {'FaceL2':>7s} {'EmoAcc':>7s}"]
    for name, p in names.items():
        lip = f"{avg(p + 'lip_l2'):7.3f}"
        lines.append(f"{name:16s} {lip} {avg(p + 'face_l2'):7.3f} {acc(p + 'emotion_pred'):7.3f}")
    ceiling = f"{avg('stage1_ceiling.face_l2'):7.3f} {acc('stage1_ceiling.emotion_pred'):7.3f}"
    lines.append(f"{'stage1_ceiling':16s} {'':7s} {ceiling}")
    lines.append(f"{'gt motion':16s} {'':7s} {'':7s} {acc('emotion_pred_gt_motion'):7.3f}")
    return Scores(
        lip_l2=avg("lip_l2"),
        face_l2=avg("face_l2"),
        emotion_acc=acc("emotion_pred"),
        floor_lip_l2=min(avg("copy_reference.lip_l2"), avg("mean_motion.lip_l2")),
        floor_face_l2=min(avg("copy_reference.face_l2"), avg("mean_motion.face_l2")),
        table="\n".join(lines),
    )


@pytest.fixture(scope="module")
def lip_cache() -> dict[str, LipBranch]:
    return {}


@pytest.mark.parametrize("case", CASES)
def test_learns_from_audio(
    case: str,
    world: World,
    stage1: MotionVQVAE,
    lip_cache: dict[str, LipBranch],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    audio_from = None
    if case == "shuffled_audio":  # every training clip gets another training clip's audio
        audio_from = world.shuffled_audio()
    if case == "shifted_mask":
        _shift_alignment(monkeypatch)
    stores = world.stores(audio_from)
    lip_key = "shuffled_audio" if case == "shuffled_audio" else "model"  # the mask shift is stage 2's
    if lip_key not in lip_cache:
        lip_cache[lip_key] = _train_lip(world, stores, tmp_path / "lip")
    tr = _train_transformer(world, stage1, stores, tmp_path / "transformer")
    model = EmoTalker(stage1, tr, lip_cache[lip_key], max_context=64)
    s = _evaluate(world, model)
    chance = 1 / len(WORLD_EMOTIONS)
    print(f"\n[{case}] held-out clips: {len(world.ids('test'))}, emotion chance {chance:.3f}\n{s.table}")
    lip_ok = s.lip_l2 <= MARGIN * s.floor_lip_l2
    face_ok = s.face_l2 <= MARGIN * s.floor_face_l2
    emotion_ok = s.emotion_acc >= 0.5
    assert math.isfinite(s.lip_l2) and math.isfinite(s.face_l2), s.table
    if case == "model":
        assert lip_ok and face_ok and emotion_ok, s.table
    elif case == "shuffled_audio":
        assert not lip_ok and not emotion_ok, s.table
    else:  # the face content is lost; the emotion, in every audio frame, is not
        assert not face_ok and emotion_ok, s.table
