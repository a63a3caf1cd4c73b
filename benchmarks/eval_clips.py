"""Evaluation seconds per clip: today's loop vs batched detectors vs clips fanned out on Dask.

The per-clip work timed is what dominates an evaluation of the demo config: Table 1's image comparison
(``compare_videos``: S3FD boxes and 2D-FAN-4 landmarks with flipped input on every rendered and real
frame, SSIM, CPBD, the authors' crop box of the real clip) of a rendered clip against its real clip,
with the demo's face settings (``face.batch_size`` 16, ``detect_max_side`` 640) on the random-weight
stand-ins in the released layouts (``fake_face_assets``; the stand-in S3FD fires on these frames).
Clips are 256 px (the demo's real videos), ``eval.render_max_frames`` frames each; SyncNet, the
classifier and the renderer are left out (their work is the same in every mode).

- ``today``: the detectors as evaluation ran them before (face-alignment's ``detect_from_batch`` on a
  float CPU batch, the mirrored FAN crops in a second forward pass), one clip after another;
- ``batched``: the pipeline's detectors (``s3fd_detect_batch``, one FAN pass per batch), in-process;
- ``fanout``: batched, every clip a Dask task on a local cluster of 2 workers x 1 thread (worker start
  and model loads included in its time: what ``eval.dask`` costs a run).

Ratios are against ``today`` in the same run.
"""

from __future__ import annotations

import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from benchmarks.common import demo_config
from emotalker.configs.schema import DaskConfig
from emotalker.tasks.features.face_coeffs import LandmarkDetector, _check_frames

