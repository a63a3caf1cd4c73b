"""Generation real-time factor and peak memory of ``EmoTalker.generate`` for short and long audio.

Paper-size models from ``configs/paper.yaml`` with random weights; random inputs at 25 fps (HuBERT emotion
features, k-means tokens, mel windows). Linear-or-better growth: time(long)/time(short) and
memory(long)/memory(short) must not exceed the length ratio (with 15% timing tolerance).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from benchmarks.common import demo_config, device, mib, paper_config, peak_memory, time_call

TARGET = "time and peak memory grow at most linearly with audio length (ratio <= length ratio x 1.15)"


def build(cfg: Any, dev: str) -> Any:
    """EmoTalker at the config's sizes with random weights."""
    from emotalker.models import EmoTalker, LipBranch
    from emotalker.tasks.training.transformer import build_transformer
    from emotalker.tasks.training.vqvae import build_vqvae

    torch.manual_seed(0)
    vq = build_vqvae(cfg)
    centres = np.random.default_rng(0).standard_normal((cfg.audio.kmeans_k, cfg.transformer.audio_dim))
    tr = build_transformer(cfg, vq, centres.astype(np.float32))
    return EmoTalker(vq, tr, LipBranch.from_config(cfg.lip)).to(dev).eval()  # no SadTalker file needed


def _inputs(cfg: Any, t: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(t)
    return {
        "reference": rng.standard_normal(70).astype(np.float32),
        # HuBERT features and tokens at their native rate: 2t - 1 frames for t video frames
        "emotion_audio_feats": rng.standard_normal((2 * t - 1, cfg.transformer.audio_dim)).astype(np.float32),
        "content": rng.integers(0, cfg.audio.kmeans_k, 2 * t - 1),
        "mel_windows": rng.standard_normal((t, 80, 16)).astype(np.float32),
    }


def run(quick: bool = False) -> dict[str, Any]:
    """RTF and peak memory at two lengths and their growth ratios."""
    dev = device()
    cfg = demo_config() if quick else paper_config()
    lengths_s = [2.0, 6.0] if quick else [10.0, 60.0]
    repeats = 1 if quick else 3
    model = build(cfg, dev)
    model.generate(**_inputs(cfg, 25))  # warm-up
    res: dict[str, Any] = {}
    for secs in lengths_s:
        t = int(secs * 25)
        x = _inputs(cfg, t)
        with peak_memory(dev) as mem:
            out = model.generate(**x)
        assert out.shape == (t, 70) and np.isfinite(out).all()
        tm = time_call(lambda x=x: model.generate(**x), repeats, warmup=0)
        res[f"{secs:g}s"] = {
            "frames": t,
            "time_s": tm["median_s"],
            "times_s": tm["times_s"],
            "rtf": tm["median_s"] / secs,
            "peak_memory_mib": mib(mem["peak_bytes"]),
            "memory_method": mem["method"],
        }
    short, long = (res[f"{s:g}s"] for s in lengths_s)
    length_ratio = lengths_s[1] / lengths_s[0]
    time_growth = long["time_s"] / short["time_s"]
    mem_growth = long["peak_memory_mib"] / max(short["peak_memory_mib"], 1.0)  # floor: 1 MiB
    metrics = {
        f"rtf_{lengths_s[0]:g}s": short["rtf"],
        f"rtf_{lengths_s[1]:g}s": long["rtf"],
        f"peak_memory_mib_{lengths_s[0]:g}s": short["peak_memory_mib"],
        f"peak_memory_mib_{lengths_s[1]:g}s": long["peak_memory_mib"],
        "time_growth": time_growth,
        "memory_growth": mem_growth,
        "length_ratio": length_ratio,
    }
    return {
        "params": {
            "config": "configs/demo.yaml" if quick else "configs/paper.yaml",
            "lengths_s": lengths_s,
            "fps": 25,
            "max_context_tokens": 64,
            "repeats": repeats,
        },
        "metrics": metrics,
        "lengths": res,
        "target": TARGET,
        "target_met": bool(time_growth <= 1.15 * length_ratio and mem_growth <= 1.15 * length_ratio),
    }
