"""Rendering talking-head video with SadTalker's face renderer: source crop, frames, streamed encoding.

``load_renderer`` builds the renderer from the ``render:`` config and loads the released checkpoints
strictly; ``prepare_source`` crops the photo as SadTalker's ``croper.py`` does (face-alignment landmarks)
and computes the crop's 3DMM coefficients; ``render_frames`` yields uint8 frame batches, each frame
driven by the 27 coefficient frames centred on it; ``write_video`` streams them to H.264 + AAC.
Source-only work (keypoints, appearance volume, dense-motion source inputs) happens once per source.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotalker.configs.constants import COEFF_SLICES, FPS, SAMPLE_RATE
from emotalker.configs.schema import PipelineConfig
from emotalker.models.renderer import COEFF_NC, FaceRenderer, RendererWidths, coefficient_windows
from emotalker.models.renderer.blocks import bake_spectral_norm, fold_batchnorm
from emotalker.models.renderer.checkpoints import load_facerender_weights, load_mapping_weights, require_file
from emotalker.storage.files import atomic_path
from emotalker.tasks.progress import progress_bar

MODES = ("crop", "full", "still")
_log = logging.getLogger(__name__)


class RenderInputError(ValueError):
    """A source image or motion the renderer cannot use; the message names it."""


@dataclass
class SourceImage:
    """A source photo prepared as SadTalker's preprocessing does.

    ``image`` is the face crop resized to the render size, float32 CHW in [0, 1]; ``coeff_3dmm`` the crop's
    73 coefficients in SadTalker's layout (64 exp, 3 angle, 3 trans, crop s, tx, ty) and ``coeffs`` its
    257 Deep3DFace coefficients; ``box`` (x0, y0, x1, y1) is the crop in ``original`` (RGB uint8), which
    ``full`` mode pastes the rendered face back into.
    """

    image: np.ndarray
    coeff_3dmm: np.ndarray
    coeffs: np.ndarray
    box: tuple[int, int, int, int]
    original: np.ndarray
    landmarks: np.ndarray
    mode: str = "crop"

    @property
    def crop_size(self) -> tuple[int, int]:
        """(width, height) of the crop box in the original image."""
        return self.box[2] - self.box[0], self.box[3] - self.box[1]


# ------------------------------------------------------------------------------------------ renderer


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 products in hardware (AVX512-BF16 or AMX); elsewhere bfloat16 is
    emulated and slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def render_dtype(cfg: PipelineConfig, device: str) -> torch.dtype:
    """``render.dtype`` for the image-space layers; ``auto`` is float16 on CUDA (tensor cores) and float32
    on CPU (``bfloat16`` is the fast choice on CPUs with AVX512-BF16 or AMX, see the README)."""
    on_cuda = str(device).startswith("cuda")
    if cfg.render.dtype == "auto":
        return torch.float16 if on_cuda else torch.float32
    if cfg.render.dtype == "bfloat16" and not on_cuda and not cpu_has_native_bfloat16():
        _log.warning("render.dtype=bfloat16: this CPU emulates bfloat16 (no AVX512-BF16/AMX); use float32")
    return getattr(torch, cfg.render.dtype)


def load_renderer(
    cfg: PipelineConfig, device: str | None = None, modes: Iterable[str] | None = None
) -> FaceRenderer:
    """The renderer at ``render.widths`` with the released weights of ``render.checkpoint`` and the mapping
    net(s) the ``modes`` need (default: ``render.mode``); every file is loaded strictly."""
    device = device or cfg.torch_device()
    modes = tuple(modes or (cfg.render.mode,))
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise RenderInputError(f"unknown render mode(s) {bad}; choose from {list(MODES)}")
    rc = cfg.render
    ckpt = require_file(
        rc.checkpoint,
        "render.checkpoint",
        "safetensors" if rc.checkpoint.suffix == ".safetensors" else "facevid2vid",
    )
    layouts = tuple(sorted({COEFF_NC[m] for m in modes}))
    mapping_keys = {
        70: ("render.mapping_checkpoint", "mapping_70"),
        73: ("render.mapping_full_checkpoint", "mapping_73"),
    }
    mapping_paths = {
        n: require_file(rc.mapping_checkpoint if n == 70 else rc.mapping_full_checkpoint, *mapping_keys[n])
        for n in layouts
    }
    renderer = FaceRenderer(RendererWidths.from_config(rc.widths), layouts)
    load_facerender_weights(renderer.kp_extractor, renderer.generator, ckpt)
    for n in layouts:
        load_mapping_weights(renderer.mappings[str(n)], mapping_paths[n])
    renderer.eval().requires_grad_(False)
    bake_spectral_norm(renderer.generator)  # inference only: sigma computed once, not per frame
    fold_batchnorm(renderer.generator)  # conv -> BatchNorm pairs become one conv
    renderer.to(device)
    renderer.generator.set_image_precision(render_dtype(cfg, device))
    return renderer


# ------------------------------------------------------------------------------------------ source


def sadtalker_crop_box(lm68: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """The face box (x0, y0, x1, y1) SadTalker's ``croper.py`` cuts, from 68 landmarks in image pixels.

    An oriented square from the eye and mouth centres (side = 2 x max(2 x eye distance, 1.8 x eye-mouth
    distance)), its bounding box with a 10% border clamped to the image, then the square's axis-aligned
    extent inside it. Computed in original pixels (SadTalker's shrink for huge photos only saves time).
    """
    lm = np.asarray(lm68, dtype=np.float64)
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_left + eye_right) / 2, eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    if not np.isfinite(lm).all() or np.hypot(*x) < 1e-6:
        raise RenderInputError("the source image's face landmarks are degenerate (eyes and mouth coincide)")
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    border = max(int(np.rint(np.hypot(*x) * 2 * 0.1)), 3)
    cx0 = max(int(np.floor(quad[:, 0].min())) - border, 0)
    cy0 = max(int(np.floor(quad[:, 1].min())) - border, 0)
    cx1 = min(int(np.ceil(quad[:, 0].max())) + border, width)
    cy1 = min(int(np.ceil(quad[:, 1].max())) + border, height)
    q = quad - [cx0, cy0] + 0.5
    lx, ly = max(min(q[0, 0], q[1, 0]), 0), max(min(q[0, 1], q[3, 1]), 0)
    rx, ry = min(max(q[2, 0], q[3, 0]), cx1 - cx0), min(max(q[1, 1], q[2, 1]), cy1 - cy0)
    box = (cx0 + int(lx), cy0 + int(ly), cx0 + int(rx), cy0 + int(ry))
    if box[2] - box[0] < 8 or box[3] - box[1] < 8:
        raise RenderInputError(f"face box {box} is too small to render from")
    return box


def sadtalker_coeff_3dmm(coeffs: np.ndarray, trans_params: np.ndarray) -> np.ndarray:
    """SadTalker's preprocess ``coeff_3dmm`` (73): exp 64, angle 3, trans 3, and the crop's s, tx, ty."""
    c = np.asarray(coeffs, dtype=np.float32)
    return np.concatenate(
        [
            c[COEFF_SLICES["exp"]],
            c[COEFF_SLICES["angle"]],
            c[COEFF_SLICES["trans"]],
            np.asarray(trans_params)[2:5],
        ]
    ).astype(np.float32)


def prepare_source(image_rgb: np.ndarray, cfg: PipelineConfig, mode: str = "crop") -> SourceImage:
    """Photo (H, W, 3) uint8 RGB -> the face crop at ``render.image_size`` and its coefficients.

    Landmarks and coefficients use the project's face-alignment + Deep3DFace extractor (``face.*`` keys),
    run on the crop as SadTalker's preprocessing does.
    """
    import cv2

    from emotalker.tasks.features.families.face import face_extractor

    if mode not in MODES:
        raise RenderInputError(f"unknown render mode {mode!r}; choose from {list(MODES)}")
    img = np.asarray(image_rgb)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise RenderInputError(f"source image must be (H, W, 3) uint8 RGB, got {img.shape} {img.dtype}")
    extractor = face_extractor(cfg.face.model_dump(mode="json"), cfg.torch_device())
    lms, valid = extractor.landmark_detector.detect(img[None])
    if not bool(valid[0]):
        raise RenderInputError("no face found in the source image")
    box = sadtalker_crop_box(lms[0], img.shape[1], img.shape[0])
    size = cfg.render.image_size
    crop = img[box[1] : box[3], box[0] : box[2]]
    interp = cv2.INTER_AREA if min(crop.shape[:2]) > size else cv2.INTER_CUBIC
    crop = np.ascontiguousarray(cv2.resize(crop, (size, size), interpolation=interp))
    # the photo's landmarks mapped into the crop (SadTalker detects again on the crop: same points)
    scale = np.array([size / (box[2] - box[0]), size / (box[3] - box[1])], dtype=np.float32)
    crop_lms = (lms[0] - np.array(box[:2], dtype=np.float32)) * scale
    try:
        out = extractor.extract(crop[None], landmarks=crop_lms[None], name="source crop")
    except ValueError as exc:
        raise RenderInputError(f"source crop: {exc}") from exc
    if not bool(out["valid"][0]):
        raise RenderInputError("no face found in the source image's face crop")
    return SourceImage(
        image=(crop.astype(np.float32) / 255.0).transpose(2, 0, 1).copy(),
        coeff_3dmm=sadtalker_coeff_3dmm(out["coeffs"][0], out["trans_params"][0]),
        coeffs=out["coeffs"][0].astype(np.float32),
        box=box,
        original=img,
        landmarks=lms[0].astype(np.float32),
        mode=mode,
    )


# ------------------------------------------------------------------------------------------ frames


def driving_coefficients(source: SourceImage, motion: np.ndarray, mode: str) -> tuple[np.ndarray, np.ndarray]:
    """(source row, per-frame rows) in the mapping net's layout, as SadTalker's facerender batch builds them.

    crop: 70 motion columns; still: the source's pose and translation replace the motion's; full: the
    source crop's (s, tx, ty) appended to every frame (73 columns).
    """
    motion = np.asarray(motion, dtype=np.float32)
    if motion.ndim != 2 or motion.shape[1] != 70 or len(motion) == 0:
        raise RenderInputError(f"motion must be (T, 70) with T >= 1, got {motion.shape}")
    if not np.isfinite(motion).all():
        raise RenderInputError("motion has non-finite values")
    src = source.coeff_3dmm[: COEFF_NC[mode]]
    target = motion.copy()
    if mode == "still":
        target[:, 64:70] = src[64:70]
    if mode == "full":
        target = np.concatenate([target, np.repeat(src[None, 70:73], len(target), axis=0)], axis=1)
    return src[None], target


def _to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.float().clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def _even(n: int) -> int:
    return max(2, n - n % 2)


def output_size(source: SourceImage, mode: str, render_size: int) -> tuple[int, int]:
    """(width, height) of the frames: the photo's size in ``full``; the crop's aspect at the render width."""
    if mode == "full":
        return source.original.shape[1], source.original.shape[0]
    w, h = source.crop_size
    return render_size, _even(round(render_size * h / w))


def paste_back(frame: np.ndarray, source: SourceImage) -> np.ndarray:
    """Rendered crop -> the photo with the crop blended in at its box (Poisson blending, as paste_pic.py)."""
    import cv2

    full = source.original
    x0, y0, x1, y1 = source.box
    patch = cv2.resize(frame, (x1 - x0, y1 - y0), interpolation=cv2.INTER_LINEAR)
    fh, fw = full.shape[:2]
    centre = (min((x0 + x1) // 2, fw - (x1 - x0) // 2), min((y0 + y1) // 2, fh - (y1 - y0) // 2))
    try:
        return cv2.seamlessClone(patch, full, np.full(patch.shape, 255, np.uint8), centre, cv2.NORMAL_CLONE)
    except cv2.error:  # box touching the border: plain paste
        out = full.copy()
        out[y0:y1, x0:x1] = patch
        return out


def render_frames(
    renderer: FaceRenderer,
    source: SourceImage,
    motion: np.ndarray,
    mode: str | None = None,
    batch_size: int = 4,
) -> Iterator[np.ndarray]:
    """Yield (B, H, W, 3) uint8 RGB frame batches, one frame per motion row, with a progress bar.

    Only one batch of windows and frames exists at a time, so memory does not grow with the motion's length.
    """
    import cv2

    mode = mode or source.mode
    if mode not in MODES:
        raise RenderInputError(f"unknown render mode {mode!r}; choose from {list(MODES)}")
    src_row, target = driving_coefficients(source, motion, mode)
    device = next(renderer.kp_extractor.parameters()).device
    image = torch.from_numpy(source.image)[None].to(device)
    size = image.shape[-1]
    out_w, out_h = output_size(source, mode, size)
    bar = progress_bar(len(target), desc=f"render ({mode})", unit="frame")
    try:
        with torch.inference_mode():
            state = renderer.prepare(image, torch.from_numpy(src_row).to(device), mode)
            for start in range(0, len(target), batch_size):
                stop = min(start + batch_size, len(target))
                windows = torch.from_numpy(coefficient_windows(target, start, stop)).to(device)
                frames = _to_uint8(renderer.render(state, windows))
                if mode == "full":
                    frames = np.stack([paste_back(f, source) for f in frames])
                elif (out_w, out_h) != (size, size):
                    frames = np.stack(
                        [cv2.resize(f, (out_w, out_h), interpolation=cv2.INTER_AREA) for f in frames]
                    )
                bar.update(stop - start)
                yield frames
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------ video


def write_video(
    frames: Iterable[np.ndarray], audio_path: str | Path, out_path: str | Path, fps: int = FPS
) -> Path:
    """Stream frames ((H, W, 3) or (B, H, W, 3) uint8 RGB batches) to H.264 + the audio as AAC.

    Frames are encoded as they arrive (constant memory); odd sizes are padded by one pixel (yuv420p); the
    audio (any format, converted to 16 kHz mono) is cut to the video's length. Written to a temporary name
    and renamed, so a killed run leaves no truncated ``out_path``.
    """
    from emotalker.tasks.features.audio_io import load_audio
    from emotalker.tasks.media import encode_mp4

    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batches = (np.asarray(b) for b in frames)
    first = next(batches, None)
    if first is None or first.size == 0:
        raise RenderInputError(f"{out_path}: no frames to write")
    h, w = first.shape[-3:-1]
    wave = load_audio(Path(audio_path), SAMPLE_RATE)
    width, height = w + w % 2, h + h % 2

    def padded() -> Iterator[np.ndarray]:
        for batch in itertools.chain([first], batches):
            for frame in batch if batch.ndim == 4 else batch[None]:
                if frame.shape[:2] != (height, width):
                    pad = ((0, height - frame.shape[0]), (0, width - frame.shape[1]), (0, 0))
                    frame = np.pad(frame, pad, mode="edge")
                yield frame

    with atomic_path(out_path, suffix=f".partial{out_path.suffix}") as tmp:
        encode_mp4(tmp, padded(), size=(width, height), fps=fps, wave=wave)
    return out_path
