"""SadTalker's face renderer as one module: keypoint detector + mapping nets + SPADE generator.

Hyper-parameters are those of SadTalker's ``facerender.yaml``; the widths are arguments (their defaults, the
released sizes the released checkpoints need, have one home: ``configs/schema.py:RendererWidthsConfig``) so
tests and the demo can run narrow stand-ins.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from emotalker.models.renderer.generator import GeneratorSource, OcclusionAwareSPADEGenerator
from emotalker.models.renderer.keypoints import KPDetector
from emotalker.models.renderer.kinematics import transform_keypoints
from emotalker.models.renderer.mapping import MappingNet

# facerender.yaml structure (not widths): bins, blocks, the coefficient window
NUM_BINS = 66
KP_NUM_BLOCKS = 5
KP_TEMPERATURE = 0.1
KP_SCALE_FACTOR = 0.25
GEN_NUM_DOWN_BLOCKS = 2
GEN_NUM_RESBLOCKS = 6
DENSE_NUM_BLOCKS = 5
MAPPING_LAYERS = 3
SEMANTIC_RADIUS = 13  # each frame is driven by the 27 coefficient frames centred on it
COEFF_NC = {"crop": 70, "still": 70, "full": 73}  # full adds the source crop's (s, tx, ty)


@dataclass(frozen=True, kw_only=True)
class RendererWidths:
    """Channel widths; no defaults here: build with :meth:`from_config` from
    ``configs/schema.py:RendererWidthsConfig`` (facerender.yaml's released sizes by default)."""

    kp_block_expansion: int
    kp_max_features: int
    generator_block_expansion: int
    generator_max_features: int  # / reshape_depth depth slices = the appearance volume's channels
    dense_block_expansion: int
    dense_max_features: int
    dense_compress: int
    mapping_descriptor: int
    spade_hidden: int
    num_kp: int
    reshape_depth: int  # depth slices of the 3D volumes (keypoint heatmaps, appearance)

    @classmethod
    def from_config(cls, cfg: object) -> RendererWidths:
        """From ``RendererWidthsConfig`` (``render.widths``) or a dict with the same field names."""
        data = cfg.model_dump() if hasattr(cfg, "model_dump") else dict(cfg)  # type: ignore[call-overload]
        return cls(**data)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def build_kp_detector(w: RendererWidths) -> KPDetector:
    return KPDetector(
        block_expansion=w.kp_block_expansion,
        max_features=w.kp_max_features,
        num_kp=w.num_kp,
        image_channel=3,
        num_blocks=KP_NUM_BLOCKS,
        reshape_depth=w.reshape_depth,
        temperature=KP_TEMPERATURE,
        scale_factor=KP_SCALE_FACTOR,
    )


def build_generator(w: RendererWidths) -> OcclusionAwareSPADEGenerator:
    return OcclusionAwareSPADEGenerator(
        image_channel=3,
        num_kp=w.num_kp,
        block_expansion=w.generator_block_expansion,
        max_features=w.generator_max_features,
        num_down_blocks=GEN_NUM_DOWN_BLOCKS,
        reshape_depth=w.reshape_depth,
        num_resblocks=GEN_NUM_RESBLOCKS,
        dense_block_expansion=w.dense_block_expansion,
        dense_max_features=w.dense_max_features,
        dense_num_blocks=DENSE_NUM_BLOCKS,
        dense_compress=w.dense_compress,
        spade_hidden=w.spade_hidden,
    )


def build_mapping(w: RendererWidths, coeff_nc: int) -> MappingNet:
    return MappingNet(coeff_nc, w.mapping_descriptor, MAPPING_LAYERS, w.num_kp, NUM_BINS)


@dataclass
class RenderSource:
    """Per-source state computed once: canonical/source keypoints and the generator's source volume."""

    kp_canonical: torch.Tensor
    kp_source: torch.Tensor
    generator: GeneratorSource
    mode: str


class FaceRenderer(nn.Module):
    """kp_extractor + generator + one mapping net per coefficient layout (70: crop/still, 73: full)."""

    def __init__(self, widths: RendererWidths, layouts: tuple[int, ...] = (70,)) -> None:
        super().__init__()
        self.widths = widths
        self.kp_extractor = build_kp_detector(self.widths)
        self.generator = build_generator(self.widths)
        self.mappings = nn.ModuleDict({str(n): build_mapping(self.widths, n) for n in layouts})

    def mapping_for(self, mode: str) -> MappingNet:
        n = str(COEFF_NC[mode])
        if n not in self.mappings:
            raise ValueError(
                f"mode {mode!r} needs the {n}-coefficient mapping net, which this renderer lacks"
            )
        return self.mappings[n]  # type: ignore[return-value]

    @property
    def dtype(self) -> torch.dtype:
        """Precision of the generator's image-space layers (the rest runs in float32)."""
        return self.generator.image_dtype

    def prepare(self, image: torch.Tensor, source_coeffs: torch.Tensor, mode: str) -> RenderSource:
        """Source image (1, 3, H, W) in [0, 1] and its (1, 70|73) coefficients -> reusable source state."""
        mapping = self.mapping_for(mode)
        kp_canonical = self.kp_extractor(image.float())
        window = source_coeffs.float()[:, :, None].expand(-1, -1, 2 * SEMANTIC_RADIUS + 1)
        kp_source = transform_keypoints(kp_canonical, mapping(window))
        gen = self.generator.prepare(image.float(), kp_source)
        return RenderSource(kp_canonical, kp_source, gen, mode)

    def render(self, src: RenderSource, windows: torch.Tensor) -> torch.Tensor:
        """Coefficient windows (B, 70|73, 27) -> frames (B, 3, H, W) in [0, 1]."""
        he = self.mapping_for(src.mode)(windows.float())
        kp_driving = transform_keypoints(src.kp_canonical, he)
        return self.generator.render(src.generator, kp_driving)


def coefficient_windows(
    coeffs: np.ndarray, start: int, stop: int, radius: int = SEMANTIC_RADIUS
) -> np.ndarray:
    """(T, C) coefficients -> (stop - start, C, 2r + 1) windows centred on each frame, clamped at the ends."""
    t = len(coeffs)
    idx = np.clip(np.arange(start, stop)[:, None] + np.arange(-radius, radius + 1)[None, :], 0, t - 1)
    return np.ascontiguousarray(coeffs[idx].transpose(0, 2, 1))
