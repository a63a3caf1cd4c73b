"""Zarr window reader throughput vs the training step's consumption, and store size vs raw ``.npy``.

Feature stores shaped like the pipeline's (face motion (T,70), HuBERT emotion features (T,audio_dim),
tokens (T,) int16) are written for MEAD-like clip lengths; the stage-2 ``WindowDataset`` (face + audio +
tokens, with the face normaliser) is read in random order with one process (``num_workers=0``). The
consumption is the measured stage-1 / stage-2 step rate times the batch (see training_step).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import demo_config, device, du, paper_config, time_call
from benchmarks.training_step import consumption as training_consumption
from emotalker.configs.schema import PipelineConfig

TARGET = "loader samples/s >= training consumption (steps/s x batch) with num_workers=0, each config"


def _write_stores(root: Path, cfg: PipelineConfig, n_clips: int, seed: int) -> tuple[list[str], dict, dict]:
    from emotalker.storage.zarr_store import FeatureStore

    rng = np.random.default_rng(seed)
    stores = {f: FeatureStore(root, f) for f in ("face", "hubert_emotion", "tokens")}
    raw_bytes = {f: 0 for f in stores}
    ids = []
    for i in range(n_clips):
        t = int(rng.integers(75, 150))  # 3-6 s at 25 fps
        cid = f"clip_{i:04d}"
        motion = np.cumsum(0.05 * rng.standard_normal((t, 70)), axis=0).astype(np.float32)  # smooth
        # HuBERT features and tokens at their native 50 Hz: 2t - 1 frames for t video frames
        feats = rng.standard_normal((2 * t - 1, cfg.transformer.audio_dim)).astype(np.float32)
        tokens = rng.integers(0, cfg.audio.kmeans_k, 2 * t - 1).astype(np.int16)
        stores["face"].write_clip(cid, {"motion": motion})
        stores["hubert_emotion"].write_clip(cid, {"feats": feats})
        stores["tokens"].write_clip(cid, {"tokens": tokens})
        for f, arr in (("face", motion), ("hubert_emotion", feats), ("tokens", tokens)):
            npy = root / "npy" / f / f"{cid}.npy"
            npy.parent.mkdir(parents=True, exist_ok=True)
            np.save(npy, arr.astype(np.float32))
            raw_bytes[f] += npy.stat().st_size
        ids.append(cid)
    zarr_bytes = {f: du(Path(s.url.removeprefix("file://"))) for f, s in stores.items()}
    return ids, stores, {"zarr_bytes": zarr_bytes, "npy_float32_bytes": raw_bytes}


def _one_config(name: str, cfg: PipelineConfig, n_clips: int, reads: int, dev: str, quick: bool) -> dict:
    from emotalker.storage.windows import WindowDataset
    from emotalker.tasks.training.vqvae import FaceNormalizer

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        ids, stores, sizes = _write_stores(root, cfg, n_clips, seed=0)
        norm = FaceNormalizer(np.zeros(57, np.float32), np.ones(57, np.float32))
        w = cfg.train.transformer.window
        src = {
            "face": (stores["face"], "motion"),
            "audio": (stores["hubert_emotion"], "feats", 2),
            "tokens": (stores["tokens"], "tokens", 2),
        }
        ds = WindowDataset(src, ids, w, transforms={"face": norm})
        order = np.random.default_rng(1).permutation(len(ds))
        order = np.resize(order, reads)

        def read_all() -> None:
            for i in order:
                ds[int(i)]

        t = time_call(read_all, 3 if not quick else 1, warmup=0 if quick else 1)
        loader_sps = reads / t["median_s"]
    consumption = training_consumption(cfg, dev, quick)
    need = max(c["samples_per_s"] for c in consumption.values())
    z, r = sizes["zarr_bytes"], sizes["npy_float32_bytes"]
    return {
        "config": name,
        "window": w,
        "audio_dim": cfg.transformer.audio_dim,
        "clips": n_clips,
        "windows": len(ids),
        "reads": reads,
        "loader_samples_per_s": loader_sps,
        "consumption": consumption,
        "loader_over_consumption": loader_sps / need,
        "store": {
            **sizes,
            "zarr_total_bytes": sum(z.values()),
            "npy_total_bytes": sum(r.values()),
            "zarr_over_npy": sum(z.values()) / sum(r.values()),
        },
    }


def run(quick: bool = False) -> dict[str, Any]:
    """Loader vs consumption and store sizes at the demo and paper configs."""
    dev = device()
    n_clips = 6 if quick else 60
    reads = 20 if quick else 400
    configs = {"demo": demo_config(), "paper": paper_config()}
    results = {name: _one_config(name, cfg, n_clips, reads, dev, quick) for name, cfg in configs.items()}
    metrics = {}
    for name, r in results.items():
        metrics[f"{name}_loader_samples_per_s"] = r["loader_samples_per_s"]
        metrics[f"{name}_consumption_samples_per_s"] = max(
            c["samples_per_s"] for c in r["consumption"].values()
        )
        metrics[f"{name}_loader_over_consumption"] = r["loader_over_consumption"]
        metrics[f"{name}_zarr_over_npy"] = r["store"]["zarr_over_npy"]
    return {
        "params": {
            "clips": n_clips,
            "reads": reads,
            "num_workers": 0,
            "source": "stage-2 WindowDataset: face motion + HuBERT emotion feats + tokens",
            "consumption_batch_reduced_on_cpu": dev == "cpu",
        },
        "metrics": metrics,
        "configs": results,
        "target": TARGET,
        "target_met": bool(all(r["loader_over_consumption"] >= 1.0 for r in results.values())),
        "notes": "npy sizes store every array (tokens too) as float32; HuBERT features are random normals "
        "here (incompressible), motion is a smooth random walk.",
    }
