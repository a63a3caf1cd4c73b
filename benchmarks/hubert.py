"""HuBERT feature extraction real-time factor: ``extract_hubert`` (length-bucketed) vs one clip at a time.

Two stand-ins in the real Hugging Face format: the tiny test model and a HuBERT-base-sized random model
(``HubertConfig()`` defaults: 12 layers, 768 hidden, group-norm extractor). Two clip sets: a MEAD-like set
of distinct lengths (where the group-norm rule allows no batching) and a set of equal lengths (where it
batches). The error of padding clips to a shared bucket length (the tail cropped afterwards) is measured
against the per-clip output to decide whether such bucketing would be sound for group-norm models.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import device, time_call

TARGET = "batched/length-bucketed >= 2x the one-clip-at-a-time throughput (RTF ratio)"


def _write_base(directory: Path) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(0)
    model = HubertModel(HubertConfig())  # HuBERT base sizes, feat_extract_norm="group"
    model.save_pretrained(directory)
    return directory


def _clips(lengths_s: list[float], seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(s * 16000))).astype(np.float32) for s in lengths_s]


def _bucket_error(model: torch.nn.Module, waves: list[np.ndarray], layer: int, dev: str) -> dict[str, float]:
    """Relative error of zero-padding every clip to the longest one (then cropping) vs each clip alone."""
    from emotalker.tasks.hubert import _run_batch, extract_hubert_single

    ref = extract_hubert_single(model, waves, [layer], dev)
    padded = _run_batch(model, waves, [layer], dev, use_mask=False)
    rel = []
    for r, p in zip(ref, padded, strict=True):
        a, b = r[layer], p[layer]
        rel.append(float(np.abs(a - b).max() / max(np.abs(a).max(), 1e-12)))
    return {"max_rel_error": max(rel), "median_rel_error": float(np.median(rel))}


def _measure(
    model: torch.nn.Module, waves: list[np.ndarray], layers: list[int], dev: str, repeats: int
) -> dict:
    from emotalker.tasks.hubert import extract_hubert, extract_hubert_single, make_batches

    audio_s = sum(w.size for w in waves) / 16000
    b = time_call(lambda: extract_hubert(model, waves, layers, dev, batch_seconds=120.0), repeats, warmup=0)
    s = time_call(lambda: extract_hubert_single(model, waves, layers, dev), repeats, warmup=0)
    out_b = extract_hubert(model, waves, layers, dev)
    out_s = extract_hubert_single(model, waves, layers, dev)
    diff = max(float(np.abs(x[k] - y[k]).max()) for x, y in zip(out_b, out_s, strict=True) for k in layers)
    n_batches = len(make_batches([w.size for w in waves], 120.0, equal_length_only=True))
    return {
        "audio_s": audio_s,
        "clips": len(waves),
        "forward_batches": n_batches,
        "batched_s": b["median_s"],
        "single_s": s["median_s"],
        "batched_rtf": b["median_s"] / audio_s,
        "single_rtf": s["median_s"] / audio_s,
        "speedup": s["median_s"] / b["median_s"],
        "max_abs_diff": diff,
    }


def run(quick: bool = False) -> dict[str, Any]:
    """RTF of both paths for each model and clip set, plus the bucket-padding error."""
    from emotalker.tasks.hubert import load_hubert
    from emotalker.testing.fake_hubert import write_tiny_hubert

    dev = device()
    repeats = 1 if quick else 3
    rng = np.random.default_rng(0)
    n_clips = 4 if quick else 12
    # MEAD sentences: ~2-6 s each, practically never the same sample count
    mead_lengths = [round(float(x), 3) for x in rng.uniform(2.0, 6.0 if not quick else 3.0, n_clips)]
    equal_lengths = [mead_lengths[0]] * n_clips
    sets = {"mead_like": _clips(mead_lengths, 1), "equal_length": _clips(equal_lengths, 2)}
    models = ["tiny"] if quick else ["tiny", "base"]
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            path = (
                write_tiny_hubert(Path(tmp) / name, seed=0)
                if name == "tiny"
                else _write_base(Path(tmp) / name)
            )
            model, settings = load_hubert(path, dev)
            layers = [9, -1] if settings.num_layers >= 9 else [-1]
            extract_warm = [sets["mead_like"][0][:16000]]
            from emotalker.tasks.hubert import extract_hubert

            extract_hubert(model, extract_warm, layers, dev)
            res: dict[str, Any] = {"hidden_size": settings.hidden_size, "layers": settings.num_layers}
            for set_name, waves in sets.items():
                res[set_name] = _measure(model, waves, layers, dev, repeats)
            res["bucket_padding_error"] = _bucket_error(model, sets["mead_like"], layers[-1], dev)
            results[name] = res
            del model
    head = results[models[-1]]["mead_like"]
    return {
        "params": {
            "repeats": repeats,
            "mead_like_lengths_s": mead_lengths,
            "equal_length_s": equal_lengths[0],
            "batch_seconds": 120.0,
            "models": models,
        },
        "metrics": {
            "mead_like_speedup": head["speedup"],
            "mead_like_batched_rtf": head["batched_rtf"],
            "mead_like_single_rtf": head["single_rtf"],
            "equal_length_speedup": results[models[-1]]["equal_length"]["speedup"],
            "bucket_padding_max_rel_error": results[models[-1]]["bucket_padding_error"]["max_rel_error"],
        },
        "models": results,
        "target": TARGET,
        "target_met": bool(head["speedup"] >= 2.0),
        "notes": (
            "HuBERT base (and the superb ER model) use a group-norm feature extractor without an attention "
            "mask, so tasks/hubert.py batches only clips of identical length; MEAD-like lengths give one "
            "clip per forward pass. Padding to a bucket length changes every frame (bucket_padding_error), "
            "so no padded bucketing option was added for group-norm models."
        ),
    }
