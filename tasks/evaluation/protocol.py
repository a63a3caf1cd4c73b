"""Table 1's protocol, named and fingerprinted: which EmoAcc classifier runs, and the protocol card.

Two scores are comparable only when they were measured the same way: the same test list, crop, landmark
detector, classifier and SyncNet weights and metric libraries. The card records each of these (weights by
sha256) so the report and MLflow can show it beside every score.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from pathlib import Path
from typing import Any

from emotalker.configs.constants import RENDERER_STANDIN_MARKER
from emotalker.models.esr9 import esr9_files
from emotalker.tasks.evaluation.emotion_classifier import load_emotion_classifier
from emotalker.tasks.evaluation.esr9 import load_esr9_classifier
from emotalker.tasks.features.face_coeffs import detector_dtype

LIBRARIES = (
    "torch",
    "numpy",
    "opencv-python-headless",
    "face-alignment",
    "scikit-image",
    "scipy",
    "pytorch-msssim",
    "cpbd",
)


def classifier_path(cfg: Any) -> Path | None:
    """The configured EmoAcc classifier's folder: ``eval.esr9_dir`` (esr9) or
    ``eval.emotion_classifier_checkpoint`` (huggingface); None when unset."""
    e = cfg.eval
    return e.esr9_dir if e.emotion_classifier == "esr9" else e.emotion_classifier_checkpoint


def classifier_skip_note(cfg: Any) -> str | None:
    """Why EmoAcc cannot be computed with this config, or None when the classifier is configured."""
    if classifier_path(cfg) is not None:
        return None
    if cfg.eval.emotion_classifier == "esr9":
        return (
            "skipped: needs ESR-9's 10 released state dicts (eval.esr9_dir: "
            "Net-Base-Shared_Representations.pt, Net-Branch_1..9.pt) or eval.emotion_classifier=huggingface; "
            "see EmoAcc_stage1_head"
        )
    return (
        "skipped: needs a facial-expression classifier (eval.emotion_classifier_checkpoint); "
        "see EmoAcc_stage1_head for the motion-space accuracy"
    )


def load_eval_classifier(cfg: Any, device: str) -> Any:
    """The configured EmoAcc classifier (``eval.emotion_classifier``), or None when its folder is unset."""
    path = classifier_path(cfg)
    if path is None:
        return None
    if cfg.eval.emotion_classifier == "esr9":
        return load_esr9_classifier(path, device)
    return load_emotion_classifier(path, device)


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of one file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_files(files: list[Path]) -> str:
    """One sha256 over several files (name + content hash each, in the given order)."""
    h = hashlib.sha256()
    for p in files:
        h.update(f"{p.name}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def clip_list_hash(clip_ids: list[str]) -> str:
    """sha256 of the evaluated clip ids (sorted, one a line): the same clips give the same hash."""
    return hashlib.sha256("\n".join(sorted(clip_ids)).encode()).hexdigest()


def _weights_hash(path: Path | None, folder_files: list[str] | None = None) -> str:
    if path is None:
        return "none"
    path = Path(path).expanduser()
    if path.is_file():
        return sha256_file(path)
    if not path.is_dir():
        return "missing"
    files = (
        [path / f for f in folder_files]
        if folder_files
        else sorted(p for p in path.rglob("*") if p.is_file())
    )
    return sha256_files([p for p in files if p.is_file()])


def classifier_sha256(cfg: Any) -> str:
    """sha256 of the configured EmoAcc classifier's files ("none" when unset, "missing" when absent): the
    protocol card's entry, and part of the stored real side's fingerprint (``reference.py``)."""
    e = cfg.eval
    return _weights_hash(classifier_path(cfg), esr9_files() if e.emotion_classifier == "esr9" else None)


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that compute the metrics."""
    out = {}
    for lib in LIBRARIES:
        try:
            out[lib] = importlib.metadata.version(lib)
        except importlib.metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


def protocol_card(cfg: Any, clip_ids: list[str], eval_size: int) -> dict[str, str]:
    """Everything that decides the numbers, flat (MLflow params, report table): two scores are comparable
    only when their cards match."""
    e, f = cfg.eval, cfg.face
    card = {
        "test_list_sha256": clip_list_hash(clip_ids),
        "test_clips": str(len(clip_ids)),
        "crop": "real: SadTalker croper box of the clip's first frame (authors' eval.py); renders of the "
        f"real size cut alike, others only resized; all to {eval_size}x{eval_size}",
        "frames_per_clip": "all" if e.render_max_frames is None else f"first {e.render_max_frames}",
        "landmark_detector": f"face-alignment 2D-68 ({f.face_detector} detector, flip_input={e.flip_input}, "
        f"{detector_dtype(e.detector_dtype, cfg.torch_device())})",
        "emotion_classifier": e.emotion_classifier,
        "emotion_classifier_sha256": classifier_sha256(cfg),
        "syncnet_sha256": _weights_hash(e.syncnet_checkpoint),
        "lmd": "authors' eval.py: mean |gt - gen| over raw 256x256 coordinates (F: 68 points, M: 48-67)",
    }
    return card | {f"version.{k}": v for k, v in library_versions().items()}


def standin_weights(cfg: Any) -> list[str]:
    """Which evaluation weights are the demo's random stand-ins (their writers leave a marker): numbers
    computed with them are marked in the report."""
    e, out = cfg.eval, []
    if Path(cfg.render.checkpoint).parent.joinpath(RENDERER_STANDIN_MARKER).is_file():
        out.append("renderer")
    if (
        e.emotion_classifier == "esr9"
        and e.esr9_dir is not None
        and (Path(e.esr9_dir) / ".standin").is_file()
    ):
        out.append("ESR-9")
    if e.syncnet_checkpoint is not None and Path(f"{e.syncnet_checkpoint}.standin").is_file():
        out.append("SyncNet")
    return out


def cards_match(a: dict[str, str], b: dict[str, str]) -> bool:
    """Two scores are comparable only when every entry of their protocol cards is equal."""
    return a == b
