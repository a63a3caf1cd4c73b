"""Issue 26 point 3: the stage-2 start token's and the lip branch's reference frames in training are what
inference gives them (a neutral clip of the same actor and view), not a frame of the emotional target."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emotalker.configs.constants import EXP_DIM, FACE_INDICES
from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.storage.manifest import Manifest
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.training.data import NeutralFrames
from emotalker.tasks.training.lip import LipWindows
from emotalker.tasks.training.loop import TrainingInputError
from emotalker.tasks.training.transformer import ReferencedWindows
from emotalker.tasks.training.vqvae import FaceNormalizer

# (actor, emotion, sentence): every clip's frames hold its own value, so a drawn frame names its clip
CLIPS = [
    ("M003", "happy", "001"),
    ("M003", "sad", "002"),
    ("M003", "neutral", "003"),
    ("M003", "neutral", "004"),
    ("W009", "angry", "001"),
    ("W009", "neutral", "002"),
]


def cid(actor: str, emotion: str, sentence: str) -> str:
    return f"{actor}_front_{emotion}_level_1_{sentence}"


def world(
    tmp_path: Path, clips: list[tuple[str, str, str]] = CLIPS
) -> tuple[PipelineConfig, dict[str, float]]:
    cfg = load_config(None, [f"paths.root={tmp_path}"])
    Manifest(cfg.paths.resolve("manifest")).upsert(
        {"clip_id": cid(*c), "actor": c[0], "view": "front", "emotion": c[1], "level": 1, "sentence": c[2]}
        for c in clips
    )
    store = StoreRoot.from_paths(cfg.paths).store("face")
    value = {}
    for i, c in enumerate(clips):
        value[cid(*c)] = float(i + 1)
        store.write_clip(
            cid(*c), {"motion": np.full((12 + i, 70), i + 1, np.float32)}, attrs={"n_frames": 12 + i}
        )
    return cfg, value


def test_neutral_frames_come_from_another_neutral_clip_of_the_same_actor(tmp_path: Path) -> None:
    cfg, value = world(tmp_path)
    ids = [cid(*c) for c in CLIPS]
    neutral = NeutralFrames(Workspace.from_paths(cfg.paths), ids, "train.transformer.reference")
    torch.manual_seed(0)
    m003_neutral = {value[cid("M003", "neutral", s)] for s in ("003", "004")}
    seen = {
        float(neutral.draw(cid("M003", "happy", "001"), lambda n: int(torch.randint(n, ())))[0])
        for _ in range(40)
    }
    assert seen == m003_neutral  # both neutral clips of the actor, never the happy clip itself
    own = cid("M003", "neutral", "003")
    assert {float(neutral.draw(own, lambda n: int(torch.randint(n, ())))[0]) for _ in range(20)} == {
        value[cid("M003", "neutral", "004")]
    }
    assert (
        float(neutral.draw(cid("W009", "angry", "001"), lambda n: 0)[0])
        == value[cid("W009", "neutral", "002")]
    )


def test_an_actor_without_a_neutral_clip_is_refused_naming_the_key(tmp_path: Path) -> None:
    cfg, _ = world(tmp_path, CLIPS[:2])
    with pytest.raises(
        TrainingInputError, match="train.lip.reference.*no neutral clip|no neutral clip.*M003"
    ):
        NeutralFrames(Workspace.from_paths(cfg.paths), [cid(*c) for c in CLIPS[:2]], "train.lip.reference")


def referenced(cfg: PipelineConfig, mode: str, resample: bool) -> ReferencedWindows:
    ids = [cid(*c) for c in CLIPS]
    root = StoreRoot.from_paths(cfg.paths)
    norm = FaceNormalizer(np.full(57, 0.5, np.float32), np.full(57, 2.0, np.float32))
    windows = WindowDataset({"face": (root.store("face"), "motion")}, ids, 8, transforms={"face": norm})
    ws = Workspace.from_paths(cfg.paths)
    neutral = NeutralFrames(ws, ids, "train.transformer.reference") if mode == "neutral_clip" else None
    return ReferencedWindows(windows, norm, mode, neutral, resample)


def test_stage2_reference_defaults_to_a_neutral_clip_of_the_same_actor(tmp_path: Path) -> None:
    assert PipelineConfig().train.transformer.reference == "neutral_clip"
    cfg, value = world(tmp_path)
    ds = referenced(cfg, "neutral_clip", resample=True)
    happy = next(i for i in range(len(ds)) if ds.windows.window_at(i)[0] == cid("M003", "happy", "001"))
    torch.manual_seed(3)
    refs = {float(ds[happy]["ref"][0]) for _ in range(30)}
    # normalised like the face windows: (value - 0.5) / 2
    assert refs == {(value[cid("M003", "neutral", s)] - 0.5) / 2 for s in ("003", "004")}
    assert ds[happy]["ref"].shape == (len(FACE_INDICES),)
    # the happy window's own frames never start the sequence
    assert (value[cid("M003", "happy", "001")] - 0.5) / 2 not in refs


def test_stage2_reference_draws_are_a_function_of_the_seeded_step(tmp_path: Path) -> None:
    cfg, _ = world(tmp_path)
    ds = referenced(cfg, "neutral_clip", resample=True)
    torch.manual_seed(11)
    a = [ds[i]["ref"] for i in range(len(ds))]
    torch.manual_seed(11)  # the loop re-seeds torch from (seed, step): a resumed step draws the same
    b = [ds[i]["ref"] for i in range(len(ds))]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    val = referenced(cfg, "neutral_clip", resample=False)  # validation: fixed per window
    torch.manual_seed(1)
    first = [val[i]["ref"] for i in range(len(val))]
    torch.manual_seed(2)
    assert all(torch.equal(x, val[i]["ref"]) for i, x in enumerate(first))


def test_stage2_reference_named_options(tmp_path: Path) -> None:
    cfg, _ = world(tmp_path)
    first = referenced(cfg, "window_first_frame", resample=True)
    item = first[0]
    assert torch.equal(item["ref"], item["face"][0])
    torch.manual_seed(0)
    window = referenced(cfg, "window_frame", resample=True)
    item = window[0]
    assert any(
        torch.equal(item["ref"], f) for f in item["face"]
    )  # the authors' ref_idx: a frame of the window


def test_lip_reference_defaults_to_a_neutral_clip(tmp_path: Path) -> None:
    assert PipelineConfig().train.lip.reference == "neutral_clip"
    cfg, value = world(tmp_path)
    ids = [cid(*c) for c in CLIPS]
    root = StoreRoot.from_paths(cfg.paths)
    windows = WindowDataset({"motion": (root.store("face"), "motion")}, ids, 5)
    sad = next(i for i in range(len(windows)) if windows.window_at(i)[0] == cid("M003", "sad", "002"))
    torch.manual_seed(0)
    neutral = NeutralFrames(Workspace.from_paths(cfg.paths), ids, "train.lip.reference")
    lip = LipWindows(windows, True, neutral)
    refs = {float(lip[sad]["ref_exp"][0]) for _ in range(30)}
    assert refs == {value[cid("M003", "neutral", s)] for s in ("003", "004")}
    assert lip[sad]["ref_exp"].shape == (EXP_DIM,)
    old = LipWindows(windows, True, None)  # "clip_frame": the window's own (sad) clip
    assert {float(old[sad]["ref_exp"][0]) for _ in range(5)} == {value[cid("M003", "sad", "002")]}
