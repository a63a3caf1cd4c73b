"""Training-stage pieces that follow the paper: lip-branch initialisation from SadTalker's audio2exp and
the stage-2 start token (stage-1 encoding of the reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotalker.configs.schema import LipConfig, PipelineConfig, TransformerConfig, VQVAEConfig, load_config
from emotalker.models.lip import ExpNet
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.workspace import Workspace
from emotalker.tasks.training.lip import build_lip, lip_model_config
from emotalker.tasks.training.loop import TrainingInputError
from emotalker.tasks.training.transformer import TransformerObjective

torch.set_num_threads(1)

SCRATCH = LipConfig(init_checkpoint=None, freeze_audio_encoder=False)  # the lip branch from random weights


def sadtalker_checkpoint(path: Path, drop: str | None = None) -> dict[str, torch.Tensor]:
    """A random ExpNet saved as SadTalker's auido2exp_00300-model.pth is laid out (``netG.`` under model)."""
    torch.manual_seed(7)
    net = ExpNet()
    for p in net.parameters():
        torch.nn.init.normal_(p, std=0.05)
    sd = {k: v for k, v in net.state_dict().items() if drop is None or not k.startswith(drop)}
    torch.save({"model": {f"netG.{k}": v for k, v in sd.items()}, "epoch": 300}, path)
    return sd


def test_lip_init_checkpoint_starts_phi_a_and_phi_m1_from_sadtalker(tmp_path: Path) -> None:
    path = tmp_path / "auido2exp_00300-model.pth"
    saved = sadtalker_checkpoint(path)
    cfg = load_config(None, [f"lip.init_checkpoint={path}"])
    lip = build_lip(cfg)
    own = lip.expnet.state_dict()
    for k, v in saved.items():  # audio_encoder (Phi_A) and mapping1 (Phi_M1)
        assert torch.equal(own[k], v), k
    fresh = build_lip(PipelineConfig(lip=SCRATCH))  # the named switch: random initialisation
    assert not torch.equal(fresh.expnet.mapping1.weight, saved["mapping1.weight"])
    assert torch.equal(lip.mapping2.weight, fresh.mapping2.weight)  # Phi_M2 is new either way
    assert "init_checkpoint" not in lip_model_config(cfg)  # not part of the registered model's config


def test_paper_config_starts_the_lip_branch_from_sadtalker_with_phi_a_frozen() -> None:
    """Sec. 3.4's "pre-trained audio encoder [27]": by default, not only in paper.yaml, and frozen."""
    from emotalker.configs.schema import resolve_config_path

    for lip in (load_config(resolve_config_path("paper"), []).lip, PipelineConfig().lip):
        assert (
            lip.init_checkpoint is not None and lip.init_checkpoint.name == "SadTalker_V0.0.2_256.safetensors"
        )
        assert lip.freeze_audio_encoder
    with pytest.raises(Exception, match="lip.freeze_audio_encoder=false"):  # frozen random weights: refused
        LipConfig(init_checkpoint=None)


def test_lip_run_without_the_sadtalker_file_stops_before_training(tmp_path: Path) -> None:
    from emotalker.tasks.training.lip import plan

    cfg = load_config(None, [f"paths.root={tmp_path}", f"lip.init_checkpoint={tmp_path}/none.safetensors"])
    with pytest.raises(FileNotFoundError) as err:
        plan(cfg, ws=Workspace.from_paths(cfg.paths))  # no store, no split: the missing file is reported
    msg = str(err.value)
    assert "\n" not in msg and "lip.init_checkpoint" in msg and "SadTalker_V0.0.2_256.safetensors" in msg


def test_sadtalker_safetensors_layout_loads_into_the_lip_branch(tmp_path: Path) -> None:
    """The demo's stand-in (and SadTalker's release) keeps ExpNet under ``audio2exp.netG.``."""
    from safetensors.torch import save_file

    saved = sadtalker_checkpoint(tmp_path / "unused.pth")
    path = tmp_path / "SadTalker_V0.0.2_256.safetensors"
    save_file({f"audio2exp.netG.{k}": v.contiguous() for k, v in saved.items()}
              | {"generator.x": torch.zeros(1)}, str(path))  # fmt: skip
    lip = build_lip(load_config(None, [f"lip.init_checkpoint={path}"]))
    assert torch.equal(lip.expnet.mapping1.weight, saved["mapping1.weight"])
    assert not any(p.requires_grad for p in lip.expnet.audio_encoder.parameters())


