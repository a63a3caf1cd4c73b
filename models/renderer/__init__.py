"""SadTalker's face renderer (``src/facerender``) in plain PyTorch, loadable from the released checkpoints."""

from emotalker.models.renderer.checkpoints import (
    CheckpointError,
    load_facerender_weights,
    load_mapping_weights,
)
from emotalker.models.renderer.face_renderer import (
    COEFF_NC,
    SEMANTIC_RADIUS,
    FaceRenderer,
    RendererWidths,
    coefficient_windows,
)
from emotalker.models.renderer.generator import OcclusionAwareSPADEGenerator
from emotalker.models.renderer.keypoints import HEEstimator, KPDetector
from emotalker.models.renderer.mapping import MappingNet

__all__ = [
    "COEFF_NC",
    "SEMANTIC_RADIUS",
    "CheckpointError",
    "FaceRenderer",
    "HEEstimator",
    "KPDetector",
    "MappingNet",
    "OcclusionAwareSPADEGenerator",
    "RendererWidths",
    "coefficient_windows",
    "load_facerender_weights",
    "load_mapping_weights",
]
