"""Generation from long audio: peak memory and time for 1, 5 and 10 minutes, chunked HuBERT vs one pass.

Generation = what ``generate`` does with a waveform: HuBERT emotion and content features (the paper pair,
sharing one pass), k-means tokens, mel windows (``tasks.generation.animate.audio_features``), then
``EmoTalker.generate`` with its sliding decoder window (``generation.max_context``). The pipeline runs
HuBERT in chunks (``audio.chunk_seconds`` with ``audio.chunk_context_seconds`` each side); the baseline is
the same path with one HuBERT pass over the whole waveform (what ran before), measured in the same run
on shorter audio, since its memory grows with length (8.6 GB for 8 minutes with HuBERT base).

Stand-ins: HuBERT-base-sized random models (``HubertConfig()``) in the Hugging Face format and the paper's
model sizes with random weights; ``--quick`` uses tiny ones and seconds of audio. Each measurement runs in
a fresh interpreter so its peak RSS is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.common import demo_config, mib, paper_config, peak_memory

TARGET = (
    "chunked: peak memory flat (10 min / 1 min <= 1.5) and time linear (per-second CPU time ratio <= 1.3; "
    "wall time reported beside it)"
)
SAMPLE_RATE = 16_000
CHUNK_S = {False: 30.0, True: 2.0}  # audio.chunk_seconds (paper default / quick)
CONTEXT_S = {False: 5.0, True: 0.5}  # audio.chunk_context_seconds


def _config(quick: bool, root: Path, chunked: bool) -> Any:
    from emotalker.configs.schema import PipelineConfig

    base = demo_config() if quick else paper_config()
    data = base.model_dump(mode="json")
    data["audio"].update(
        emotion_model=str(root / "er"),
        content_model=str(root / "content"),
        chunk_seconds=(CHUNK_S[quick]) if chunked else 1e9,  # 1e9: never chunk (one pass)
        chunk_context_seconds=CONTEXT_S[quick],
    )
    data["device"] = "cpu"
    return PipelineConfig.model_validate(data)


def _setup(root: Path, quick: bool) -> None:
    """HuBERT pair (ER converted from the content model, one shared pass) and a k-means model."""
    from transformers import HubertConfig, HubertModel

    from emotalker.tasks.demo.standins.fake_hubert import write_er_from_base, write_tiny_hubert
    from emotalker.tasks.features.kmeans import fit_kmeans, save_kmeans

    cfg = demo_config() if quick else paper_config()
    if quick:
        write_tiny_hubert(root / "content", hidden_size=cfg.transformer.audio_dim, num_hidden_layers=12)
    else:
        torch.manual_seed(0)
        HubertModel(HubertConfig()).save_pretrained(root / "content")
    write_er_from_base(root / "content", root / "er")
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((4 * cfg.audio.kmeans_k, cfg.transformer.audio_dim)).astype(np.float32)
    km = fit_kmeans(feats, k=cfg.audio.kmeans_k, n_init=1, max_iter=5, seed=0)
    save_kmeans(km, root / "kmeans.joblib")


def measure(root: Path, quick: bool, chunked: bool, seconds: float) -> dict[str, Any]:
    """One generation from ``seconds`` of speech-like noise: time and peak RSS above the loaded models."""
    from benchmarks.generation import build
    from emotalker.tasks.features.kmeans import load_kmeans
    from emotalker.tasks.generation.animate import audio_features

    torch.set_num_threads(2)
    cfg = _config(quick, root, chunked)
    model = build(cfg, "cpu")
    rng = np.random.default_rng(int(seconds))
    wave = (rng.standard_normal(int(seconds * SAMPLE_RATE)) * 0.1).astype(np.float32)
    reference = rng.standard_normal(70).astype(np.float32)
    km = load_kmeans(root / "kmeans.joblib")
    audio_features(wave[:SAMPLE_RATE], cfg, "cpu", km)  # loads (and caches) the HuBERT models: not measured
    with peak_memory("cpu") as mem:
        t0, c0 = time.perf_counter(), time.process_time()
        feats = audio_features(wave, cfg, "cpu", km)
        t_features = time.perf_counter() - t0
        motion = model.generate(reference, feats["audio"], feats["tokens"], feats["mel"])
        total, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert motion.shape == (len(wave) // 640, 70) and np.isfinite(motion).all()
    return {
        "seconds": seconds,
        "time_s": total,
        "features_time_s": t_features,
        "time_per_audio_s": total / seconds,
        "cpu_time_s": cpu,  # both threads' CPU time: what other jobs on a shared machine do not inflate
        "cpu_time_per_audio_s": cpu / seconds,
        "peak_memory_mib": mib(mem["peak_bytes"]),
        "memory_method": mem["method"],
    }


def _child(root: Path, quick: bool, chunked: bool, seconds: float) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "benchmarks.long_audio",
        str(root),
        str(int(quick)),
        str(int(chunked)),
        str(seconds),
    ]
    out = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:])} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> dict[str, Any]:
    """Chunked at 1/5/10 minutes (quick: 4/8/16 s); one pass at shorter lengths; all on the CPU."""
    pipeline_s = [4.0, 8.0, 16.0] if quick else [60.0, 300.0, 600.0]
    baseline_s = [4.0, 8.0] if quick else [60.0, 120.0]  # one pass: 2.7 GB at 2 min with HuBERT base
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _setup(root, quick)
        chunked = {f"{s:g}s": _child(root, quick, True, s) for s in pipeline_s}
        single = {f"{s:g}s": _child(root, quick, False, s) for s in baseline_s}
    first, last = chunked[f"{pipeline_s[0]:g}s"], chunked[f"{pipeline_s[-1]:g}s"]
    b_first, b_last = single[f"{baseline_s[0]:g}s"], single[f"{baseline_s[-1]:g}s"]
    metrics = {
        f"chunked_peak_mib_{pipeline_s[0]:g}s": first["peak_memory_mib"],
        f"chunked_peak_mib_{pipeline_s[-1]:g}s": last["peak_memory_mib"],
        "chunked_memory_growth": last["peak_memory_mib"] / max(first["peak_memory_mib"], 1.0),
        "chunked_time_per_s_growth": last["time_per_audio_s"] / first["time_per_audio_s"],
        "chunked_cpu_time_per_s_growth": last["cpu_time_per_audio_s"] / first["cpu_time_per_audio_s"],
        f"one_pass_peak_mib_{baseline_s[-1]:g}s": b_last["peak_memory_mib"],
        "one_pass_memory_growth": b_last["peak_memory_mib"] / max(b_first["peak_memory_mib"], 1.0),
        "one_pass_time_per_s_growth": b_last["time_per_audio_s"] / b_first["time_per_audio_s"],
        "one_pass_cpu_time_per_s_growth": b_last["cpu_time_per_audio_s"] / b_first["cpu_time_per_audio_s"],
        f"one_pass_over_chunked_memory_{baseline_s[-1]:g}s": b_last["peak_memory_mib"]
        / max(_interp_memory(chunked, baseline_s[-1]), 1.0),
    }
    return {
        "params": {
            "hubert": "tiny random stand-ins" if quick else "HuBERT-base-sized random (HubertConfig())",
            "models": "configs/demo.yaml" if quick else "configs/paper.yaml",
            "chunk_seconds": CHUNK_S[quick],
            "chunk_context_seconds": CONTEXT_S[quick],
            "torch_threads": 2,
        },
        "metrics": metrics,
        "chunked": chunked,
        "one_pass": single,
        "target": TARGET,
        "target_met": bool(
            metrics["chunked_memory_growth"] <= 1.5 and metrics["chunked_cpu_time_per_s_growth"] <= 1.3
        ),
    }


def _interp_memory(chunked: dict[str, dict[str, Any]], seconds: float) -> float:
    """The chunked peak at ``seconds`` (flat by design: the nearest measured length's value)."""
    nearest = min(chunked.values(), key=lambda r: abs(r["seconds"] - seconds))
    return float(nearest["peak_memory_mib"])


if __name__ == "__main__":  # child mode: one measurement, JSON on the last stdout line
    root_arg, quick_arg, chunked_arg, seconds_arg = sys.argv[1:5]
    print(
        json.dumps(measure(Path(root_arg), bool(int(quick_arg)), bool(int(chunked_arg)), float(seconds_arg)))
    )
