"""Randomly initialised SadTalker renderer files in the released layouts (tests, demo, benchmarks).

Real checkpoints cannot be downloaded here; these exercise the real loaders: one
``SadTalker_V0.0.2_256.safetensors``-style file with all five prefixes, the older facevid2vid
``.pth.tar`` dict and both mapping-net dicts. ``widths`` may be narrower than the released sizes.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from emotalker.configs.schema import RendererWidthsConfig
from emotalker.models.deep3dface import ReconNet
from emotalker.models.lip import ExpNet
from emotalker.models.pose_vae import PoseVAE
from emotalker.models.renderer import FaceRenderer, HEEstimator, RendererWidths

FILE_NAMES = {
    "safetensors": "SadTalker_V0.0.2_256.safetensors",
    "facevid2vid": "facevid2vid_00189-model.pth.tar",
    "mapping": "mapping_00229-model.pth.tar",
    "mapping_full": "mapping_00109-model.pth.tar",
}


def _widths(widths: RendererWidths | Mapping[str, int] | Any | None) -> RendererWidths:
    if isinstance(widths, RendererWidths):
        return widths
    return RendererWidths.from_config(RendererWidthsConfig() if widths is None else widths)


def _spread_norms(module: torch.nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics, so a wrongly mapped buffer changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.05)
            m.running_var.copy_(1 + torch.rand(m.num_features, generator=g) * 0.2)


def write_renderer_standins(
    out_dir: str | Path,
    widths: RendererWidths | Mapping[str, int] | Any | None = None,
    seed: int = 0,
    he_widths: tuple[int, int] = (64, 2048),
    layouts: tuple[str, ...] = ("safetensors", "facevid2vid", "mapping", "mapping_full"),
) -> dict[str, Path]:
    """Write the chosen released layouts of one random renderer under ``out_dir``; returns paths by layout.

    The safetensors file also holds a random Deep3DFace ``face_3drecon.``, ExpNet ``audio2exp.netG.`` and
    PoseVAE ``audio2pose.`` (all 419 tensors), each loadable strictly (``face.deep3dface_checkpoint``, the
    lip initialisation, the SadTalker method of ``generate`` / ``ablate``). ``he_widths`` =
    (block_expansion, max_features) of the facevid2vid head-pose estimator.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _widths(widths)
    torch.manual_seed(seed)
    renderer = FaceRenderer(w, layouts=(70, 73))
    _spread_norms(renderer, seed)
    paths: dict[str, Path] = {}
    if "safetensors" in layouts:
        tensors = {f"kp_extractor.{k}": v for k, v in renderer.kp_extractor.state_dict().items()}
        tensors |= {f"generator.{k}": v for k, v in renderer.generator.state_dict().items()}
        expnet, pose_vae = ExpNet(), PoseVAE()
        _spread_norms(expnet, seed + 1)  # BN statistics away from 0/1: the stand-ins' motion moves
        _spread_norms(pose_vae, seed + 2)
        tensors |= {f"audio2exp.netG.{k}": v for k, v in expnet.state_dict().items()}
        tensors |= {f"audio2pose.{k}": v for k, v in pose_vae.state_dict().items()}
        recon = ReconNet()
        for layer in recon.final_layers:  # small non-zero heads: coefficients vary per image
            torch.nn.init.normal_(layer.weight, std=0.02)
        tensors |= {f"face_3drecon.{k}": v for k, v in recon.state_dict().items()}
        paths["safetensors"] = out / FILE_NAMES["safetensors"]
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(paths["safetensors"]))
    if "facevid2vid" in layouts:
        he = HEEstimator(he_widths[0], he_widths[1], w.num_kp)
        paths["facevid2vid"] = out / FILE_NAMES["facevid2vid"]
        torch.save(
            {
                "generator": renderer.generator.state_dict(),
                "kp_detector": renderer.kp_extractor.state_dict(),
                "he_estimator": he.state_dict(),
                "discriminator": {},
                "optimizer_generator": {},
                "optimizer_discriminator": {},
                "optimizer_kp_detector": {},
                "optimizer_he_estimator": {},
                "epoch": 189,
            },
            paths["facevid2vid"],
        )
    for name, n, epoch in (("mapping", "70", 229), ("mapping_full", "73", 109)):
        if name in layouts:
            paths[name] = out / FILE_NAMES[name]
            torch.save(
                {
                    "mapping": renderer.mappings[n].state_dict(),
                    "discriminator": {},
                    "optimizer_mapping": {},
                    "optimizer_discriminator": {},
                    "epoch": epoch,
                },
                paths[name],
            )
    return paths
