"""SadTalker's PoseVAE (``src/audio2pose_models``): audio + reference pose + pose style id -> head pose.

Table 2 row 1 (SadTalker) is ExpNet expression (:mod:`emotalker.models.lip`) plus this head pose.
Module and parameter names mirror upstream's ``Audio2Pose`` so that the released weights load strictly:
the ``audio2pose.`` section of ``SadTalker_V0.0.2_256.safetensors`` and ``model`` of the older
``auido2pose_00140-model.pth`` both hold the same 419 tensors: the Wav2Lip-style audio encoder
(``audio_encoder.audio_encoder.*``, 91; frozen in training, but its weights live in the checkpoint, which
upstream loads strictly with the wav2lip loading commented out), the CVAE (``netG.encoder.*`` and
``netG.decoder.*``, 154 each) and the pose-sequence discriminator (``netD_motion.*``, 20). Inference uses
the audio encoder and ``netG.decoder`` only; the CVAE encoder and the discriminator are kept, parameters
only, so the checkpoints load strictly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from emotalker.configs.constants import MOTION_DIM, POSE_DIM
from emotalker.models.lip import AudioEncoder
from emotalker.models.weights import (
    CheckpointError,
    load_strict,
    read_safetensors_section,
    torch_load_weights,
)

# src/config/audio2pose.yaml (MODEL.CVAE.*, DATASET.NUM_CLASSES, MODEL.DISCRIMINATOR.*)
AUDIO_EMB_IN_SIZE = 512
AUDIO_EMB_OUT_SIZE = 6
SEQ_LEN = 32
LATENT_SIZE = 64
ENCODER_LAYER_SIZES: tuple[int, ...] = (192, 128)
DECODER_LAYER_SIZES: tuple[int, ...] = (128, 192)
NUM_CLASSES = 46
DISCRIMINATOR_INPUT_CHANNELS = 6
DISCRIMINATOR_LEAKY_RELU = False
# src/test_audio2coeff.py: savgol_filter(pose, 13, 2, axis=time)
SAVGOL_WINDOW = 13
SAVGOL_POLYORDER = 2
RESUNET_FILTERS: tuple[int, ...] = (32, 64, 128, 256)
SAFETENSORS_PREFIX = "audio2pose."
N_TENSORS = 419  # 91 audio encoder + 154 CVAE encoder + 154 CVAE decoder + 20 discriminator
CHECKPOINT_HELP = (
    "download SadTalker_V0.0.2_256.safetensors (https://github.com/OpenTalker/SadTalker/releases) "
    "or the older auido2pose_00140-model.pth"
)


class ResidualConv(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice) with a conv+BN skip; stride halves time."""

    def __init__(self, cin: int, cout: int, stride: int | tuple[int, int], padding: int) -> None:
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.BatchNorm2d(cin),
            nn.ReLU(),
            nn.Conv2d(cin, cout, 3, stride, padding),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
            nn.Conv2d(cout, cout, 3, padding=1),
        )
        self.conv_skip = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x) + self.conv_skip(x)


