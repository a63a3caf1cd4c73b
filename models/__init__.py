"""Plain PyTorch models of EmoTalker (no Prefect/MLflow): VQ-VAE, cross-modal Transformer, lip branch."""

from emotalker.models.emotalker import EmoTalker
from emotalker.models.lip import AudioEncoder, CheckpointError, ExpNet, LipBranch, load_sadtalker_audio2exp
from emotalker.models.masks import (
    alibi_biased_mask,
    alignment_mask,
    alignment_window,
    causal_mask,
    eq7_k,
)
from emotalker.models.quantizer import EMAQuantizer, QuantizerOutput
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE

__all__ = [
    "AudioEncoder",
    "CheckpointError",
    "CrossModalTransformer",
    "EMAQuantizer",
    "EmoTalker",
    "ExpNet",
    "LipBranch",
    "MotionVQVAE",
    "QuantizerOutput",
    "alibi_biased_mask",
    "alignment_mask",
    "alignment_window",
    "causal_mask",
    "eq7_k",
    "load_sadtalker_audio2exp",
]
