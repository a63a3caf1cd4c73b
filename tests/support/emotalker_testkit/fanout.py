"""A per-clip function for the Dask fan-out tests: a clip's image metrics with models built once per
process (``on_worker``; the bright-square stand-ins, so no network slows the test), plus where it ran."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from emotalker.tasks.evaluation.fanout import on_worker
from emotalker.tasks.evaluation.rendered import ImageMetricModels, compare_videos
from emotalker_testkit.squares import BrightnessClassifier, SquareDetector

LOADS: list[int] = []  # per process: one entry per model load


def _load() -> ImageMetricModels:
    LOADS.append(os.getpid())
    return ImageMetricModels(SquareDetector(), classifier=BrightnessClassifier())


def image_metrics(box: tuple[int, int, int, int], pair: tuple[Path, Path]) -> dict[str, Any]:
    """``compare_videos`` of (rendered, real) with this process's models; the process id and how many
    times this process built the models."""
    models = on_worker("squares", _load)
    rendered, real = pair
    res = compare_videos(rendered, real, real, models, box=box)
    return {**res, "pid": os.getpid(), "loads": len(LOADS)}
