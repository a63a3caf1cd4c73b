"""Strict loading of SadTalker's released renderer checkpoints (no pickle: safetensors or weights_only).

Layouts:
- ``SadTalker_V0.0.2_256.safetensors`` / ``_512``: flat tensors prefixed ``kp_extractor.``, ``generator.``,
  ``audio2exp.``, ``audio2pose.``, ``face_3drecon.`` (no head-pose estimator, no mapping net);
- ``facevid2vid_00189-model.pth.tar``: a dict with ``generator``, ``kp_detector``, ``he_estimator``
  state dicts (plus discriminator / optimizer states, ignored);
- ``mapping_00229-model.pth.tar`` (70 coefficients) / ``mapping_00109-model.pth.tar`` (73): a dict with
  ``mapping`` (plus discriminator / optimizer states, ignored).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from emotalker.models.renderer.keypoints import HEEstimator
from emotalker.models.weights import (
    CheckpointError,
    check_state_dict,
    load_strict,
    read_safetensors_section,
    torch_load_weights,
)

RELEASE_URL = "https://github.com/OpenTalker/SadTalker/releases/download/v0.0.2-rc"
OLD_RELEASE_URL = "https://github.com/Winfredy/SadTalker/releases/download/v0.0.2"
SAFETENSORS_PREFIXES = ("kp_extractor.", "generator.", "audio2exp.", "audio2pose.", "face_3drecon.")
WHERE_TO_GET = {
    "safetensors": f"{RELEASE_URL}/SadTalker_V0.0.2_256.safetensors (or _512)",
    "facevid2vid": f"{OLD_RELEASE_URL}/facevid2vid_00189-model.pth.tar",
    "mapping_70": f"{RELEASE_URL}/mapping_00229-model.pth.tar",
    "mapping_73": f"{RELEASE_URL}/mapping_00109-model.pth.tar",
    "audio2exp": (
        f"{RELEASE_URL}/SadTalker_V0.0.2_256.safetensors (or {OLD_RELEASE_URL}/auido2exp_00300-model.pth)"
    ),
}


WIDTHS_HINT = "wrong file, or check render.widths"


def require_file(path: str | Path, key: str, what: str) -> Path:
    """The path if it is a file, else a one-line error naming the config key and where to get the file."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{key}: {p} not found; download {WHERE_TO_GET[what]} and set {key} to it")
    return p


def load_facerender_weights(kp_extractor: nn.Module, generator: nn.Module, path: str | Path) -> str:
    """Load the keypoint detector and generator strictly from either released layout; returns the layout."""
    p = Path(path)
    if p.suffix == ".safetensors":
        for module, prefix in ((kp_extractor, "kp_extractor."), (generator, "generator.")):
            load_strict(module, read_safetensors_section(p, prefix), f"{p} [{prefix}]", WIDTHS_HINT)
        return "safetensors"
    ckpt = torch_load_weights(p)
    if not isinstance(ckpt, Mapping) or not {"generator", "kp_detector"} <= set(ckpt):
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(
            f"{p}: expected a facevid2vid dict with 'generator' and 'kp_detector', found {found}"
        )
    load_strict(kp_extractor, ckpt["kp_detector"], f"{p} [kp_detector]", WIDTHS_HINT)
    load_strict(generator, ckpt["generator"], f"{p} [generator]", WIDTHS_HINT)
    if "he_estimator" in ckpt:  # unused for rendering (the mapping net drives pose) but checked strictly
        he = ckpt["he_estimator"]
        check_state_dict(_he_estimator_like(he, p), he, f"{p} [he_estimator]", WIDTHS_HINT)
    return "facevid2vid"


def _he_estimator_like(state: Mapping[str, torch.Tensor], path: Path) -> HEEstimator:
    """An HEEstimator on the meta device with the widths the stored tensors imply (shape check only)."""
    try:
        be, maxf = state["conv1.weight"].shape[0], state["fc_t.weight"].shape[1]
        num_kp, bins = state["fc_exp.weight"].shape[0] // 3, state["fc_yaw.weight"].shape[0]
    except (KeyError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path} [he_estimator]: not a head-pose estimator state dict ({exc})") from exc
    with torch.device("meta"):
        return HEEstimator(int(be), int(maxf), int(num_kp), 3, int(bins))


def load_mapping_weights(mapping: nn.Module, path: str | Path) -> None:
    """Load a MappingNet strictly from ``mapping_00229`` / ``mapping_00109`` (dict key ``mapping``)."""
    p = Path(path)
    ckpt = torch_load_weights(p)
    if not isinstance(ckpt, Mapping) or "mapping" not in ckpt:
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{p}: expected a mapping checkpoint dict with key 'mapping', found {found}")
    load_strict(mapping, ckpt["mapping"], f"{p} [mapping]", WIDTHS_HINT)
