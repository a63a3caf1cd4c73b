"""Deep3DFace-style 3DMM coefficient extraction from video frames, batched.

Pipeline per clip: 68 landmarks (face-alignment: SFD boxes + 2D-FAN) -> 5 points -> Deep3DFace
similarity alignment to a 224x224 crop -> ReconNet -> 257 coefficients (+ the 70-dim motion).
Detection and regression run in batches; only the cheap alignment is per frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import scipy.io
import torch

from emotalker.configs.constants import COEFF_DIM
from emotalker.models.deep3dface import ReconNet
from emotalker.models.motion import coeffs_to_motion

# 1-based 68-landmark indices Deep3DFace reduces to 5 points (nose, eye corners, mouth corners).
_LM5_IDX = np.array([31, 37, 40, 43, 46, 49, 55]) - 1
# face-alignment 1.5 model files (torch hub cache names, from its models_urls)
FA_FILES: dict[str, str] = {
    "sfd": "s3fd-619a316812.pth",
    "2DFAN-4": "2DFAN4-11f355bf06.pth.tar",
}
FA_URLS: dict[str, str] = {
    "sfd": "https://www.adrianbulat.com/downloads/python-fan/s3fd-619a316812.pth",
    "2DFAN-4": "https://www.adrianbulat.com/downloads/python-fan/2DFAN4-11f355bf06.pth.tar",
}


class NoFaceError(ValueError):
    """No frame of a clip had a detectable face, so it has no coefficients."""


# ----------------------------------------------------------------------------------------- landmarks


def landmarks_from_heatmaps(hm: np.ndarray, centers: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """FAN heatmaps (B, 68, 64, 64) -> landmarks (B, 68, 2) in image pixels, equal to face-alignment's
    ``get_preds_fromhm(hm[b:b+1], centers[b], scales[b])[1]`` for every face, batched in numpy.

    Upstream runs this through numba, whose JIT compiles for 20-35 s on 2 cores in every new process
    (each ``emotalker generate`` call, each evaluation process); this is the same arithmetic without it.
    Its quirks decide the landmarks, so they are kept: the arg-max moves a quarter pixel towards the larger
    neighbour only strictly inside ``0 < x, y < 63``, then -0.5; the crop transform is inverted through
    numba's pseudo-inverse (SVD, ``vt`` scaled by 1/s, then ``vt^T u^T``), whose rounding puts exact
    integers a hair below, so truncating to int (``astype(int32)``) can land one pixel lower than the
    exact inverse would.
    """
    b, c, h, w = hm.shape
    flat = hm.reshape(b, c, h * w)
    idx = flat.argmax(-1)
    px, py = idx % w, idx // w
    pts = np.stack([px + 1, py + 1], -1).astype(np.float32)
    inner = (px > 0) & (px < 63) & (py > 0) & (py < 63)
    cx, cy = np.clip(px, 1, w - 2), np.clip(py, 1, h - 2)

    def at(y: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.take_along_axis(flat, (y * w + x)[..., None], -1)[..., 0]

    nudge = np.stack([np.sign(at(py, cx + 1) - at(py, cx - 1)), np.sign(at(cy + 1, px) - at(cy - 1, px))], -1)
    pts = np.where(inner[..., None], pts + nudge * np.float32(0.25), pts) - np.float32(0.5)
    size = 200.0 * np.asarray(scales, np.float64)
    centers = np.asarray(centers, np.float64)
    t = np.zeros((b, 3, 3))
    t[:, 0, 0] = t[:, 1, 1] = h / size
    t[:, 0, 2] = h * (-centers[:, 0] / size + 0.5)
    t[:, 1, 2] = h * (-centers[:, 1] / size + 0.5)
    t[:, 2, 2] = 1.0
    u, sv, vt = np.linalg.svd(t)
    sv = np.where(sv > sv[:, :1] * 1e-15, 1.0 / sv, sv)
    t_inv = np.swapaxes(vt * sv[..., None], 1, 2) @ np.swapaxes(u, 1, 2)
    homog = np.concatenate([pts.astype(np.float64), np.ones((b, c, 1))], -1)
    return (t_inv[:, None] @ homog[..., None])[..., :2, 0].astype(np.int32).astype(np.float32)


def _reduce_to_5(lm: np.ndarray) -> np.ndarray:
    """68 points -> Deep3DFace's 5 (left eye, right eye, nose, left mouth, right mouth)."""
    i = _LM5_IDX
    five = np.stack(
        [lm[i[0]], lm[i[[1, 2]]].mean(0), lm[i[[3, 4]]].mean(0), lm[i[5]], lm[i[6]]],
        axis=0,
    )
    return five[[1, 2, 0, 3, 4]]


