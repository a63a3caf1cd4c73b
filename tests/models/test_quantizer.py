"""EMA quantizer: codebook update direction, dead-code reset, straight-through gradient."""

from __future__ import annotations

import pytest
import torch

from emotalker.models.quantizer import EMAQuantizer

torch.set_num_threads(1)


def test_ema_moves_codes_towards_assigned_data() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(codebook_size=4, code_dim=2, decay=0.5, dead_threshold=0.0, init_from_data=False)
    q.codebook.copy_(torch.tensor([[0.0, 0.0], [10.0, 10.0], [-10.0, 10.0], [10.0, -10.0]]))
    q.embed_sum.copy_(q.codebook)
    target = torch.tensor([1.0, 1.0])
    z = target + 0.01 * torch.randn(64, 2)  # all nearest to code 0
    before = (q.codebook[0] - target).norm()
    q.train()
    for _ in range(10):
        out = q(z)
    assert bool((out.indices == 0).all())
    after = (q.codebook[0] - target).norm()
    assert after < 0.05 * before
    assert torch.allclose(q.codebook[1], torch.tensor([10.0, 10.0]), atol=0.5)  # unused: ~unchanged


def test_dead_codes_are_reset_from_batch() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(codebook_size=8, code_dim=3, decay=0.9, dead_threshold=0.5, init_from_data=False)
    q.codebook.copy_(torch.full((8, 3), 100.0))
    q.codebook[0] = 0.0
    q.embed_sum.copy_(q.codebook)
    q.cluster_size.fill_(1.0)
    z = torch.randn(256, 3)
    q.train()
    for _ in range(10):
        q(z)
    # codes 1..7 were never chosen (far away); their EMA count fell below 0.5 and they now sit in the data
    assert bool((q.codebook.abs().max(dim=1).values < 10).all())
    usage = q(z).usage
    assert usage.item() > 0.5


def test_straight_through_gradient_and_commitment() -> None:
    torch.manual_seed(0)
    q = EMAQuantizer(codebook_size=16, code_dim=4, decay=0.99, dead_threshold=1.0)
    z = torch.randn(2, 5, 4, requires_grad=True)
    out = q(z)
    assert out.quantized.shape == (2, 5, 4) and out.indices.shape == (2, 5)
    assert torch.allclose(out.quantized, q.lookup(out.indices), atol=1e-6)
    (out.quantized.sum() + out.commitment_loss).backward()
    assert z.grad is not None and bool((z.grad.abs() > 0).all())
    assert 1.0 <= out.perplexity.item() <= 16 and 0 < out.usage.item() <= 1


def test_eval_mode_does_not_update() -> None:
    q = EMAQuantizer(codebook_size=8, code_dim=2, decay=0.99, dead_threshold=1.0)
    q.eval()
    cb = q.codebook.clone()
    q(torch.randn(10, 2))
    assert torch.equal(cb, q.codebook) and not bool(q.initialised)


def test_bad_input() -> None:
    q = EMAQuantizer(codebook_size=8, code_dim=2, decay=0.99, dead_threshold=1.0)
    with pytest.raises(ValueError, match="last dim"):
        q(torch.randn(4, 3))
    with pytest.raises(ValueError, match="indices"):
        q.lookup(torch.tensor([8]))
