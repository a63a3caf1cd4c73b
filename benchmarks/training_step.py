"""Training step time, peak memory and tokens/s for stage 1 (MotionVQVAE) and stage 2 (CrossModalTransformer).

Models are built from ``configs/paper.yaml`` (paper sizes). A step is forward + loss + backward + AdamW
update on random inputs shaped like the training windows; stage 2 includes the frozen VQ-VAE encoding of
its targets (``TransformerObjective``), as in the training flow. On CPU the batch is reduced (recorded).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks.common import device, mib, paper_config, peak_memory, time_call
from emotalker.configs.constants import FACE_DIM
from emotalker.configs.schema import PipelineConfig

TARGET = "report only: step time, peak memory and tokens/s at paper size"


def _optimizer_step(
    objective: Any, model: torch.nn.Module, data: dict[str, Any], opt: torch.optim.Optimizer
) -> Any:
    """A closure running one training step of ``objective(model, batch, step)`` on the fixed batch."""

    def step() -> None:
        loss, _ = objective(model, data, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def stage1_step(cfg: PipelineConfig, batch: int, dev: str) -> tuple[Any, dict[str, Any]]:
    """A closure running one stage-1 training step, and the random batch it uses."""
    from emotalker.tasks.training.vqvae import build_vqvae, vqvae_loss

    torch.manual_seed(0)
    model = build_vqvae(cfg).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.vqvae.lr)
    w = cfg.train.vqvae.window
    data = {
        "face": torch.randn(batch, w, FACE_DIM, device=dev),
        "label": torch.randint(0, 8, (batch,), device=dev),
    }

    return _optimizer_step(vqvae_loss, model, data, opt), data


def stage2_step(cfg: PipelineConfig, batch: int, dev: str) -> tuple[Any, dict[str, Any]]:
    """A closure running one stage-2 training step (frozen VQ-VAE targets), and its random batch."""
    from emotalker.tasks.training.transformer import TransformerObjective, build_transformer
    from emotalker.tasks.training.vqvae import build_vqvae

    torch.manual_seed(0)
    vq = build_vqvae(cfg).to(dev)
    centres = torch.randn(cfg.audio.kmeans_k, cfg.transformer.audio_dim).numpy()
    model = build_transformer(cfg, vq, centres).to(dev).train()
    objective = TransformerObjective(vq)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.transformer.lr)
    w = cfg.train.transformer.window
    data = {
        "face": torch.randn(batch, w, FACE_DIM, device=dev),
        "ref": torch.randn(batch, FACE_DIM, device=dev),  # the start token's reference frame
        # HuBERT features and tokens at their native 50 Hz: 2 frames per video frame
        "audio": torch.randn(batch, 2 * w, cfg.transformer.audio_dim, device=dev),
        "tokens": torch.randint(0, cfg.audio.kmeans_k, (batch, 2 * w), device=dev),
        "label": torch.randint(0, 8, (batch,), device=dev),
    }

    return _optimizer_step(objective, model, data, opt), data


def measure(cfg: PipelineConfig, stage: str, batch: int, dev: str, repeats: int) -> dict[str, Any]:
    """Median step time, peak memory of the timed steps, frames/s and tokens/s for one stage."""
    make = stage1_step if stage == "stage1" else stage2_step
    step, _ = make(cfg, batch, dev)
    # the first step is inside the probe: it allocates gradients and optimizer state, and later steps
    # reuse freed activation memory, so a probe started after it would see almost nothing
    with peak_memory(dev) as mem:
        step()
        t = time_call(step, repeats, warmup=0)
    window = cfg.train.vqvae.window if stage == "stage1" else cfg.train.transformer.window
    per_token = 2**cfg.vqvae.down_t
    return {
        "batch": batch,
        "window_frames": window,
        "step_s": t["median_s"],
        "step_times_s": t["times_s"],
        "steps_per_s": 1.0 / t["median_s"],
        "frames_per_s": batch * window / t["median_s"],
        "tokens_per_s": batch * (window // per_token) / t["median_s"],
        "samples_per_s": batch / t["median_s"],
        "peak_memory_mib": mib(mem["peak_bytes"]),
        "memory_method": mem["method"],
    }


def step_batches(cfg: PipelineConfig, dev: str, quick: bool) -> dict[str, int]:
    """The batch per stage: the paper's on GPU, one a CPU can step in reasonable time otherwise."""
    paper_batch = {"stage1": cfg.train.vqvae.batch_size, "stage2": cfg.train.transformer.batch_size}
    cpu_batch = {"stage1": 4, "stage2": 2} if quick else {"stage1": 32, "stage2": 8}
    return {s: b if dev == "cuda" else min(b, cpu_batch[s]) for s, b in paper_batch.items()}


def consumption(cfg: PipelineConfig, dev: str, quick: bool) -> dict[str, dict[str, Any]]:
    """How fast each stage consumes training windows (what a loader must keep up with)."""
    out = {}
    for stage, b in step_batches(cfg, dev, quick).items():
        m = measure(cfg, stage, b, dev, repeats=1 if quick else 3)
        out[stage] = {"batch": b, "steps_per_s": m["steps_per_s"], "samples_per_s": m["samples_per_s"]}
    return out


def run(quick: bool = False) -> dict[str, Any]:
    """Both stages at paper size (quick: demo size) with the paper batch on GPU, reduced on CPU."""
    from benchmarks.common import demo_config

    dev = device()
    cfg = demo_config() if quick else paper_config()
    repeats = 2 if quick else 5
    paper_batch = {"stage1": cfg.train.vqvae.batch_size, "stage2": cfg.train.transformer.batch_size}
    batches = step_batches(cfg, dev, quick)
    results = {s: measure(cfg, s, batches[s], dev, repeats) for s in ("stage1", "stage2")}
    params = {
        "config": "configs/demo.yaml" if quick else "configs/paper.yaml",
        "paper_batch": paper_batch,
        "batch": batches,
        "batch_reduced": dev == "cpu" and batches != paper_batch,
        "repeats": repeats,
        "token": f"one motion token = {2**cfg.vqvae.down_t} frames (VQ-VAE downsampling)",
    }
    metrics = {}
    for s, r in results.items():
        for k in ("step_s", "tokens_per_s", "frames_per_s", "peak_memory_mib"):
            metrics[f"{s}_{k}"] = r[k]
    assert all(np.isfinite(v) for v in metrics.values())
    return {"params": params, "metrics": metrics, "stages": results, "target": TARGET, "target_met": None}