def load_lm3d(mat_path: str | Path) -> np.ndarray:
    """Deep3DFace's 3D 5-point template (5, 3) from ``similarity_Lm3D_all.mat`` (key ``lm``, 68x3).

    Like Deep3DFace's ``load_lm3d`` the points are reduced and reordered but not re-centred: the
    released template is already centred on the BFM origin (y up).
    """
    p = Path(mat_path)
    if not p.is_file():
        raise FileNotFoundError(
            f"3D landmark template not found at {p}: copy BFM/similarity_Lm3D_all.mat from "
            "Deep3DFaceRecon_pytorch and set face.lm3d_mat"
        )
    mat = scipy.io.loadmat(str(p))
    if "lm" not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise ValueError(f"{p}: no 'lm' array (keys {keys})")
    lm = np.asarray(mat["lm"], dtype=np.float64)
    if lm.shape != (68, 3):
        raise ValueError(f"{p}: 'lm' must be 68x3, got {lm.shape}")
    return _reduce_to_5(lm)


def extract_5p(lm68: np.ndarray) -> np.ndarray:
    """(68, 2) image landmarks -> (5, 2) in Deep3DFace order."""
    lm68 = np.asarray(lm68, dtype=np.float64)
    if lm68.shape != (68, 2):
        raise ValueError(f"expected (68, 2) landmarks, got {lm68.shape}")
    return _reduce_to_5(lm68)


def _pos(xp: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares scaled-orthographic fit xp (N,2) ~ [R1; R2] x (N,3) + t; returns (t, s)."""
    n = xp.shape[0]
    a = np.zeros((2 * n, 8))
    a[0::2, 0:3] = x
    a[0::2, 3] = 1
    a[1::2, 4:7] = x
    a[1::2, 7] = 1
    b = xp.reshape(-1)
    k = np.linalg.lstsq(a, b, rcond=None)[0]
    s = (np.linalg.norm(k[0:3]) + np.linalg.norm(k[4:7])) / 2
    return np.array([k[3], k[7]]), float(s)


def align_face(
    img: np.ndarray,
    lm68: np.ndarray,
    lm3d_5p: np.ndarray,
    target_size: int = 224,
    rescale_factor: float = 102.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deep3DFace ``align_img``: scale/translate so the face matches the template, crop 224x224.

    Returns the crop as float32 RGB in [0, 1], ``trans_params = [w0, h0, s, tx, ty]`` (Deep3DFace's
    convention: t in y-up pixel coordinates) and the 68 landmarks in crop pixel coordinates (y down).
    """
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got {img.shape}")
    h0, w0 = img.shape[:2]
    lm = np.asarray(lm68, dtype=np.float64).copy()
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise ValueError(f"expected finite (68, 2) landmarks, got shape {lm.shape}")
    lm_up = lm.copy()
    lm_up[:, 1] = h0 - 1 - lm_up[:, 1]
    t, s0 = _pos(extract_5p(lm_up), np.asarray(lm3d_5p, dtype=np.float64))
    if s0 <= 0:
        raise ValueError("degenerate landmarks: zero scale in the similarity fit")
    s = rescale_factor / s0
    w, h, left, up = _crop_window(w0, h0, s, t[0], t[1], target_size)
    crop = _pil_resize_crop(img, (max(w, 1), max(h, 1)), (left, up, left + target_size, up + target_size))
    lm_crop = np.stack([lm[:, 0] * (w / w0) - left, lm[:, 1] * (h / h0) - up], axis=1)
    trans_params = np.array([w0, h0, s, t[0], t[1]], dtype=np.float64)
    aligned = crop.astype(np.float32) / (255.0 if img.dtype == np.uint8 else 1.0)
    return aligned, trans_params, lm_crop.astype(np.float32)


def _pil_resize_crop(img: np.ndarray, size: tuple[int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    """Upstream ``resize_n_crop_img``: PIL bicubic resize, then a crop that pads with black outside.

    PIL's bicubic (not cv2's cubic/area) is what Deep3DFace's regressor saw in training; the two differ
    enough to move the coefficients by tenths of a percent.
    """
    from PIL import Image

    if img.dtype == np.uint8:
        return np.asarray(Image.fromarray(img).resize(size, Image.Resampling.BICUBIC).crop(box))
    chans = [  # float images: one 32-bit float plane per channel (PIL has no float RGB mode)
        np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32)).resize(
            size, Image.Resampling.BICUBIC).crop(box))
        for c in range(img.shape[2])
    ]  # fmt: skip
    return np.stack(chans, axis=-1).astype(img.dtype)


