"""A tiny random EmoTalker (every branch, the stage-1 emotion head included) for fast tests."""

from __future__ import annotations

import numpy as np
import torch

from emotalker.configs.schema import LipConfig, TransformerConfig, VQVAEConfig
from emotalker.models import CrossModalTransformer, EmoTalker, LipBranch, MotionVQVAE


def tiny_emotalker(max_context: int | None = 16) -> EmoTalker:
    """Seeded; face statistics mean 2, std 1; audio width 12, 5 content tokens, a cheap lip encoder."""
    torch.manual_seed(0)
    vq = MotionVQVAE.from_config(VQVAEConfig(), codebook_size=16, code_dim=8, width=16, depth=1)
    tr = CrossModalTransformer.from_config(TransformerConfig(), d_model=16, n_layers=1, n_heads=2, ff_dim=32,
                                           dropout=0.0, audio_dim=12, code_dim=8, content_vocab=5,
                                           content_dim=4)  # fmt: skip
    tr.set_content_centres(torch.randn(5, 4))
    lip = LipBranch.from_config(LipConfig())
    # the full Wav2Lip encoder costs ~8 ms per frame on one core; a cheap stand-in with the same
    # (N, 1, 80, 16) -> (N, 512, 1, 1) contract keeps tests fast (the real one is tested in test_lip.py)
    lip.expnet.audio_encoder = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Conv2d(1, 512, 1))
    mean = np.full(57, 2.0, dtype=np.float32)
    return EmoTalker(
        vq, tr, lip, face_mean=mean, face_std=np.ones(57, dtype=np.float32), max_context=max_context
    )
