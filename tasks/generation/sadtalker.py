"""SadTalker as a method (Table 1's SadTalker row, Table 2 rows 1 and 2, ``generate --method sadtalker``).

SadTalker's own motion from a reference frame's coefficients and 16 kHz speech, as upstream's
``src/generate_batch.py`` (wav cut to ``int(len / 640) * 640`` samples, one mel window per video frame,
random blink ratio) and ``src/test_audio2coeff.py`` (ExpNet expression, PoseVAE pose with a pose style and
a seed for z) compute it, with the released weights: the ``audio2exp.`` / ``audio2pose.`` sections of
``SadTalker_V0.0.2_256.safetensors`` (``render.checkpoint``) or the older ``auido2exp_00300-model.pth`` /
``auido2pose_00140-model.pth`` (``sadtalker.audio2exp_checkpoint`` / ``sadtalker.audio2pose_checkpoint``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emotalker.configs.constants import EXP_DIM, FPS, LIP_INDICES, MOTION_DIM, SAMPLE_RATE
from emotalker.configs.schema import PipelineConfig
from emotalker.models.lip import ExpNet, LipBranch, load_sadtalker_audio2exp
from emotalker.models.pose_vae import PoseVAE, build_pose_vae, sadtalker_pose
from emotalker.tasks.features.mel import mel_windows, melspectrogram

SAMPLES_PER_FRAME = SAMPLE_RATE // FPS  # 640: upstream's parse_audio_length at 16 kHz, 25 fps
EXPNET_CHUNK = 10  # Audio2Exp.test runs ExpNet on 10 frames at a time
BLINK = (0.5, 0.9, 1.0, 0.9, 0.5)  # generate_blink_seq_randomly's eye-blink ratio ramp


OLD_FILES = {
    "audio2exp_checkpoint": "auido2exp_00300-model.pth",
    "audio2pose_checkpoint": "auido2pose_00140-model.pth",
}


def _first_line(exc: Exception) -> str:
    return (str(exc) or type(exc).__name__).splitlines()[0]


class SadTalkerWeightsError(FileNotFoundError):
    """A SadTalker weight file the config names is missing or has no ExpNet / PoseVAE in it."""


@dataclass
class SadTalkerModels:
    """SadTalker's released audio-to-coefficient networks, frozen, in eval mode."""

    expnet: ExpNet
    pose_vae: PoseVAE
    sources: dict[str, str]  # network -> the file it was loaded from