def _crop_window(
    w0: float, h0: float, s: float, tx: float, ty: float, target_size: int
) -> tuple[int, int, int, int]:
    """Resized image size (w, h) and the crop's top-left corner (left, up) in it, as ``align_face``."""
    w, h = int(w0 * s), int(h0 * s)
    left = int(w / 2 - target_size / 2 + (tx - w0 / 2) * s)
    up = int(h / 2 - target_size / 2 + (h0 / 2 - ty) * s)
    return w, h, left, up


def crop_to_image(points: np.ndarray, trans_params: np.ndarray, target_size: int = 224) -> np.ndarray:
    """Inverse of ``align_face``'s point mapping: (..., 2) crop pixels (y down) -> original image pixels.

    ``trans_params = [w0, h0, s, tx, ty]`` as returned by ``align_face``; the extractor stores them as
    float32, which can shift the integer crop corner by one crop pixel (1/s image pixels).
    """
    w0, h0, s, tx, ty = (float(v) for v in np.asarray(trans_params, dtype=np.float64).reshape(5))
    w, h, left, up = _crop_window(w0, h0, s, tx, ty, target_size)
    pts = np.asarray(points, dtype=np.float64)
    x = (pts[..., 0] + left) * (w0 / max(w, 1))
    y = (pts[..., 1] + up) * (h0 / max(h, 1))
    return np.stack([x, y], axis=-1)


# ----------------------------------------------------------------------------------------- detector


def fa_model_dir(model_dir: str | Path | None) -> Path:
    if model_dir is not None:
        return Path(model_dir)
    return Path(torch.hub.get_dir()) / "checkpoints"


def native_bf16_cpu() -> bool:
    """Whether this CPU runs bfloat16 convolutions natively (Linux CPU flags AVX512-BF16 or AMX-BF16)."""
    try:
        flags = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def detector_dtype(name: str, device: str) -> str:
    """``eval.detector_dtype`` resolved on ``device``: ``auto`` is bfloat16 on a CPU with native BF16
    (half of float32's time there) and float32 elsewhere, so no machine runs slower than float32."""
    if name != "auto":
        return name
    return "bfloat16" if str(device) == "cpu" and native_bf16_cpu() else "float32"