class Upsample(nn.Module):
    """Transposed conv that doubles the time axis (named ``upsample`` as upstream)."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int]) -> None:
        super().__init__()
        self.upsample = nn.ConvTranspose2d(cin, cout, kernel, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.upsample(x)


class ResUnet(nn.Module):
    """(B, 1, 32, 6) -> (B, 1, 32, 6) in (0, 1): a residual U-Net that pools time only (stride (2, 1))."""

    def __init__(self, channel: int = 1, filters: tuple[int, ...] = RESUNET_FILTERS) -> None:
        super().__init__()
        f0, f1, f2, f3 = filters
        self.input_layer = nn.Sequential(
            nn.Conv2d(channel, f0, 3, padding=1),
            nn.BatchNorm2d(f0),
            nn.ReLU(),
            nn.Conv2d(f0, f0, 3, padding=1),
        )
        self.input_skip = nn.Sequential(nn.Conv2d(channel, f0, 3, padding=1))
        self.residual_conv_1 = ResidualConv(f0, f1, (2, 1), 1)
        self.residual_conv_2 = ResidualConv(f1, f2, (2, 1), 1)
        self.bridge = ResidualConv(f2, f3, (2, 1), 1)
        self.upsample_1 = Upsample(f3, f3, (2, 1), (2, 1))
        self.up_residual_conv1 = ResidualConv(f3 + f2, f2, 1, 1)
        self.upsample_2 = Upsample(f2, f2, (2, 1), (2, 1))
        self.up_residual_conv2 = ResidualConv(f2 + f1, f1, 1, 1)
        self.upsample_3 = Upsample(f1, f1, (2, 1), (2, 1))
        self.up_residual_conv3 = ResidualConv(f1 + f0, f0, 1, 1)
        self.output_layer = nn.Sequential(nn.Conv2d(f0, 1, 1, 1), nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1 = self.input_layer(x) + self.input_skip(x)
        x2 = self.residual_conv_1(x1)
        x3 = self.residual_conv_2(x2)
        x = self.up_residual_conv1(torch.cat([self.upsample_1(self.bridge(x3)), x3], dim=1))
        x = self.up_residual_conv2(torch.cat([self.upsample_2(x), x2], dim=1))
        x = self.up_residual_conv3(torch.cat([self.upsample_3(x), x1], dim=1))
        return self.output_layer(x)


class CVAEEncoder(nn.Module):
    """Training-time posterior q(z | pose, ref, audio, style); parameters only (inference draws z).

    Upstream's ``ENCODER`` widens its first layer to 192 + 64 + 32 * 6 + 6 = 454 inputs.
    """

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        sizes = [ENCODER_LAYER_SIZES[0] + LATENT_SIZE + SEQ_LEN * AUDIO_EMB_OUT_SIZE + POSE_DIM]
        sizes += list(ENCODER_LAYER_SIZES[1:])
        self.MLP = nn.Sequential()
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            self.MLP.add_module(f"A{i}", nn.ReLU())
        self.linear_means = nn.Linear(sizes[-1], LATENT_SIZE)
        self.linear_logvar = nn.Linear(sizes[-1], LATENT_SIZE)
        self.linear_audio = nn.Linear(AUDIO_EMB_IN_SIZE, AUDIO_EMB_OUT_SIZE)
        self.classbias = nn.Parameter(torch.randn(NUM_CLASSES, LATENT_SIZE))


class CVAEDecoder(nn.Module):
    """p(pose motion | z + classbias[style], ref pose, audio): one 32-frame chunk of 6-dim motion."""

    def __init__(self) -> None:
        super().__init__()
        self.resunet = ResUnet()
        sizes = [LATENT_SIZE + SEQ_LEN * AUDIO_EMB_OUT_SIZE + POSE_DIM, *DECODER_LAYER_SIZES]
        self.MLP = nn.Sequential()
        for i, (cin, cout) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            self.MLP.add_module(f"L{i}", nn.Linear(cin, cout))
            last = i + 2 == len(sizes)
            self.MLP.add_module("sigmoid" if last else f"A{i}", nn.Sigmoid() if last else nn.ReLU())
        self.pose_linear = nn.Linear(POSE_DIM, POSE_DIM)
        self.linear_audio = nn.Linear(AUDIO_EMB_IN_SIZE, AUDIO_EMB_OUT_SIZE)
        self.classbias = nn.Parameter(torch.randn(NUM_CLASSES, LATENT_SIZE))

    def forward(
        self, z: torch.Tensor, style: torch.Tensor, ref: torch.Tensor, audio_emb: torch.Tensor
    ) -> torch.Tensor:
        """z (B, 64), style (B,) long, ref (B, 6), audio_emb (B, 32, 512) -> motion (B, 32, 6)."""
        b = z.shape[0]
        audio = self.linear_audio(audio_emb).reshape(b, -1)
        x = self.MLP(torch.cat([ref, z + self.classbias[style], audio], dim=-1))
        x = self.resunet(x.reshape(b, 1, SEQ_LEN, -1))
        return self.pose_linear(x.squeeze(1))


class CVAE(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = CVAEEncoder()
        self.decoder = CVAEDecoder()


class ConvNormRelu(nn.Module):
    """Conv1d (no bias) + BatchNorm1d + ReLU of the discriminator; defaults k4 s2 p1 when downsampling."""

    def __init__(
        self, cin: int, cout: int, downsample: bool = False, kernel: int | None = None, leaky: bool = False
    ) -> None:
        super().__init__()
        k, s, p = (4, 2, 1) if downsample else (3, 1, 1)
        self.conv = nn.Conv1d(cin, cout, kernel or k, s, p, bias=False)
        self.norm = nn.BatchNorm1d(cout)
        self.act = nn.LeakyReLU(0.2) if leaky else nn.ReLU()


class PoseSequenceDiscriminator(nn.Module):
    """Training-time motion discriminator; parameters only (kept for strict loading)."""

    def __init__(self) -> None:
        super().__init__()
        leaky = DISCRIMINATOR_LEAKY_RELU
        self.seq = nn.Sequential(
            ConvNormRelu(DISCRIMINATOR_INPUT_CHANNELS, 256, downsample=True, leaky=leaky),
            ConvNormRelu(256, 512, downsample=True, leaky=leaky),
            ConvNormRelu(512, 1024, kernel=3, leaky=leaky),
            nn.Conv1d(1024, 1, 3, 1, 1, bias=True),
        )


class PoseAudioEncoder(nn.Module):
    """Wrapper named as upstream (``audio_encoder.audio_encoder.<i>``): (B, T, 1, 80, 16) -> (B, T, 512).

    Upstream stacks the windows time-major and reshapes batch-major, which scrambles B > 1; SadTalker
    only runs B = 1, where both agree, so this flattens batch-major.
    """

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = AudioEncoder()

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        b, t = mel.shape[:2]
        return self.audio_encoder(mel.reshape(b * t, *mel.shape[2:])).reshape(b, t, -1)


class PoseVAE(nn.Module):
    """SadTalker ``Audio2Pose`` with the released parameter names (see the module docstring)."""

    seq_len = SEQ_LEN
    latent_size = LATENT_SIZE
    num_classes = NUM_CLASSES

    def __init__(self) -> None:
        super().__init__()
        self.audio_encoder = PoseAudioEncoder()
        self.netG = CVAE()
        self.netD_motion = PoseSequenceDiscriminator()
        self.audio_encoder.requires_grad_(False)  # frozen upstream (not trained with the CVAE)


def pose_chunks(num_frames: int, seq_len: int = SEQ_LEN) -> list[tuple[int, int, int]]:
    """Upstream's chunking of a ``num_frames``-frame clip as ``(start, stop, keep)`` over mel windows.

    Frame 0 is the reference (zero motion), so windows ``1 .. T-1`` are split into full ``seq_len``
    chunks; a remainder chunk covers the LAST ``seq_len`` windows (``[T - seq_len, T)``, overlapping the
    previous chunk) and keeps its last ``keep`` outputs. When ``T - 1 < seq_len`` the single chunk
    ``[1, T)`` is front-padded with copies of its first audio embedding (upstream's short-audio fix).
    E.g. T = 70 -> [(1, 33, 32), (33, 65, 32), (38, 70, 5)].
    """
    if num_frames < 1:
        raise ValueError(f"num_frames must be >= 1, got {num_frames}")
    n = num_frames - 1
    div, re = divmod(n, seq_len)
    chunks = [(1 + i * seq_len, 1 + (i + 1) * seq_len, seq_len) for i in range(div)]
    if re:
        chunks.append((max(1, num_frames - seq_len), num_frames, re))
    return chunks


def savgol_window(num_frames: int) -> int:
    """13, or ``int((T - 1) / 2) * 2 + 1`` (the largest odd window <= T) when T < 13."""
    return SAVGOL_WINDOW if num_frames >= SAVGOL_WINDOW else int((num_frames - 1) / 2) * 2 + 1


def smooth_pose(pose: np.ndarray) -> np.ndarray:
    """Upstream's ``savgol_filter(pose, window, 2, axis=time)`` (scipy's default mode 'interp'), float32."""
    from scipy.signal import savgol_filter

    pose = np.asarray(pose, dtype=np.float32)
    window = savgol_window(pose.shape[0])
    if window <= SAVGOL_POLYORDER:
        raise ValueError(
            f"SadTalker's pose smoothing needs T >= 3 frames (savgol window {window} <= polyorder "
            f"{SAVGOL_POLYORDER}), got T={pose.shape[0]}"
        )
    return savgol_filter(pose, window, SAVGOL_POLYORDER, axis=0)


def _as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    if isinstance(generator, int) and not isinstance(generator, bool):
        return torch.Generator().manual_seed(generator)
    return generator


@torch.no_grad()
def sadtalker_pose_motion(
    model: PoseVAE,
    mel_windows: torch.Tensor | np.ndarray,
    ref_pose6: torch.Tensor | np.ndarray,
    pose_style: int,
    generator: torch.Generator | int | None = None,
) -> torch.Tensor:
    """Unsmoothed motion (T, 6) relative to the reference pose; row 0 is zero (see :func:`sadtalker_pose`)."""
    if model.training:
        raise ValueError("call model.eval() first: upstream runs Audio2Pose with BatchNorm running stats")
    if not 0 <= int(pose_style) < NUM_CLASSES:
        raise ValueError(f"pose_style must be in 0..{NUM_CLASSES - 1}, got {pose_style}")
    mel = torch.as_tensor(mel_windows)
    mel = mel if mel.ndim == 4 else mel.unsqueeze(1)
    if mel.ndim != 4 or mel.shape[1:] != (1, AudioEncoder.mel_bins, AudioEncoder.mel_frames):
        raise ValueError(f"mel_windows must be (T, 80, 16) or (T, 1, 80, 16), got {tuple(mel_windows.shape)}")
    num_frames = mel.shape[0]
    device = next(model.parameters()).device
    gen = _as_generator(generator)
    ref = torch.as_tensor(ref_pose6).reshape(1, POSE_DIM).to(device=device, dtype=torch.float32)
    style = torch.tensor([int(pose_style)], device=device)
    motion = [torch.zeros(1, POSE_DIM, device=device)]
    chunks = pose_chunks(num_frames, model.seq_len)
    if chunks:  # windows 1..T-1 are encoded once; chunks slice their embeddings
        emb = model.audio_encoder(mel[1:].unsqueeze(0).to(device=device, dtype=torch.float32))[0]
    for start, stop, keep in chunks:
        z = torch.randn(1, model.latent_size, generator=gen).to(device)  # one draw per chunk, on the CPU
        e = emb[start - 1 : stop - 1]
        if e.shape[0] < model.seq_len:
            e = torch.cat([e[:1].expand(model.seq_len - e.shape[0], -1), e], dim=0)
        out = model.netG.decoder(z, style, ref, e.unsqueeze(0))[0]
        motion.append(out[-keep:])
    return torch.cat(motion, dim=0)


def sadtalker_pose(
    model: PoseVAE,
    mel_windows: torch.Tensor | np.ndarray,
    ref_coeff70: torch.Tensor | np.ndarray,
    pose_style: int = 0,
    generator: torch.Generator | int | None = None,
    ref_pose_seq: np.ndarray | torch.Tensor | None = None,
) -> torch.Tensor:
    """SadTalker's head pose (T, 6) = angle 3 + trans 3, float32 on the CPU, as ``Audio2Coeff.generate``.

    ``mel_windows`` (T, [1,] 80, 16): one SadTalker mel window per video frame of the wav cut to
    ``int(len / 640) * 640`` samples (``tasks.features.mel.mel_windows``); ``ref_coeff70``: the source
    frame's 70 (or 73) coefficients, whose ``[64:70]`` is the reference pose; ``pose_style`` 0..45;
    ``generator`` a CPU ``torch.Generator`` or int seed (same seed, same poses); ``ref_pose_seq`` (N, 6):
    upstream's optional reference-pose video (``--ref_pose``).

    Upstream quirks that decide the numbers (``src/audio2pose_models/audio2pose.py:test``,
    ``src/test_audio2coeff.py:generate/using_refpose``):
    - window 0 is never encoded: frame 0 is the reference, its motion exactly zero;
    - chunks of 32 windows with ONE ``torch.randn(1, 64)`` each, drawn on the CPU in chunk order (so
      ``torch.manual_seed(s)`` upstream equals ``generator=s`` here); the remainder chunk re-encodes the
      last 32 windows and keeps its last ``(T-1) % 32`` frames (:func:`pose_chunks`); short clips pad the
      front with the first embedding;
    - style enters only as ``z + netG.decoder.classbias[style]``; the pose is ``ref + motion``;
    - ``savgol_filter(window 13, order 2)`` on float32 along time (mode 'interp'; shorter window when
      T < 13, T >= 3 needed) AFTER adding the reference and BEFORE the reference-pose video;
    - ``ref_pose_seq`` is tiled to T (whole repeats then a head) and adds ``ref[t] - ref[0]``.
    """
    coeff = torch.as_tensor(ref_coeff70).reshape(-1)
    if coeff.shape[0] not in (MOTION_DIM, MOTION_DIM + 3):
        raise ValueError(f"ref_coeff70 must hold 70 (or 73) coefficients, got {tuple(coeff.shape)}")
    ref = coeff[64:70].float()
    motion = sadtalker_pose_motion(model, mel_windows, ref, pose_style, generator)
    pose = smooth_pose((ref.to(motion.device) + motion).cpu().numpy())
    if ref_pose_seq is not None:
        if isinstance(ref_pose_seq, torch.Tensor):
            ref_pose_seq = ref_pose_seq.detach().cpu().numpy()
        seq = np.asarray(ref_pose_seq, dtype=np.float32).reshape(-1, POSE_DIM)
        if seq.shape[0] == 0:
            raise ValueError("ref_pose_seq is empty")
        seq = np.resize(seq, (pose.shape[0], POSE_DIM))  # row-major repeat: whole copies, then a head
        pose = pose + (seq - seq[:1])
    return torch.from_numpy(np.ascontiguousarray(pose, dtype=np.float32))


def _pth_state(path: Path) -> Mapping[str, torch.Tensor]:
    ckpt = torch_load_weights(path)
    state = ckpt.get("model") if isinstance(ckpt, Mapping) else None
    if not isinstance(state, Mapping):
        found = sorted(map(str, ckpt))[:10] if isinstance(ckpt, Mapping) else type(ckpt).__name__
        raise CheckpointError(f"{path}: expected auido2pose_00140-model.pth {{'model': ...}}, found {found}")
    return state


def load_sadtalker_audio2pose(model: PoseVAE, path: str | Path) -> str:
    """Strictly load the ``audio2pose.`` section of ``SadTalker_V0.0.2_*.safetensors`` or ``model`` of
    ``auido2pose_00140-model.pth`` into ``model``; returns the layout ('safetensors' or 'pth')."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"SadTalker audio2pose checkpoint not found: {p}; {CHECKPOINT_HELP}")
    if p.suffix == ".safetensors":
        state = read_safetensors_section(p, SAFETENSORS_PREFIX)
        layout, where = "safetensors", f"{p} [audio2pose.]"
    else:
        state, layout, where = _pth_state(p), "pth", f"{p} [model]"
    load_strict(model, state, where, "expected SadTalker's audio2pose (PoseVAE) weights")
    return layout


def build_pose_vae(path: str | Path | None = None, device: str | torch.device = "cpu") -> PoseVAE:
    """A :class:`PoseVAE` in eval mode, loaded from ``path`` when given (random init otherwise)."""
    model = PoseVAE()
    if path is not None:
        load_sadtalker_audio2pose(model, path)
    return model.to(device).eval()


def write_standin_pose_vae(path: str | Path, seed: int = 0) -> Path:
    """Write a randomly initialised PoseVAE like the released file: ``audio2pose.``-prefixed safetensors.

    For the demo world, where the released weights are absent; deterministic for a given ``seed``.
    """
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PoseVAE()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    save_file({SAFETENSORS_PREFIX + k: v.contiguous() for k, v in model.state_dict().items()}, str(p))
    return p