def test_lip_init_checkpoint_without_expnet_weights_fails(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    sadtalker_checkpoint(path, drop="mapping1")
    with pytest.raises(TrainingInputError, match="mapping1"):
        build_lip(load_config(None, [f"lip.init_checkpoint={path}"]))


def test_transformer_start_token_is_the_stage1_encoding_of_the_reference() -> None:
    torch.manual_seed(0)
    vq = MotionVQVAE.from_config(VQVAEConfig(), codebook_size=16, code_dim=8, width=16, depth=1)
    model = CrossModalTransformer.from_config(TransformerConfig(), d_model=16, n_layers=1, n_heads=2,
                                              ff_dim=32, dropout=0.0, audio_dim=12, code_dim=8,
                                              content_vocab=5, content_dim=4)  # fmt: skip
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["reference"]), with_kwargs=True
    )
    face = torch.randn(2, 16, 57)
    ref = torch.randn(2, 57)  # the dataset's reference frame (a neutral clip's, by default), not face[:, 0]
    batch = {
        "face": face,
        "ref": ref,
        "audio": torch.randn(2, 32, 12),
        "tokens": torch.randint(0, 5, (2, 32)),
    }
    loss, metrics = TransformerObjective(vq)(model, batch, 0)
    assert torch.isfinite(loss) and "loss_contrastive" in metrics
    assert seen[0].shape == (2, 8)
    assert torch.allclose(seen[0], vq.encode_reference(ref))
    assert not torch.allclose(seen[0], vq.encode_reference(face[:, 0]))  # the target's own first frame


def test_stores_resampled_to_25fps_by_older_versions_are_refused(tmp_path: Path) -> None:
    import numpy as np

    from emotalker.storage.zarr_store import FeatureStore
    from emotalker.tasks.training.data import check_stored_rate

    store = FeatureStore(tmp_path, "hubert_emotion")
    store.write_clip("old", {"feats": np.zeros((25, 4), np.float32)}, attrs={"n_frames": 25})
    store.write_clip(
        "new", {"feats": np.zeros((49, 4), np.float32)}, attrs={"n_frames": 49, "frame_rate": 50}
    )
    assert check_stored_rate(store, "new") == 2  # HuBERT frames per 25 fps video frame
    with pytest.raises(TrainingInputError, match="rerun the features flow"):
        check_stored_rate(store, "old")


def test_lip_windows_are_5_continuous_frames_with_a_random_repeated_reference(tmp_path: Path) -> None:
    import json

    import numpy as np

    from emotalker.storage.zarr_store import FeatureStore
    from emotalker.tasks.training.lip import _lip_forward, build_lip, lip_datasets

    lengths = {"M012_front_angry_level_1_001": 30, "M012_front_sad_level_2_001": 50}  # < 96 frames
    face, mel = FeatureStore(tmp_path / "features", "face"), FeatureStore(tmp_path / "features", "mel")
    for cid, n in lengths.items():
        motion = np.arange(n, dtype=np.float32)[:, None] + np.zeros((1, 70), np.float32)  # value = frame
        face.write_clip(cid, {"motion": motion})
        mel.write_clip(
            cid, {"windows": np.random.default_rng(n).standard_normal((n, 80, 16)).astype(np.float32)}
        )
    (tmp_path / "split.json").write_text(json.dumps({"train": list(lengths), "val": [], "test": []}))
    # the window's own clip as the reference pool (default: a neutral clip, tests/training/test_references.py)
    cfg = load_config(None, [f"paths.root={tmp_path}", "train.lip.reference=clip_frame"])
    assert cfg.train.lip.window == 5
    train, val = lip_datasets(cfg, Workspace.from_paths(cfg.paths))
    assert val is None and train.windows.skipped == 0  # short clips are used, not skipped
    assert len(train) == sum((n - 5) // 2 + 1 for n in lengths.values())
    torch.manual_seed(0)
    refs, at_start = set(), 0
    for i in range(len(train)):
        item = train[i]
        assert item["motion"].shape == (5, 70) and item["mel"].shape == (5, 80, 16)  # 0.2 s mel per frame
        ref = item["ref_exp"]
        assert ref.shape == (64,) and bool((ref == ref[0]).all())  # one frame of the clip's motion ...
        assert 0 <= int(ref[0]) < lengths[item["clip_id"]]
        refs.add(int(ref[0]))
        at_start += int(ref[0]) == item["start"]
    assert len(refs) > 5 and at_start < len(train) // 4  # ... sampled at random, not the window's first
    batch = {k: torch.stack([train[i][k] for i in range(4)]) for k in ("motion", "mel", "ref_exp")}
    seen: list[torch.Tensor] = []
    lip = build_lip(cfg.model_copy(update={"lip": SCRATCH}))
    lip.expnet.register_forward_hook(lambda _m, args, _o: seen.append(args[1]))
    _lip_forward(lip, batch)
    assert seen[0].shape == (4, 5, 64)  # beta repeated over the 5 frames
    assert torch.equal(seen[0], batch["ref_exp"][:, None].expand(4, 5, 64))
