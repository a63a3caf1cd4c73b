"""Generation from a face image and speech: identity coefficients, audio features, motion, outputs.

Outputs per call: ``motion.npy`` (T, 70), ``motion.mat`` (SadTalker-compatible ``coeff_3dmm`` (T, 70)
plus ``full_3dmm`` (T, 257) with the image's identity), ``coefficients.png`` and ``preview.mp4`` (the
reference image beside the lip/expression curves with a moving cursor, muxed with the audio). With a
Basel Face Model (``face.bfm_path``) the reference image carries the generated motion's 68 BFM landmarks,
projected into Deep3DFace's aligned crop and mapped back onto the photo, animated frame by frame.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from emotalker.configs.constants import (
    COEFF_SLICES,
    EXP_DIM,
    FPS,
    LIP_INDICES,
    SAMPLE_RATE,
    SAMPLES_PER_FRAME,
)
from emotalker.configs.schema import PipelineConfig
from emotalker.storage.files import atomic_path

if TYPE_CHECKING:
    from sklearn.cluster import MiniBatchKMeans

    from emotalker.models.bfm import BFMLandmarks

MAX_IMAGE_SIDE = 4096
MAX_IMAGE_PIXELS = 64_000_000


class InputError(ValueError):
    """A generation input that cannot be used; the message names the file."""


def image_size(path: Path) -> tuple[int, int] | None:
    """(width, height) from the image header alone (nothing decoded); None when Pillow cannot tell."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    limit = Image.MAX_IMAGE_PIXELS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            Image.MAX_IMAGE_PIXELS = None  # only the header is read here; the size check is ours
            with Image.open(path) as im:
                return im.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return None
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def read_image(path: Path) -> np.ndarray:
    """RGB uint8 image; rejects non-images and decompression bombs, downsizes very large photos.

    The header's size is checked before anything is decoded: a bomb claims a huge size in a few bytes.
    """
    import cv2

    if not path.is_file():
        raise InputError(f"identity image not found: {path}")
    too_large = f"too large; use an image under {MAX_IMAGE_PIXELS // 1_000_000} MP"
    size = image_size(path)
    if size is not None and size[0] * size[1] > MAX_IMAGE_PIXELS:
        raise InputError(f"{path}: the image header says {size[0]}x{size[1]} px, {too_large}")
    data = np.fromfile(path, dtype=np.uint8)
    try:
        header = cv2.imdecode(data, cv2.IMREAD_REDUCED_GRAYSCALE_8)
        if header is None:
            raise InputError(f"{path} is not an image OpenCV can decode (jpg/png/bmp/webp...)")
        if header.shape[0] * header.shape[1] * 64 > MAX_IMAGE_PIXELS:
            w, h = header.shape[1] * 8, header.shape[0] * 8
            raise InputError(f"{path}: the image is about {w}x{h} px, {too_large}")
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as exc:  # OpenCV's own limits on a format Pillow could not read
        raise InputError(f"{path}: OpenCV cannot decode it ({exc.err or 'error'}); use a jpg or png") from exc
    if img is None:
        raise InputError(f"{path} is not an image OpenCV can decode")
    h, w = img.shape[:2]
    scale = MAX_IMAGE_SIDE / max(h, w)
    if scale < 1:
        img = cv2.resize(img, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def identity_coefficients(image: np.ndarray, cfg: PipelineConfig, device: str) -> dict[str, np.ndarray]:
    """Deep3DFace coefficients of the reference image (the real extractor, weights from config paths)."""
    from emotalker.tasks.features.families.face import face_extractor

    out = face_extractor(cfg.face.model_dump(mode="json"), device).extract(image[None], name="identity image")
    if not bool(out["valid"][0]):
        raise InputError("no face found in the identity image")
    return {k: v[0] for k, v in out.items()}


VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")


def driving_motion(path: Path, cfg: PipelineConfig, device: str) -> np.ndarray:
    """(T_d, 70) motion of emotional driving frames, which stand in for the neutral reference (Table 5).

    ``path``: a video (its frames at 25 fps through the configured Deep3DFace), a ``.npy`` motion array
    (T, 70) or a ``.mat`` coefficient file (SadTalker ``coeff_3dmm`` or Deep3DFace id/exp/...).
    """
    from emotalker.models.motion import coeffs_to_motion
    from emotalker.tasks.features.coeff_import import (
        CoeffImportError,
        import_deep3dface_mat,
        import_sadtalker_coeff,
    )

    if not path.is_file():
        raise InputError(f"emotion reference not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            motion = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
        motion = np.asarray(motion, dtype=np.float32)
        motion = motion[None] if motion.ndim == 1 else motion
        if motion.ndim != 2 or motion.shape[1] != 70 or len(motion) == 0:
            raise InputError(f"{path}: driving motion must be (T, 70), got {motion.shape}")
    elif suffix == ".mat":
        try:
            try:
                motion = import_sadtalker_coeff(path)
            except CoeffImportError:
                motion = coeffs_to_motion(import_deep3dface_mat(path))
        except CoeffImportError as exc:
            raise InputError(
                f"{path}: neither SadTalker coeff_3dmm nor Deep3DFace coefficients ({exc})"
            ) from exc
    elif suffix in VIDEO_SUFFIXES:
        from emotalker.tasks.features.face_coeffs import NoFaceError
        from emotalker.tasks.features.families.face import face_extractor
        from emotalker.tasks.media import read_video_frames

        try:
            frames, fps = read_video_frames(path)
        except ValueError as exc:
            raise InputError(str(exc)) from exc
        if len(frames) == 0:
            raise InputError(f"{path}: the video has no frames")
        if fps > 0 and abs(fps - FPS) > 1e-3:  # the model runs at 25 fps: pick the frame shown at each tick
            n = max(1, int(len(frames) * FPS / fps))
            frames = frames[np.minimum((np.arange(n) * fps / FPS).astype(np.int64), len(frames) - 1)]
        try:
            out = face_extractor(cfg.face.model_dump(mode="json"), device).extract(frames, name=str(path))
        except NoFaceError as exc:
            raise InputError(str(exc)) from exc
        motion = out["motion"]
    else:
        raise InputError(
            f"{path}: emotion reference must be a video ({', '.join(VIDEO_SUFFIXES)}), a .npy (T, 70) motion "
            "or a .mat coefficient file"
        )
    if not np.isfinite(motion).all():
        raise InputError(f"{path}: driving motion has non-finite values")
    return np.ascontiguousarray(motion, dtype=np.float32)


def load_speech(path: Path) -> tuple[np.ndarray, str]:
    """16 kHz mono speech; other rates or channel counts are converted and reported, too-short rejected."""
    from emotalker.tasks.features.audio_io import load_audio, validate_audio
    from emotalker.tasks.media import MediaError, probe_audio

    if not path.is_file():
        raise InputError(f"audio file not found: {path}")
    try:
        info = probe_audio(path)
    except MediaError as exc:
        raise InputError(str(exc)) from exc
    src = f"{info.sample_rate} Hz, {info.channels} channel(s)"
    wave = load_audio(path, SAMPLE_RATE)
    try:
        wave = validate_audio(wave, SAMPLE_RATE, str(path))
    except ValueError as exc:
        raise InputError(str(exc)) from exc
    if len(wave) < SAMPLES_PER_FRAME:
        raise InputError(f"{path} is shorter than one video frame (40 ms)")
    note = "" if src == f"{SAMPLE_RATE} Hz, 1 channel(s)" else f"converted {src} -> 16000 Hz mono"
    return wave, note


def audio_features(
    wave: np.ndarray, cfg: PipelineConfig, device: str, km: MiniBatchKMeans
) -> dict[str, np.ndarray]:
    """The same features as the training stores: HuBERT ER and layer-k tokens at HuBERT's native rate,
    mel windows per 25 fps video frame."""
    from emotalker.tasks.features.families.hubert import hubert_features
    from emotalker.tasks.features.kmeans import apply_kmeans
    from emotalker.tasks.features.mel import mel_windows, melspectrogram

    n = len(wave) // SAMPLES_PER_FRAME
    hubert = hubert_features([wave], cfg.audio.model_dump(mode="json"), device)  # as the feature flow
    feats = {family: np.asarray(out[0], dtype=np.float32) for family, out in hubert.items()}
    return {
        "audio": feats["hubert_emotion"],
        "tokens": apply_kmeans(km, feats["hubert_content"]).astype(np.int64),
        "mel": mel_windows(melspectrogram(wave), n).astype(np.float32),
    }


def load_preview_bfm(cfg: PipelineConfig) -> BFMLandmarks | None:
    """The BFM landmarks when ``face.bfm_path`` is set (raises naming the file if unusable), else None."""
    if cfg.face.bfm_path is None:
        return None
    from emotalker.models.bfm import load_bfm

    return load_bfm(cfg.face.bfm_path)


def motion_landmarks(bfm: BFMLandmarks, motion: np.ndarray, identity: dict[str, np.ndarray]) -> np.ndarray:
    """(T, 68, 2) landmarks of the generated motion in the reference image's pixels (x right, y down).

    Identity from ``identity["coeffs"][0:80]``; the crop -> image mapping uses the reference image's own
    alignment (``identity["trans_params"]``), so the landmarks sit where Deep3DFace saw the face.
    """
    from emotalker.models.bfm import project_landmarks
    from emotalker.tasks.features.face_coeffs import crop_to_image

    crop = project_landmarks(
        bfm,
        identity["coeffs"][COEFF_SLICES["id"]],
        motion[:, :EXP_DIM],
        motion[:, EXP_DIM : EXP_DIM + 3],
        motion[:, EXP_DIM + 3 : EXP_DIM + 6],
    )
    return crop_to_image(crop, identity["trans_params"]).astype(np.float32)


def save_outputs(
    out_dir: Path,
    motion: np.ndarray,
    identity: dict[str, np.ndarray],
    image: np.ndarray,
    wave: np.ndarray,
    bfm: BFMLandmarks | None = None,
) -> dict[str, str]:
    """Write every output into a hidden staging folder, then rename each into ``out_dir``.

    A generation killed midway leaves no truncated ``motion.npy`` / ``preview.mp4`` under a final name.
    With ``bfm`` the preview's reference image shows the motion's animated landmarks.
    """
    import shutil

    import scipy.io

    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    stage = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    stage.mkdir()
    np.save(stage / "motion.npy", motion.astype(np.float32))
    full = np.repeat(identity["coeffs"][None].astype(np.float32), len(motion), axis=0)
    full[:, COEFF_SLICES["exp"]] = motion[:, :EXP_DIM]
    full[:, COEFF_SLICES["angle"]] = motion[:, EXP_DIM : EXP_DIM + 3]
    full[:, COEFF_SLICES["trans"]] = motion[:, EXP_DIM + 3 :]
    scipy.io.savemat(stage / "motion.mat", {"coeff_3dmm": motion.astype(np.float32), "full_3dmm": full})
    coefficient_plot(motion, stage / "coefficients.png")
    landmarks = None if bfm is None else motion_landmarks(bfm, motion, identity)
    preview_video(image, stage / "coefficients.png", len(motion), wave, stage / "preview.mp4", landmarks)
    names = {"motion_npy": "motion.npy", "motion_mat": "motion.mat", "plot": "coefficients.png"}
    names["preview"] = "preview.mp4"
    for name in names.values():
        os.replace(stage / name, out_dir / name)
    stage.rmdir()
    return {key: str(out_dir / name) for key, name in names.items()}


def save_video_outputs(
    out_dir: Path,
    renderer: Any,
    source: Any,
    motion: np.ndarray,
    audio_path: Path,
    *,
    mode: str,
    batch_size: int,
) -> dict[str, str]:
    """``video.mp4`` (one rendered frame per motion frame, 25 fps, with the audio) and ``source.mat``.

    ``source.mat`` is the source crop in SadTalker's preprocess layout (``coeff_3dmm`` (1, 73) = 64 exp +
    3 angle + 3 trans + crop s, tx, ty; ``full_3dmm`` (1, 257)), so SadTalker's own scripts can render
    ``motion.mat`` in any mode. Frames stream to the encoder batch by batch.
    """
    import scipy.io

    from emotalker.tasks.generation.render import render_frames, write_video

    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "source.mat", suffix=".partial.mat") as mat_tmp:
        crop = {"coeff_3dmm": source.coeff_3dmm[None].astype(np.float32), "full_3dmm": source.coeffs[None]}
        scipy.io.savemat(mat_tmp, crop)
    frames = render_frames(renderer, source, motion, mode, batch_size)
    video = write_video(frames, audio_path, out_dir / "video.mp4", fps=FPS)
    return {"video": str(video), "source_mat": str(out_dir / "source.mat")}


def coefficient_plot(motion: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.arange(len(motion)) / FPS
    fig, axes = plt.subplots(3, 1, figsize=(6.4, 4.8), sharex=True)
    axes[0].plot(t, motion[:, list(LIP_INDICES)], lw=0.8)
    axes[0].set_ylabel("lip exp")
    other = [i for i in range(EXP_DIM) if i not in LIP_INDICES][:12]
    axes[1].plot(t, motion[:, other], lw=0.8)
    axes[1].set_ylabel("face exp")
    axes[2].plot(t, motion[:, EXP_DIM:], lw=0.8)
    axes[2].set_ylabel("pose")
    axes[2].set_xlabel("seconds")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


FACE_COLOUR = (40, 220, 60)
MOUTH_COLOUR = (255, 40, 200)
_SUBPIXEL = 4  # cv2 fixed-point bits: landmarks move smoothly, not in whole-pixel steps


def draw_landmarks(panel: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    """Filled circles at (68, 2) pixel points on ``panel`` in place (mouth 48-67 in its own colour).

    Non-finite or far off-panel points are skipped.
    """
    import cv2

    h, w = panel.shape[:2]
    for i, (x, y) in enumerate(np.asarray(points, dtype=np.float64)):
        if not (np.isfinite(x) and np.isfinite(y)) or not (-w <= x <= 2 * w and -h <= y <= 2 * h):
            continue
        centre = (round(x * (1 << _SUBPIXEL)), round(y * (1 << _SUBPIXEL)))
        colour = MOUTH_COLOUR if i >= 48 else FACE_COLOUR
        cv2.circle(panel, centre, radius << _SUBPIXEL, colour, -1, cv2.LINE_AA, _SUBPIXEL)
    return panel


def preview_video(
    image: np.ndarray,
    plot_png: Path,
    n_frames: int,
    wave: np.ndarray,
    path: Path,
    landmarks: np.ndarray | None = None,
) -> Path:
    """Reference image | coefficient plot with a cursor at the current frame, H.264 + AAC.

    ``landmarks`` (n_frames, 68, 2) in ``image`` pixels are drawn on the reference image, one frame at a
    time (memory stays one frame, whatever the length).
    """
    import cv2

    from emotalker.tasks.media import encode_mp4

    plot = cv2.cvtColor(cv2.imread(str(plot_png)), cv2.COLOR_BGR2RGB)
    h = plot.shape[0]
    ref = cv2.resize(image, (int(image.shape[1] * h / image.shape[0]), h))
    base = np.concatenate([ref, plot], axis=1)
    base = base[: base.shape[0] // 2 * 2, : base.shape[1] // 2 * 2]
    x0, x1 = ref.shape[1] + int(0.125 * plot.shape[1]), ref.shape[1] + int(0.97 * plot.shape[1])
    if landmarks is not None:
        landmarks = np.asarray(landmarks, dtype=np.float64)
        if landmarks.shape != (n_frames, 68, 2):
            raise ValueError(f"landmarks must be ({n_frames}, 68, 2), got {landmarks.shape}")
        scale = np.array([ref.shape[1] / image.shape[1], h / image.shape[0]])
        radius = max(1, round(h / 160))

    def frames() -> Iterator[np.ndarray]:
        for i in range(n_frames):
            frame = base.copy()
            if landmarks is not None:
                panel = ref.copy()
                draw_landmarks(panel, landmarks[i] * scale, radius)
                frame[:, : ref.shape[1]] = panel[: frame.shape[0]]
            x = int(x0 + (x1 - x0) * i / max(1, n_frames - 1))
            cv2.line(frame, (x, 0), (x, frame.shape[0] - 1), (220, 30, 30), 2)
            yield frame

    encode_mp4(path, frames(), size=(base.shape[1], base.shape[0]), fps=FPS, wave=wave)
    return path


def generation_inputs_summary(wave: np.ndarray, note: str) -> dict[str, Any]:
    return {
        "audio_seconds": len(wave) / SAMPLE_RATE,
        "frames": len(wave) // SAMPLES_PER_FRAME,
        "audio_note": note,
    }
