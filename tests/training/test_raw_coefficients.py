"""Issue 26 point 2: stage 1 sees raw Deep3DFace coefficients by default (the paper and the authors'
dataset normalise nothing); z-scoring is a switch, and validation MSE (Table 3's VQ MSE) is in raw units
either way."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from emotalker.configs.constants import FACE_INDICES
from emotalker.configs.schema import PipelineConfig, VQVAEConfig, load_config
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.manifest import Manifest
from emotalker.storage.workspace import Workspace
from emotalker.storage.zarr_store import StoreRoot
from emotalker.tasks.training.vqvae import FaceNormalizer, vqvae_datasets, vqvae_validator

torch.set_num_threads(1)


def world(tmp_path: Path, *overrides: str) -> PipelineConfig:
    cfg = load_config(None, [f"paths.root={tmp_path}", "train.vqvae.window=8", *overrides])
    ids = [f"M003_front_{e}_level_1_00{i}" for i, e in enumerate(("happy", "neutral", "sad"))]
    Manifest(cfg.paths.resolve("manifest")).upsert(
        {
            "clip_id": c,
            "actor": "M003",
            "view": "front",
            "emotion": c.split("_")[2],
            "level": 1,
            "sentence": c[-3:],
        }
        for c in ids
    )
    (tmp_path / "split.json").write_text(json.dumps({"train": ids[:2], "val": ids[2:], "test": []}))
    store = StoreRoot.from_paths(cfg.paths).store("face")
    rng = np.random.default_rng(0)
    for i, c in enumerate(ids):  # pose/translation dims far larger than expression, as Deep3DFace's
        motion = rng.standard_normal((16, 70)).astype(np.float32) * (1 + 20 * (np.arange(70) >= 64)) + i
        store.write_clip(c, {"motion": motion}, attrs={"n_frames": 16})
    return cfg


def test_stage1_trains_on_raw_coefficients_by_default(tmp_path: Path) -> None:
    assert PipelineConfig().train.vqvae.normalize_face is False
    cfg = world(tmp_path)
    train, _, norm, stats = vqvae_datasets(cfg, Workspace.from_paths(cfg.paths))
    raw = StoreRoot.from_paths(cfg.paths).store("face").read_clip(train.window_at(0)[0], ["motion"])["motion"]
    s = train.window_at(0)[1]
    assert np.allclose(train[0]["face"].numpy(), raw[s : s + 8, list(FACE_INDICES)])
    assert np.all(norm.mean == 0) and np.all(norm.std == 1)
    assert stats.std[-1] > 5 * stats.std[0]  # the statistics are still measured (mean-pose baseline)
    switched = world(tmp_path / "z", "train.vqvae.normalize_face=true")
    train_z, _, norm_z, _ = vqvae_datasets(switched, Workspace.from_paths(switched.paths))
    assert np.allclose(train_z[0]["face"].numpy(), norm_z(raw[s : s + 8]), atol=1e-5)
    assert not np.allclose(norm_z.std, 1)


def test_validation_mse_is_in_raw_units_whatever_the_switch() -> None:
    torch.manual_seed(0)
    vq = MotionVQVAE.from_config(VQVAEConfig(), codebook_size=16, code_dim=8, width=16, depth=1).eval()
    x = torch.randn(4, 8, 57)
    batches = [{"face": x, "label": torch.zeros(4, dtype=torch.long)}]
    stats = FaceNormalizer(np.full(57, 1.0, np.float32), np.full(57, 3.0, np.float32))
    with torch.no_grad():
        recon = vq(x)["recon"]
        plain = vqvae_validator(FaceNormalizer.identity(), stats)(vq, batches)
        z = vqvae_validator(stats, stats)(vq, batches)  # the same tensors read as z-scores (std 3)
    mse = float(((recon - x) ** 2).mean())
    assert np.isclose(plain["val/recon_mse"], mse, rtol=1e-5) and plain["val/loss"] == plain["val/recon_mse"]
    assert np.isclose(z["val/recon_mse"], 9 * mse, rtol=1e-5)  # back to raw units: x 3^2
    assert np.isclose(plain["val/mean_pose_mse"], float(((x - 1) ** 2).mean()), rtol=1e-5)