def cut_wave(wave: np.ndarray) -> np.ndarray:
    """Upstream's ``crop_pad_audio(wav, parse_audio_length(...))``: whole 40 ms video frames only."""
    w = np.asarray(wave, dtype=np.float32).reshape(-1)
    n = int(len(w) / SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
    if n == 0:
        raise ValueError(
            f"speech must hold at least one video frame ({SAMPLES_PER_FRAME} samples), got {len(w)}"
        )
    return w[:n]


def sadtalker_mel_windows(wave: np.ndarray) -> np.ndarray:
    """(T, 80, 16) mel windows of the cut wav, T = len / 640, with the project's SadTalker mel."""
    w = cut_wave(wave)
    return mel_windows(melspectrogram(w), len(w) // SAMPLES_PER_FRAME, FPS)


def blink_ratio(num_frames: int, rng: random.Random) -> np.ndarray:
    """Upstream's ``generate_blink_seq_randomly`` (T, 1), drawing from ``rng`` as it draws from ``random``:
    none for T <= 20; else 5-frame blinks at gaps ``choice(range(min(10, T), min(T // 2, 70)))``."""
    ratio = np.zeros((num_frames, 1), dtype=np.float64)
    gaps = range(min(10, num_frames), min(int(num_frames / 2), 70))
    if num_frames <= 20 or not gaps:  # T = 21: upstream's choice over an empty range raises; no blink here
        return ratio
    frame = 0
    while 0 <= frame < num_frames:
        start = rng.choice(gaps)
        if frame + start + 5 > num_frames - 1:
            break
        ratio[frame + start : frame + start + 5, 0] = BLINK
        frame += start + 5
    return ratio


@torch.no_grad()
def sadtalker_expression(
    expnet: ExpNet, windows: np.ndarray | torch.Tensor, ref_exp: np.ndarray | torch.Tensor, ratio: np.ndarray
) -> np.ndarray:
    """``Audio2Exp.test``: ExpNet per frame on (mel window, the source's 64 exp, blink ratio) -> (T, 64)."""
    device = next(expnet.parameters()).device
    mel = torch.as_tensor(np.asarray(windows), dtype=torch.float32, device=device).reshape(-1, 1, 80, 16)
    ref = torch.as_tensor(np.asarray(ref_exp), dtype=torch.float32, device=device).reshape(1, EXP_DIM)
    r = torch.as_tensor(np.asarray(ratio), dtype=torch.float32, device=device).reshape(-1, 1)
    out = [
        expnet(
            mel[s : s + EXPNET_CHUNK], ref.expand(len(mel[s : s + EXPNET_CHUNK]), -1), r[s : s + EXPNET_CHUNK]
        )
        for s in range(0, len(mel), EXPNET_CHUNK)
    ]
    return torch.cat(out).cpu().numpy().astype(np.float32)


def sadtalker_motion_from_windows(
    models: SadTalkerModels,
    windows: np.ndarray,
    ref_coeff70: np.ndarray,
    pose_style: int = 0,
    seed: int = 0,
    still: bool = False,
) -> np.ndarray:
    """SadTalker's (T, 70) motion (exp 64 + angle 3 + trans 3) for T given mel windows (T, 80, 16).

    ``seed`` seeds both draws as ``random.seed(seed); torch.manual_seed(seed)`` would upstream: the blink
    ratio (Python ``random``) and one z per 32-frame pose chunk (torch). ``still``: upstream's ``--still``
    (no blinks)."""
    ref = np.asarray(ref_coeff70, dtype=np.float32).reshape(-1)
    if ref.shape[0] not in (MOTION_DIM, MOTION_DIM + 3):
        raise ValueError(f"ref_coeff70 must hold 70 (or 73) coefficients, got {ref.shape[0]}")
    t = len(windows)
    ratio = np.zeros((t, 1)) if still else blink_ratio(t, random.Random(seed))
    exp = sadtalker_expression(models.expnet, windows, ref[:EXP_DIM], ratio)
    pose = sadtalker_pose(models.pose_vae, windows, ref[:MOTION_DIM], pose_style, generator=seed).numpy()
    return np.concatenate([exp, pose], axis=1).astype(np.float32)


def sadtalker_motion(
    models: SadTalkerModels,
    wave: np.ndarray,
    ref_coeff70: np.ndarray,
    pose_style: int = 0,
    seed: int = 0,
    still: bool = False,
) -> np.ndarray:
    """SadTalker's motion (int(len / 640), 70) for 16 kHz speech (:func:`sadtalker_motion_from_windows`)."""
    return sadtalker_motion_from_windows(
        models, sadtalker_mel_windows(wave), ref_coeff70, pose_style, seed, still
    )


def clip_sadtalker_motion(
    cfg: PipelineConfig, models: SadTalkerModels, mel: np.ndarray, reference: np.ndarray
) -> np.ndarray:
    """SadTalker's motion for a test clip from its stored mel windows (one per video frame, so the frames
    match its ground truth) and the actor's neutral reference frame; Table 1 / Table 2 row 1."""
    return sadtalker_motion_from_windows(models, mel, reference, cfg.sadtalker.pose_style, cfg.sadtalker.seed)


def _weights(cfg: PipelineConfig, key: str) -> tuple[Path, str]:
    """The file for ``sadtalker.<key>``, or ``render.checkpoint`` when that key is unset (one-line errors)."""
    st = cfg.sadtalker
    own = {
        "audio2exp_checkpoint": st.audio2exp_checkpoint,
        "audio2pose_checkpoint": st.audio2pose_checkpoint,
    }[key]
    name, path = (
        (f"sadtalker.{key}", Path(own))
        if own is not None
        else ("render.checkpoint", Path(cfg.render.checkpoint))
    )
    if not path.is_file():
        raise SadTalkerWeightsError(
            f"{name}: {path} not found; SadTalker's {key.split('_')[0]} weights are in the "
            f"SadTalker_V0.0.2_256.safetensors release (or the older {OLD_FILES[key]})"
        )
    if own is None and path.suffix != ".safetensors":
        raise SadTalkerWeightsError(
            f"render.checkpoint: {path} is not SadTalker_V0.0.2_*.safetensors (audio2exp. / audio2pose.); "
            f"set sadtalker.{key}"
        )
    return path, name


def load_expnet(cfg: PipelineConfig, device: str = "cpu") -> ExpNet:
    """SadTalker's released ExpNet, strictly loaded, frozen, in eval mode."""
    path, name = _weights(cfg, "audio2exp_checkpoint")
    net = ExpNet()
    try:
        load_sadtalker_audio2exp(net, path, strict=True)
    except Exception as exc:  # noqa: BLE001 - any load failure becomes one line naming the key
        raise SadTalkerWeightsError(f"{name}: {_first_line(exc)}") from exc
    return net.requires_grad_(False).to(device).eval()


def load_sadtalker(cfg: PipelineConfig, device: str = "cpu") -> SadTalkerModels:
    """ExpNet and PoseVAE from ``render.checkpoint``'s safetensors or the ``sadtalker.*`` .pth files."""
    expnet = load_expnet(cfg, device)
    path, name = _weights(cfg, "audio2pose_checkpoint")
    try:
        pose = build_pose_vae(path, device)
    except Exception as exc:  # noqa: BLE001
        raise SadTalkerWeightsError(f"{name}: {_first_line(exc)}") from exc
    pose.requires_grad_(False)
    exp_path, _ = _weights(cfg, "audio2exp_checkpoint")
    return SadTalkerModels(expnet, pose, {"audio2exp": str(exp_path), "audio2pose": str(path)})


def sadtalker_lip_branch(cfg: PipelineConfig, device: str = "cpu") -> LipBranch:
    """Table 2 row 2's lips: SadTalker's released ExpNet, frozen, its 13 lip entries as they are (Eq. 10
    with lip_mix 0: no mapping2), in place of the trained lip branch; nothing is retrained."""
    lip = LipBranch.from_config(cfg.lip, lip_mix=0.0)
    lip.expnet = load_expnet(cfg, device)
    assert lip.lip_indices.tolist() == list(LIP_INDICES)
    return lip.requires_grad_(False).to(device).eval()