TARGET = "evaluation seconds per clip <= 0.5x today's loop (demo config, CPU)"
RATIO_TARGET = 0.5


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

    def landmarks_from_boxes(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        from face_alignment.utils import CENTER_Y_OFFSET, crop, flip, get_preds_fromhm

        out = np.full((frames.shape[0], 68, 2), np.nan, dtype=np.float32)
        idx = np.flatnonzero(np.isfinite(boxes).all(axis=1))
        ref = self.fa.face_detector.reference_scale
        net = self.fa.face_alignment_net
        for start in range(0, len(idx), self.batch_size):
            sel = idx[start : start + self.batch_size]
            centers, scales, crops = [], [], []
            for i in sel:
                d = boxes[i]
                center = np.array([d[2] - (d[2] - d[0]) / 2.0, d[3] - (d[3] - d[1]) / 2.0])
                center[1] -= (d[3] - d[1]) * CENTER_Y_OFFSET
                scale = (d[2] - d[0] + d[3] - d[1]) / ref
                centers.append(center)
                scales.append(scale)
                crops.append(crop(frames[i], center, scale).transpose(2, 0, 1).astype(np.float32) / 255.0)
            inp = torch.from_numpy(np.stack(crops)).to(self.device, dtype=self.fa.dtype)
            with torch.inference_mode():
                hm = net(inp)
                hm = hm[-1] if isinstance(hm, list) else hm
                if self.fa.flip_input:
                    fl = net(flip(inp))
                    fl = fl[-1] if isinstance(fl, list) else fl
                    hm = hm + flip(fl, is_label=True)
            hm_np = hm.to("cpu", torch.float32).numpy()
            for k, i in enumerate(sel):
                _, pts_img, _ = get_preds_fromhm(hm_np[k : k + 1], centers[k], scales[k])
                out[i] = np.asarray(pts_img).reshape(68, 2)
        return out


def _models(fa_dir: str, today: bool) -> Any:
    """The image-metric models with the demo config's face settings (authors' crop, as evaluation)."""
    from emotalker.tasks.evaluation.rendered import ImageMetricModels

    f = demo_config().face
    cls = TodayDetector if today else LandmarkDetector
    det = cls(
        device="cpu",
        face_detector=f.face_detector,
        batch_size=f.batch_size,
        model_dir=fa_dir,
        flip_input=f.flip_input,
        detect_max_side=f.detect_max_side,
    )
    return ImageMetricModels(det, authors_crop=True)


def clip_metrics(fa_dir: str, pair: tuple[str, str]) -> dict[str, Any]:
    """One clip's image comparison with this process's models (built once per Dask worker)."""
    from emotalker.tasks.evaluation.fanout import on_worker
    from emotalker.tasks.evaluation.rendered import compare_videos

    torch.set_num_threads(1)
    models = on_worker(f"bench:{fa_dir}", lambda: _models(fa_dir, today=False))
    rendered, real = pair
    return compare_videos(Path(rendered), Path(real), Path(real), models)


def _write_clips(d: Path, n_clips: int, frames: int) -> list[tuple[str, str]]:
    import skimage.data

    from emotalker.tasks.demo.synthetic.mead import write_mp4

    img = cv2.resize(skimage.data.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)
    pairs = []
    for c in range(n_clips):
        real, rendered = d / f"real{c}.mp4", d / f"rendered{c}.mp4"
        write_mp4(np.stack([np.roll(img, 5 * c + 2 * i, axis=1) for i in range(frames)]), real, fps=25)
        write_mp4(
            np.stack([np.roll(img, 5 * c + 3 * i + 4, axis=1) for i in range(frames)]), rendered, fps=25
        )
        pairs.append((str(rendered), str(real)))
    return pairs


def _in_process(models: Any, pairs: list[tuple[str, str]]) -> tuple[float, list[dict[str, Any]]]:
    from emotalker.tasks.evaluation.rendered import compare_videos

    t0 = time.perf_counter()
    out = [compare_videos(Path(r), Path(g), Path(g), models) for r, g in pairs]
    return time.perf_counter() - t0, out


def run(quick: bool = False) -> dict[str, Any]:
    """Seconds per clip of the three modes on the same clips, and the ratios against today's loop."""
    from emotalker.tasks.demo.standins.fake_face_assets import write_fake_face_assets
    from emotalker.tasks.evaluation.fanout import map_clips

    torch.set_num_threads(1)
    n_clips, frames = (2, 2) if quick else (4, 12)
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        fa_dir = str(write_fake_face_assets(d / "d3d", d / "torch_home")["fa_dir"])
        pairs = _write_clips(d, n_clips, frames)
        (d / "warm").mkdir()
        warm = _write_clips(d / "warm", 1, 1)
        times, results = {}, {}
        for mode in ("today", "batched"):
            models = _models(fa_dir, today=mode == "today")
            _in_process(models, warm)  # numba's JIT and first-call costs, untimed
            times[mode], results[mode] = _in_process(models, pairs)
        t0 = time.perf_counter()
        dask = DaskConfig(n_workers=2, threads_per_worker=1)
        results["fanout"] = map_clips(partial(clip_metrics, fa_dir), pairs, dask=dask, device="cpu")
        times["fanout"] = time.perf_counter() - t0
    keys = ("ssim", "f_lmd", "m_lmd", "f_lmd_eat", "m_lmd_eat")
    max_diff = max(
        abs(results[m][i][k] - results["today"][i][k])
        for m in ("batched", "fanout")
        for i in range(n_clips)
        for k in keys
    )
    per_clip = {m: t / n_clips for m, t in times.items()}
    best = min(per_clip["batched"], per_clip["fanout"])
    return {
        "params": {
            "config": "configs/demo.yaml face settings; random-weight S3FD / 2D-FAN-4, released layouts",
            "clips": n_clips,
            "frames_per_clip": frames,
            "frame_size": 256,
            "fanout": "local Dask cluster, 2 workers x 1 thread, worker start and model loads included",
        },
        "metrics": {
            "today_s_per_clip": per_clip["today"],
            "batched_s_per_clip": per_clip["batched"],
            "fanout_s_per_clip": per_clip["fanout"],
            "batched_ratio": per_clip["batched"] / per_clip["today"],
            "fanout_ratio": per_clip["fanout"] / per_clip["today"],
            "max_metric_difference": float(max_diff),
        },
        "target": TARGET,
        "target_met": None if quick else bool(best / per_clip["today"] <= RATIO_TARGET),
    }