class LandmarkDetector:
    """68-point 2D landmarks with face-alignment (SFD + 2D-FAN-4), detection and FAN batched; ``dtype``
    the precision both networks run in (float32: face-alignment's default).

    Model files are looked up in ``model_dir`` (default: the torch hub cache face-alignment itself
    uses, ``$TORCH_HOME/hub/checkpoints``) and must exist: there is no download here.
    """

    def __init__(
        self,
        *,
        device: str = "cpu",
        face_detector: str = "sfd",
        batch_size: int = 8,
        model_dir: str | Path | None = None,
        flip_input: bool = True,
        detect_max_side: int | None = 640,
        compile: bool = False,
        dtype: str = "float32",
    ) -> None:
        from emotalker.tasks.adapters.face_alignment import local_face_alignment

        self.device = str(device)
        self._sfd = face_detector == "sfd"
        self.batch_size = int(batch_size)
        self.detect_max_side = detect_max_side
        mdir = fa_model_dir(model_dir)
        fan_path = mdir / FA_FILES["2DFAN-4"]
        needed = [fan_path] + ([mdir / FA_FILES["sfd"]] if face_detector == "sfd" else [])
        for f in needed:
            if not f.is_file():
                key = "sfd" if f.name == FA_FILES["sfd"] else "2DFAN-4"
                raise FileNotFoundError(
                    f"face-alignment model {f.name} not found in {mdir}; download {FA_URLS[key]} there "
                    "(or set face.face_alignment_dir / TORCH_HOME)"
                )
        det_kwargs: dict[str, Any] = {}
        if face_detector == "sfd":
            det_kwargs["path_to_detector"] = str(mdir / FA_FILES["sfd"])

        self.fa = local_face_alignment(
            fan_path,
            device=self.device,
            face_detector=face_detector,
            face_detector_kwargs=det_kwargs,
            flip_input=flip_input,
            compile=compile,
            max_batch_size=self.batch_size,
            dtype=getattr(torch, dtype),  # face-alignment's own option for its FAN
        )
        # channels-last weights: oneDNN's convolutions run both networks ~15-20% faster on CPU (measured
        # 2026-12-07, 2 cores), outputs equal to float tolerance (S3FD bit for bit, FAN within 2e-6)
        for net in (self.fa.face_alignment_net, getattr(self.fa.face_detector, "face_detector", None)):
            if isinstance(net, torch.nn.Module):
                net.to(memory_format=torch.channels_last)
        if self._sfd:  # S3FD in the same precision (s3fd_detect_batch feeds it the network's dtype)
            self.fa.face_detector.face_detector.to(getattr(torch, dtype))

    # -- boxes
    def detect_boxes(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) uint8 RGB -> (T, 4) best face box per frame (x1, y1, x2, y2), NaN when none.

        Frames go to the device in batches of ``batch_size`` as one tensor; S3FD keeps what face-alignment's
        per-image ``detect_from_image`` keeps (``s3fd_detect_batch``)."""
        from emotalker.tasks.adapters.face_alignment import s3fd_detect_batch

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
            # uint8 to the device (a quarter of float32's transfer), converted there
            tensor = torch.from_numpy(np.ascontiguousarray(chunk)).to(self.device).permute(0, 3, 1, 2)
            if self._sfd:
                found = s3fd_detect_batch(self.fa.face_detector, tensor)
            else:
                with torch.inference_mode():
                    found = self.fa.face_detector.detect_from_batch(tensor.float())
            for j, cands in enumerate(found):
                if len(cands) == 0:
                    continue
                arr = np.asarray(cands, dtype=np.float64).reshape(-1, 5)
                area = (arr[:, 2] - arr[:, 0]) * (arr[:, 3] - arr[:, 1])
                best = np.lexsort((-area, -arr[:, 4]))[0]  # highest score, then largest
                boxes[start + j] = arr[best, :4] / scale
        return boxes

    # -- landmarks
    def landmarks_from_boxes(self, frames: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """FAN landmarks (T, 68, 2) for given boxes (T, 4); rows of NaN boxes stay NaN."""
        from face_alignment.utils import CENTER_Y_OFFSET, crop

        frames = _check_frames(frames)
        boxes = np.asarray(boxes, dtype=np.float64)
        if boxes.shape != (frames.shape[0], 4):
            raise ValueError(f"boxes must be ({frames.shape[0]}, 4), got {boxes.shape}")
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
                hm = self._heatmaps(net, inp)
            out[sel] = landmarks_from_heatmaps(hm.to("cpu", torch.float32).numpy(), np.stack(centers), scales)
        return out

    def _heatmaps(self, net: torch.nn.Module, inp: torch.Tensor) -> torch.Tensor:
        """FAN's last heatmaps of a batch of crops; with ``flip_input`` the mirrored crops go through the
        network in the same batch and their flipped heatmaps are added (face-alignment's test-time flip)."""
        from face_alignment.utils import flip

        inp = inp.contiguous(memory_format=torch.channels_last)
        n = len(inp)
        hm = net(torch.cat([inp, flip(inp)]) if self.fa.flip_input else inp)
        hm = hm[-1] if isinstance(hm, list) else hm
        return hm[:n] + flip(hm[n:], is_label=True) if self.fa.flip_input else hm

    def detect(self, frames: np.ndarray, boxes: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (T, 68, 2) float32 and valid (T,) bool; frames without a face are NaN / False."""
        if boxes is None:
            boxes = self.detect_boxes(frames)
        lms = self.landmarks_from_boxes(frames, boxes)
        valid = np.isfinite(lms).all(axis=(1, 2))
        return lms, valid


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected frames (T, H, W, 3), got {frames.shape}")
    if frames.dtype != np.uint8:
        raise ValueError(f"expected uint8 frames, got {frames.dtype}")
    return frames


# ----------------------------------------------------------------------------------------- extractor


def interpolate_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Fill rows where ``valid`` is False by linear interpolation over time (edges copy nearest)."""
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise NoFaceError("no valid frame to interpolate from")
    out = np.array(values, dtype=np.float32, copy=True)
    if valid.all():
        return out
    flat = out.reshape(out.shape[0], -1)
    good = np.flatnonzero(valid)
    bad = np.flatnonzero(~valid)
    for c in range(flat.shape[1]):
        flat[bad, c] = np.interp(bad, good, flat[good, c])
    return flat.reshape(out.shape)


@dataclass
class FaceCoeffExtractor:
    """Frames -> Deep3DFace coefficients with batched landmarks and batched regression."""

    recon_net: ReconNet
    landmark_detector: LandmarkDetector | None
    lm3d: np.ndarray
    device: str = "cpu"
    batch_size: int = 32
    missing_face: str = "interpolate"

    def __post_init__(self) -> None:
        if self.missing_face not in ("interpolate", "exclude"):
            raise ValueError(f"missing_face must be 'interpolate' or 'exclude', got {self.missing_face!r}")
        self.recon_net = self.recon_net.to(self.device).eval()

    def _regress(self, crops: np.ndarray) -> np.ndarray:
        out = []
        for start in range(0, len(crops), self.batch_size):
            x = torch.from_numpy(crops[start : start + self.batch_size]).permute(0, 3, 1, 2).to(self.device)
            with torch.inference_mode():
                out.append(self.recon_net(x).float().cpu().numpy())
        return np.concatenate(out, axis=0) if out else np.zeros((0, COEFF_DIM), np.float32)

    def _finish(
        self, coeffs: np.ndarray, lms: np.ndarray, trans: np.ndarray, valid: np.ndarray, name: str
    ) -> dict[str, np.ndarray]:
        if not valid.any():
            raise NoFaceError(f"{name}: no face found in any of {len(valid)} frames")
        if self.missing_face == "interpolate":
            coeffs = interpolate_invalid(coeffs, valid)
            lms = interpolate_invalid(lms, valid)
            trans = interpolate_invalid(trans, valid)
        coeffs = coeffs.astype(np.float32)
        return {
            "coeffs": coeffs,
            "motion": coeffs_to_motion(coeffs).astype(np.float32),
            "landmarks": lms.astype(np.float32),
            "trans_params": trans.astype(np.float32),
            "valid": valid.astype(bool),
        }

    def _landmarks(
        self, frames: np.ndarray, landmarks: np.ndarray | None, boxes: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if landmarks is not None:
            lms = np.asarray(landmarks, dtype=np.float32)
            if lms.shape != (frames.shape[0], 68, 2):
                raise ValueError(f"landmarks must be ({frames.shape[0]}, 68, 2), got {lms.shape}")
            return lms, np.isfinite(lms).all(axis=(1, 2))
        if self.landmark_detector is None:
            raise ValueError("no landmark detector: pass landmarks explicitly")
        return self.landmark_detector.detect(frames, boxes)

    def extract(
        self,
        frames: np.ndarray,
        landmarks: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        name: str = "clip",
    ) -> dict[str, np.ndarray]:
        """(T, H, W, 3) uint8 -> dict of coeffs (T, 257), motion (T, 70), landmarks (T, 68, 2),
        trans_params (T, 5) and valid (T,); known ``landmarks`` or ``boxes`` skip detection."""
        frames = _check_frames(frames)
        lms, valid = self._landmarks(frames, landmarks, boxes)
        t = frames.shape[0]
        coeffs = np.full((t, COEFF_DIM), np.nan, dtype=np.float32)
        trans = np.full((t, 5), np.nan, dtype=np.float64)
        idx = np.flatnonzero(valid)
        crops = np.zeros((len(idx), 224, 224, 3), dtype=np.float32)
        for k, i in enumerate(idx):
            crops[k], trans[i], _ = align_face(frames[i], lms[i], self.lm3d)
        coeffs[idx] = self._regress(crops)
        return self._finish(coeffs, lms, trans, valid, name)

    def extract_per_frame(
        self,
        frames: np.ndarray,
        landmarks: np.ndarray | None = None,
        boxes: np.ndarray | None = None,
        name: str = "clip",
    ) -> dict[str, np.ndarray]:
        """Same result as :meth:`extract`, one frame at a time (the unbatched baseline for benchmarks)."""
        frames = _check_frames(frames)
        t = frames.shape[0]
        lms = np.full((t, 68, 2), np.nan, dtype=np.float32)
        coeffs = np.full((t, COEFF_DIM), np.nan, dtype=np.float32)
        trans = np.full((t, 5), np.nan, dtype=np.float64)
        for i in range(t):
            one = frames[i : i + 1]
            lm_i, ok = self._landmarks(
                one,
                None if landmarks is None else np.asarray(landmarks)[i : i + 1],
                None if boxes is None else np.asarray(boxes)[i : i + 1],
            )
            lms[i] = lm_i[0]
            if not ok[0]:
                continue
            crop, trans[i], _ = align_face(frames[i], lm_i[0], self.lm3d)
            x = torch.from_numpy(crop).permute(2, 0, 1)[None].to(self.device)
            with torch.inference_mode():
                coeffs[i] = self.recon_net(x).float().cpu().numpy()[0]
        valid = np.isfinite(lms).all(axis=(1, 2))
        return self._finish(coeffs, lms, trans, valid, name)
