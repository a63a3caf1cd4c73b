"""Overrides that move ``configs/demo.yaml`` under another root, for tests and benchmarks.

demo.yaml keeps its synthetic mirror and stand-in models under ``data/demo``; the demo-data flow writes
them where the config points, so relocating a run means pointing every one of those paths at the root.
"""

from __future__ import annotations

from pathlib import Path


def demo_input_overrides(root: str | Path) -> list[str]:
    """The ground-truth mirror and stand-in model paths of a demo-data run under ``root``."""
    return [
        f"face.ground_truth_dir={root}/mirror/ground_truth",
        f"face.deep3dface_checkpoint={root}/assets/deep3dface/epoch_20.pth",
        f"face.lm3d_mat={root}/assets/deep3dface/similarity_Lm3D_all.mat",
        f"face.face_alignment_dir={root}/assets/torch_home/hub/checkpoints",
        f"audio.emotion_model={root}/assets/hubert-emotion",
        f"audio.content_model={root}/assets/hubert-content",
        f"render.checkpoint={root}/assets/sadtalker/SadTalker_V0.0.2_256.safetensors",
        f"lip.init_checkpoint={root}/assets/sadtalker/SadTalker_V0.0.2_256.safetensors",
        f"render.mapping_checkpoint={root}/assets/sadtalker/mapping_00229-model.pth.tar",
        f"render.mapping_full_checkpoint={root}/assets/sadtalker/mapping_00109-model.pth.tar",
        f"eval.syncnet_checkpoint={root}/assets/syncnet/syncnet_v2.model",
        f"eval.esr9_dir={root}/assets/esr9",
    ]


def relocated_demo_overrides(root: str | Path) -> list[str]:
    """demo.yaml with its data, inputs and MLflow database all under ``root``."""
    return [
        f"paths.root={root}",
        f"download.urls_file={root}/mirror",
        *demo_input_overrides(root),
        f"mlflow.tracking_uri=sqlite:///{root}/mlflow.db",
    ]
