"""Lip branch: shapes, Eq. 10 mixing, SadTalker checkpoint loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from emotalker.configs.constants import LIP_INDICES
from emotalker.configs.schema import LipConfig
from emotalker.models.lip import AudioEncoder, CheckpointError, ExpNet, LipBranch, load_sadtalker_audio2exp

torch.set_num_threads(1)


def test_audio_encoder_and_expnet_shapes() -> None:
    enc = AudioEncoder().eval()
    assert enc(torch.randn(3, 1, 80, 16)).shape == (3, 512, 1, 1)
    net = ExpNet().eval()
    assert net.mapping1.in_features == 512 + 64 + 1 and net.mapping1.out_features == 64
    assert net(torch.randn(3, 1, 80, 16), torch.randn(3, 64)).shape == (3, 64)
    # per-clip reference broadcast over T frames
    assert net(torch.randn(2, 5, 1, 80, 16), torch.randn(2, 64), torch.zeros(2, 5, 1)).shape == (2, 5, 64)
    with pytest.raises(ValueError, match="80, 16"):
        net(torch.randn(3, 1, 80, 20), torch.randn(3, 64))


def test_eq10_mixing() -> None:
    torch.manual_seed(0)
    lip = LipBranch.from_config(LipConfig(lip_mix=0.3)).eval()
    with torch.no_grad():
        lip.mapping2.weight.normal_()
        lip.mapping2.bias.normal_()
    mel, ref = torch.randn(4, 1, 80, 16), torch.randn(4, 64)
    out = lip(mel, ref)
    y_lip = out["exp"][:, list(LIP_INDICES)]
    assert (lip.mapping2.in_features, lip.mapping2.out_features) == (13, 13)  # SimpleWrapperV2's mapping2
    expected = 0.3 * lip.mapping2(y_lip) + 0.7 * y_lip
    assert out["lip"].shape == (4, 13)
    assert torch.allclose(out["lip"], expected, atol=1e-6)


def test_mapping2_starts_as_selection() -> None:
    lip = LipBranch.from_config(LipConfig()).eval()
    y = torch.randn(5, 64)
    assert torch.allclose(lip.mix(y), y[:, list(LIP_INDICES)], atol=1e-6)


def test_load_sadtalker_layout(tmp_path: Path) -> None:
    src = ExpNet()
    with torch.no_grad():
        src.mapping1.bias.fill_(0.5)
    sd = {f"netG.{k}": v for k, v in src.state_dict().items()}
    sd["netG.extra.weight"] = torch.zeros(1)
    path = tmp_path / "auido2exp_00300-model.pth"
    torch.save({"model": sd}, path)
    lip = LipBranch.from_config(LipConfig())
    report = lip.load_sadtalker_audio2exp(path)
    assert report["missing"] == [] and report["unexpected"] == ["extra.weight"]
    assert torch.allclose(lip.expnet.mapping1.bias, torch.full((64,), 0.5))
    assert "audio_encoder.0.conv_block.1.running_mean" in src.state_dict()
    with pytest.raises(CheckpointError):
        load_sadtalker_audio2exp(ExpNet(), path, strict=True)
    bad = tmp_path / "bad.pth"
    torch.save({"model": {"foo": torch.zeros(2)}}, bad)
    with pytest.raises(CheckpointError, match="no key matched"):
        load_sadtalker_audio2exp(ExpNet(), bad)
    with pytest.raises(FileNotFoundError):
        load_sadtalker_audio2exp(ExpNet(), tmp_path / "missing.pth")


def test_lip_mix_zero_is_sadtalker_expnet_lips() -> None:
    """Table 2 "our face + ExpNet lip" is ``lip.lip_mix=0``: the ExpNet selection, mapping2 unused; under
    the default mixture mapping2 (13 -> 13, the authors' Phi_M2) sees only the 13 lip entries of y."""
    torch.manual_seed(0)
    lip = LipBranch.from_config(LipConfig(lip_mix=0.0)).eval()
    with torch.no_grad():
        lip.mapping2.weight.normal_()
    mel, ref = torch.randn(4, 1, 80, 16), torch.randn(4, 64)
    out = lip(mel, ref)
    assert torch.equal(out["lip"], out["exp"][:, list(LIP_INDICES)])
    lip.lip_mix = 0.2  # the same weights under the default mixture: mapping2 now matters ...
    y = out["exp"]
    assert not torch.allclose(lip.mix(y), out["lip"])
    non_lip = [i for i in range(64) if i not in LIP_INDICES]
    moved = y.clone()
    moved[:, non_lip] += 5.0  # ... but only through the lip entries
    assert torch.equal(lip.mix(moved), lip.mix(y))


def _one_step(lip: LipBranch) -> dict[str, torch.Tensor]:
    before = {k: v.clone() for k, v in lip.state_dict().items()}
    opt = torch.optim.AdamW([p for p in lip.parameters() if p.requires_grad], lr=1e-2)
    lip.train()
    out = lip(torch.randn(6, 1, 80, 16), torch.randn(6, 64))["lip"]
    out.pow(2).mean().backward()
    opt.step()
    return {k: v for k, v in lip.state_dict().items() if not torch.equal(v, before[k])}


def test_frozen_audio_encoder_keeps_weights_and_statistics_while_mappings_train() -> None:
    """The authors train only mapping1 and mapping2 (Phi_A ``requires_grad = False``); BatchNorm running
    statistics are part of the pretrained encoder too. Negative control: unfrozen, Phi_A moves."""
    torch.manual_seed(0)
    changed = _one_step(LipBranch.from_config(LipConfig()))
    assert {k.split(".")[0] for k in changed} == {"expnet", "mapping2"}
    assert not [k for k in changed if k.startswith("expnet.audio_encoder")]
    assert "expnet.mapping1.weight" in changed and "mapping2.weight" in changed
    torch.manual_seed(0)
    free = _one_step(LipBranch.from_config(LipConfig(init_checkpoint=None, freeze_audio_encoder=False)))
    assert "expnet.audio_encoder.0.conv_block.0.weight" in free
    assert "expnet.audio_encoder.0.conv_block.1.running_mean" in free
