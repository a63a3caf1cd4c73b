"""Shared helpers: machine info, timing (warm-up + repetitions + median) and peak-memory probes."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emotalker.configs.schema import PipelineConfig, load_config
from emotalker.tasks.features.face_coeffs import native_bf16_cpu

REPO = Path(__file__).resolve().parents[1]
PAPER = REPO / "configs" / "paper.yaml"
DEMO = REPO / "configs" / "demo.yaml"


def device() -> str:
    """cuda when a GPU is visible, else cpu (the benchmarks follow the pipeline's ``device: auto``)."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on, stored in every result file (library versions from their
    metadata, so a machine without one of them still reports the rest)."""
    from importlib.metadata import PackageNotFoundError, version

    def ver(name: str) -> str | None:
        try:
            return version(name)
        except PackageNotFoundError:
            return None

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **{name: ver(name) for name in ("numpy", "zarr", "transformers", "prefect")},
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "cpu_model": _cpu_model(),
        "native_bf16": native_bf16_cpu(),  # what eval.detector_dtype / render.dtype "auto" resolve by
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def _cpu_model() -> str | None:
    """The CPU's model name (Linux), so results from different machines are not compared by mistake."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="ignore").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def paper_config() -> PipelineConfig:
    return load_config(PAPER)


def demo_config() -> PipelineConfig:
    return load_config(DEMO)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_call(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> dict[str, Any]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times: median/all seconds and the last result."""
    for _ in range(warmup):
        fn()
    _sync()
    times = []
    result = None
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        result = fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times, "result": result}


@dataclass
class PeakRSS:
    """Peak resident set size above the starting RSS, sampled by a background thread (CPU runs)."""

    interval_s: float = 0.002
    baseline: int = 0
    peak: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    @property
    def delta_bytes(self) -> int:
        return max(0, self.peak - self.baseline)


@contextmanager
def peak_memory(dev: str) -> Iterator[dict[str, Any]]:
    """Measure the peak memory of the block: ``torch.cuda.max_memory_allocated`` on GPU, RSS on CPU.

    Yields a dict filled on exit with ``peak_bytes`` (above the start) and ``method``.
    """
    out: dict[str, Any] = {}
    if dev == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield out
        torch.cuda.synchronize()
        out["peak_bytes"] = int(torch.cuda.max_memory_allocated() - start)
        out["method"] = "torch.cuda.max_memory_allocated above the allocation at start"
        return
    import psutil

    proc = psutil.Process()
    probe = PeakRSS()
    probe.baseline = probe.peak = proc.memory_info().rss

    def sample() -> None:
        while not probe._stop.is_set():
            probe.peak = max(probe.peak, proc.memory_info().rss)
            time.sleep(probe.interval_s)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        yield out
    finally:
        probe.peak = max(probe.peak, proc.memory_info().rss)
        probe._stop.set()
        th.join()
        out["peak_bytes"] = int(probe.delta_bytes)
        out["method"] = "process RSS sampled every 2 ms (psutil), peak minus RSS at start"


def mib(n: float) -> float:
    return float(n) / 2**20


def du(path: Path) -> int:
    """Bytes of all files under a directory."""
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())
