"""Training-stage pieces that follow the paper: lip-branch initialisation from SadTalker's audio2exp and
the stage-2 start token (stage-1 encoding of the reference)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.models.lip import ExpNet
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE
from emotalker.tasks.training.loop import TrainingInputError
from emotalker.tasks.training.stages import TransformerObjective, build_lip, lip_model_config

torch.set_num_threads(1)


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
    fresh = build_lip(PipelineConfig())  # without the key: random initialisation
    assert not torch.equal(fresh.expnet.mapping1.weight, saved["mapping1.weight"])
    assert torch.equal(lip.mapping2.weight, fresh.mapping2.weight)  # Phi_M2 is new either way
    assert "init_checkpoint" not in lip_model_config(cfg)  # not part of the registered model's config


def test_lip_init_checkpoint_without_expnet_weights_fails(tmp_path: Path) -> None:
    path = tmp_path / "partial.pth"
    sadtalker_checkpoint(path, drop="mapping1")
    with pytest.raises(TrainingInputError, match="mapping1"):
        build_lip(load_config(None, [f"lip.init_checkpoint={path}"]))


def test_transformer_start_token_is_the_stage1_encoding_of_the_reference() -> None:
    torch.manual_seed(0)
    vq = MotionVQVAE(codebook_size=16, code_dim=8, width=16, depth=1)
    model = CrossModalTransformer(d_model=16, n_layers=1, n_heads=2, ff_dim=32, dropout=0.0, audio_dim=12,
                                  code_dim=8, content_vocab=5, content_dim=4)  # fmt: skip
    seen: list[torch.Tensor] = []
    model.register_forward_pre_hook(
        lambda _m, args, kwargs: seen.append(kwargs["reference"]), with_kwargs=True
    )
    face = torch.randn(2, 16, 57)
    batch = {"face": face, "audio": torch.randn(2, 32, 12), "tokens": torch.randint(0, 5, (2, 32))}
    loss, metrics = TransformerObjective(vq)(model, batch, 0)
    assert torch.isfinite(loss) and "loss_contrastive" in metrics
    assert seen[0].shape == (2, 8)
    assert torch.allclose(seen[0], vq.encode_reference(face[:, 0]))
