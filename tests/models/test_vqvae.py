"""Motion VQ-VAE: shapes, padding, Eq. 3 terms, and overfitting one batch."""

from __future__ import annotations

import pytest
import torch

from emotalker.configs.schema import VQVAEConfig
from emotalker.models.vqvae import MotionVQVAE

torch.set_num_threads(1)


def tiny(**kw: object) -> MotionVQVAE:
    args = dict(in_dim=57, codebook_size=32, code_dim=16, width=32, depth=2, dilation_growth=3)
    args.update(kw)
    return MotionVQVAE.from_config(VQVAEConfig(), **args)


def test_shapes_and_odd_lengths() -> None:
    torch.manual_seed(0)
    m = tiny()
    assert m.frames_per_token == 4
    for t in (4, 7, 13, 96):
        x = torch.randn(2, t, 57)
        out = m(x, torch.tensor([0, 3]))
        assert out["recon"].shape == (2, t, 57)
        assert out["indices"].shape == (2, -(-t // 4))
        assert out["emotion_logits"].shape == (2, 8)
        expected = out["loss_recon"] + 0.2 * out["loss_commit"] + 0.2 * out["loss_emotion"]
        assert torch.allclose(out["loss"], expected)
        assert not out["loss_codebook"].requires_grad
    m.eval()
    z, idx = m.encode(torch.randn(1, 10, 57))
    assert z.shape == (1, 3, 16) and idx.shape == (1, 3)
    assert m.decode_indices(idx, 10).shape == (1, 10, 57)
    zq, idx2 = m.quantize(z)
    assert torch.equal(idx, idx2) and m.decode_latent(zq).shape == (1, 12, 57)


def test_without_emotion_head_or_labels() -> None:
    m = tiny(emotion_head=False)
    out = m(torch.randn(2, 8, 57))
    assert "emotion_logits" not in out
    assert torch.allclose(out["loss"], out["loss_recon"] + 0.2 * out["loss_commit"])


def test_straight_through_reaches_encoder() -> None:
    torch.manual_seed(0)
    m = tiny()
    out = m(torch.randn(2, 16, 57))
    out["loss_recon"].backward()  # only through the decoder + straight-through estimator
    g = m.encoder.net[0].weight.grad
    assert g is not None and g.abs().sum() > 0


def test_overfits_one_batch() -> None:
    torch.manual_seed(0)
    m = tiny(codebook_size=64, code_dim=16, width=48)
    t = torch.linspace(0, 6.28, 32)
    x = torch.stack([torch.sin(t[:, None] * (1 + torch.arange(57) * 0.05) + p) for p in (0.0, 1.0, 2.0, 3.0)])
    labels = torch.tensor([0, 1, 2, 3])
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    first = None
    for _ in range(150):
        out = m(x, labels)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        first = first if first is not None else out["loss"].item()
    m.eval()
    last = m(x, labels)["loss"].item()
    assert last < first / 5, (first, last)


def test_from_config_and_bad_input() -> None:
    cfg = VQVAEConfig(codebook_size=16, code_dim=8, width=16, depth=1)
    m = MotionVQVAE.from_config(cfg)
    assert m.quantizer.codebook.shape == (16, 8)
    with pytest.raises(ValueError, match="57"):
        m(torch.randn(2, 8, 70))
    with pytest.raises(ValueError, match="emotion"):
        m(torch.randn(2, 8, 57), torch.tensor([0, 9]))
