"""The face family: 3DMM coefficients, 70-dim motion, landmarks and crop parameters per video frame.

From the configured ``face.source``: Deep3DFace extraction (``face_coeffs.py``), imported Deep3DFace
``.mat`` files, or the synthetic set's ground truth.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from emotalker.configs.constants import COEFF_DIM, FPS, MOTION_DIM
from emotalker.configs.fingerprint import file_signature, fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.features.spec import ArraySpec, ClipOutputs, FeatureFamily, StoreSpec
from emotalker.tasks.features.workers import cached_model, each_clip, video_rate_attrs


def face_fingerprint(cfg: PipelineConfig) -> str:
    f = cfg.face
    parts: list[Any] = ["face-v1", f.source, f.missing_face]
    if f.source == "extract":
        parts += [
            file_signature(f.deep3dface_checkpoint),
            file_signature(f.lm3d_mat),
            f.face_detector,
            file_signature(f.face_alignment_dir) if f.face_alignment_dir else "torch-hub",
        ]
    elif f.source == "import":
        parts.append(file_signature(f.import_dir) if f.import_dir else None)  # re-exported files restale
    else:
        parts.append(file_signature(f.ground_truth_dir) if f.ground_truth_dir else None)
    return fingerprint(*parts)


def face_settings(cfg: PipelineConfig) -> dict[str, Any]:
    return cfg.face.model_dump(mode="json")


def check_face_assets(cfg: PipelineConfig) -> None:
    """Fail before any Dask work when an extraction asset is missing, naming it and where to get it.

    Otherwise every clip would be recorded as failed with the same error in ``face.failures.json``.
    """
    if cfg.face.source != "extract":
        return
    from emotalker.models.deep3dface import CHECKPOINT_HELP
    from emotalker.tasks.features.face_coeffs import FA_FILES, FA_URLS, fa_model_dir, load_lm3d

    f = cfg.face
    if not Path(f.deep3dface_checkpoint).is_file():
        raise FileNotFoundError(
            f"Deep3DFace checkpoint not found at {f.deep3dface_checkpoint}: {CHECKPOINT_HELP}"
        )
    load_lm3d(f.lm3d_mat)  # raises naming the file and its source
    fa_dir = fa_model_dir(f.face_alignment_dir)
    needed = ["2DFAN-4"] + (["sfd"] if f.face_detector == "sfd" else [])
    for key in needed:
        if not (fa_dir / FA_FILES[key]).is_file():
            raise FileNotFoundError(
                f"face-alignment model {FA_FILES[key]} not found in {fa_dir}; download {FA_URLS[key]} there "
                "(or set face.face_alignment_dir / TORCH_HOME)"
            )


def face_extractor(face_cfg: dict[str, Any], device: str) -> Any:
    """The ``FaceCoeffExtractor`` for ``face_cfg`` (``FaceConfig`` as a dict), built once per process:
    the feature workers and generation extract coefficients with the same models and settings."""
    from emotalker.models.deep3dface import load_recon_net
    from emotalker.tasks.features.face_coeffs import FaceCoeffExtractor, LandmarkDetector, load_lm3d

    def build() -> Any:
        recon = load_recon_net(face_cfg["deep3dface_checkpoint"], device)
        detector = LandmarkDetector(
            device=device,
            face_detector=face_cfg["face_detector"],
            batch_size=face_cfg["batch_size"],
            model_dir=face_cfg.get("face_alignment_dir"),
            flip_input=face_cfg["flip_input"],
            detect_max_side=face_cfg["detect_max_side"],
        )
        return FaceCoeffExtractor(
            recon,
            detector,
            load_lm3d(face_cfg["lm3d_mat"]),
            device=device,
            batch_size=face_cfg["batch_size"],
            missing_face=face_cfg["missing_face"],
        )

    # keyed by every setting and the model files' signatures: a long-lived worker must not reuse a model
    # built from a checkpoint that has since been replaced, or with other settings
    files = [face_cfg["deep3dface_checkpoint"], face_cfg["lm3d_mat"], face_cfg.get("face_alignment_dir")]
    key = ("face", json.dumps([face_cfg, [file_signature(f) for f in files if f]], sort_keys=True), device)
    return cached_model(key, build)


def resample_frames(x: np.ndarray, src_fps: float, n_out: int, dst_fps: float = FPS) -> np.ndarray:
    """Linear interpolation of per-frame values at the destination frame times (edge-clamped)."""
    t_src = np.arange(len(x)) / src_fps
    t_dst = np.arange(n_out) / dst_fps
    flat = x.reshape(len(x), -1)
    out = np.stack([np.interp(t_dst, t_src, flat[:, j]) for j in range(flat.shape[1])], axis=1)
    return out.reshape((n_out,) + x.shape[1:]).astype(np.float32)


def face_arrays(clip: dict[str, Any], face_cfg: dict[str, Any], device: str) -> dict[str, np.ndarray]:
    """The face family for one clip, from the configured source (extract / import / synthetic GT)."""
    from emotalker.models.motion import coeffs_to_motion, motion_to_coeffs  # the models package loads torch

    n = int(clip["n_frames"])
    source = face_cfg["source"]
    if source == "extract":
        from emotalker.tasks.media import read_video_frames

        frames, _ = read_video_frames(clip["prepared_video"])
        out = face_extractor(face_cfg, device).extract(frames[:n], name=clip["clip_id"])
        return {k: np.asarray(v) for k, v in out.items()}
    if source == "import":
        from emotalker.tasks.features.coeff_import import import_deep3dface_mat

        root = Path(face_cfg["import_dir"])
        candidates = [root / clip["actor"] / f"{clip['clip_id']}.mat", root / f"{clip['clip_id']}.mat"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise FileNotFoundError(f"no imported coefficients for {clip['clip_id']}: looked at {candidates}")
        coeffs = import_deep3dface_mat(found)[:n].astype(np.float32)
    elif source == "synthetic_ground_truth":
        from emotalker.tasks.features.ground_truth import load_ground_truth

        motion30 = load_ground_truth(Path(face_cfg["ground_truth_dir"]), clip)
        coeffs = motion_to_coeffs(resample_frames(motion30, 30.0, n))
    else:
        raise ValueError(f"unknown face.source {source!r}")
    if len(coeffs) < n:
        raise ValueError(f"{clip['clip_id']}: {len(coeffs)} coefficient frames for {n} video frames")
    return {
        "coeffs": coeffs,
        "motion": coeffs_to_motion(coeffs).astype(np.float32),
        "valid": np.ones(n, bool),
    }


def face_outputs(
    clips: list[dict[str, Any]], face_cfg: dict[str, Any], device: str, store_root: StoreRoot
) -> Iterator[tuple[str, ClipOutputs | Exception]]:
    def outputs(clip: dict[str, Any]) -> ClipOutputs:
        return {"face": (face_arrays(clip, face_cfg, device), video_rate_attrs(clip))}

    return each_clip(clips, outputs)


FAMILY = FeatureFamily(
    name="face",
    flow="face",
    stores=(
        StoreSpec(
            "face",
            {
                "coeffs": ArraySpec((COEFF_DIM,), "float32"),
                "motion": ArraySpec((MOTION_DIM,), "float32"),
                "valid": ArraySpec((), "bool"),
                "landmarks": ArraySpec((68, 2), "float32", required=False),
                "trans_params": ArraySpec((5,), "float32", required=False),
            },
        ),
    ),
    fingerprint=face_fingerprint,
    compute=face_outputs,
    settings=face_settings,
    uses_device=True,
    check_assets=check_face_assets,
)
