"""Today's evaluation loop: the evaluation as issue 29 measured it, for the benchmarks' baselines.

What the evaluation ran when the issue was filed, reproduced on today's code so a benchmark times both
ways on the same clips in one run:

- the detectors through face-alignment's ``detect_from_batch`` (a float CPU batch; every frame's
  candidates decoded for every other frame of the batch) and the mirrored FAN crops in a second forward
  pass, float32 weights in PyTorch's default memory format (``TodayDetector``);
- CPBD as the ``cpbd`` package computes it (its per-pixel edge-width loop; the pipeline's vectorised
  version returns the same float);
- no frame memo (every rendered frame scored, held renders included) and no stored real side: each
  evaluation computes its real clips' side again (the in-memory cache of one evaluation was there).

``todays_evaluation()`` patches these into the pipeline's evaluation for the duration of a block.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import cv2
import numpy as np
import torch

from emotalker.tasks.evaluation.rendered import FrameMemo, ImageMetricModels
from emotalker.tasks.features.face_coeffs import LandmarkDetector, _check_frames


class TodayDetector(LandmarkDetector):
    """The detectors as the evaluation ran them before: face-alignment's ``detect_from_batch`` (a float
    tensor from the host; every frame's candidates decoded for every other frame of the batch) and the
    flipped-input crops through the FAN in a second pass."""

    def detect_boxes(self, frames: np.ndarray) -> np.ndarray:
        frames = _check_frames(frames)
        t, h, w = frames.shape[:3]
        scale = 1.0
        if self.detect_max_side is not None and max(h, w) > self.detect_max_side:
            scale = self.detect_max_side / max(h, w)
        boxes = np.full((t, 4), np.nan, dtype=np.float64)
        for start in range(0, t, self.batch_size):
            chunk = frames[start : start + self.batch_size]
            if scale != 1.0:
                size = (max(1, round(w * scale)), max(1, round(h * scale)))
                chunk = np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in chunk])
            tensor = torch.from_numpy(np.ascontiguousarray(chunk)).permute(0, 3, 1, 2).float()
            with torch.inference_mode():
                found = self.fa.face_detector.detect_from_batch(tensor)
            for j, cands in enumerate(found):
                if len(cands) == 0:
                    continue
                arr = np.asarray(cands, dtype=np.float64).reshape(-1, 5)
                area = (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])
                best = np.lexsort((-area, -arr[:, 4]))[0]
                boxes[start + j] = arr[best, :4] / scale
        return boxes

    def _heatmaps(self, net: torch.nn.Module, inp: torch.Tensor) -> torch.Tensor:
        from face_alignment.utils import flip

        hm = net(inp)
        hm = hm[-1] if isinstance(hm, list) else hm
        if self.fa.flip_input:  # the mirrored crops in a second forward pass
            fl = net(flip(inp))
            fl = fl[-1] if isinstance(fl, list) else fl
            hm = hm + flip(fl, is_label=True)
        return hm

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**{**kwargs, "dtype": "float32"})
        for net in (self.fa.face_alignment_net, getattr(self.fa.face_detector, "face_detector", None)):
            if isinstance(net, torch.nn.Module):
                net.to(memory_format=torch.contiguous_format)  # channels-last came later


class NoMemo(FrameMemo):
    """Every frame computed, as before the memo: a held render's repeated frames scored each time."""

    def per_distinct(self, kind: str, frames: np.ndarray, compute: Callable[[np.ndarray], Any]) -> list[Any]:
        return list(compute(frames))


def package_cpbd(image: np.ndarray) -> float:
    """CPBD of one frame by the ``cpbd`` package's own ``compute`` (its per-pixel loop)."""
    from emotalker.tasks.adapters.cpbd import cpbd_module
    from emotalker.tasks.evaluation.metrics import gray_frame

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            return float(cpbd_module().compute(gray_frame(image)))
        except ZeroDivisionError:
            return float("nan")


@contextmanager
def todays_evaluation() -> Iterator[None]:
    """The pipeline's evaluation runs today's loop inside the block (``run_evaluation``, ``evaluate_flow``,
    ``ablate_flow`` and the benchmarks' own ``compare_videos`` calls alike)."""
    from emotalker.tasks.evaluation import rendered, run
    from emotalker.tasks.features import face_coeffs

    build = run.image_metric_models

    def image_metric_models(cfg: Any, device: str, ws: Any = None) -> ImageMetricModels:
        with mock.patch.object(face_coeffs, "LandmarkDetector", TodayDetector):
            models = build(cfg, device, None)  # no workspace: no stored real side
        models.memo = NoMemo()
        return models

    with (
        mock.patch.object(run, "image_metric_models", image_metric_models),
        mock.patch.object(rendered, "cpbd", package_cpbd),
    ):
        yield
