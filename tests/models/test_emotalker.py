"""End-to-end inference wrapper on tiny models: any length T -> (T, 70) finite motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalker.configs.constants import FACE_INDICES, LIP_INDICES
from emotalker.models import CrossModalTransformer, EmoTalker, LipBranch, MotionVQVAE

torch.set_num_threads(1)


def make() -> EmoTalker:
    torch.manual_seed(0)
    vq = MotionVQVAE(codebook_size=16, code_dim=8, width=16, depth=1)
    tr = CrossModalTransformer(d_model=16, n_layers=1, n_heads=2, ff_dim=32, dropout=0.0, audio_dim=12,
                               code_dim=8, content_vocab=5)  # fmt: skip
    lip = LipBranch()
    # the full Wav2Lip encoder costs ~8 ms per frame on one core; a cheap stand-in with the same
    # (N, 1, 80, 16) -> (N, 512, 1, 1) contract keeps this test fast (the real one is tested in test_lip.py)
    lip.expnet.audio_encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(1, 512, 1))
    mean = np.full(57, 2.0, dtype=np.float32)
    return EmoTalker(vq, tr, lip, face_mean=mean, face_std=np.ones(57, dtype=np.float32))


@pytest.mark.parametrize("t", [1, 7, 1003])
def test_generate_any_length(t: int) -> None:
    model = make()
    rng = np.random.default_rng(0)
    out = model.generate(
        reference=rng.standard_normal(70).astype(np.float32),
        emotion_audio_feats=rng.standard_normal((t, 12)).astype(np.float32),
        content=rng.integers(0, 5, t),
        mel_windows=rng.standard_normal((t, 80, 16)).astype(np.float32),
        max_context=16,
    )
    assert out.shape == (t, 70) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # the face part is decoded from codes (de-normalised), the lip part comes from the lip branch
    assert not np.allclose(out[:, list(FACE_INDICES)], 0)
    assert not np.allclose(out[:, list(LIP_INDICES)], 0)


def test_bad_inputs() -> None:
    model = make()
    with pytest.raises(ValueError, match="mel_windows"):
        model.generate(np.zeros(70), np.zeros((8, 12)), np.zeros(8, dtype=np.int64), np.zeros((7, 80, 16)))
    with pytest.raises(ValueError, match="reference"):
        model.generate(np.zeros(57), np.zeros((8, 12)), np.zeros(8, dtype=np.int64), np.zeros((8, 80, 16)))
    with pytest.raises(ValueError, match="content"):
        model.generate(np.zeros(70), np.zeros((8, 12)), np.zeros(6, dtype=np.int64), np.zeros((8, 80, 16)))
