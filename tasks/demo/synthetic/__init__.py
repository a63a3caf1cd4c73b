"""Built-in MEAD-shaped demo data: espeak-ng speech, a cartoon face rendered from ground-truth motion."""

from emotalker.tasks.demo.synthetic.mead import (
    GroundTruthError,
    clip_key,
    generate_mead,
    ground_truth_path,
    load_ground_truth,
    read_ground_truth,
)

__all__ = [
    "GroundTruthError",
    "clip_key",
    "generate_mead",
    "ground_truth_path",
    "load_ground_truth",
    "read_ground_truth",
]
