"""The lip branch: mel windows + reference expression -> 13 lip coefficients (Eq. 10).

Its datasets, loss, validation, fingerprint, registered model config, builder and loader.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emotalker.configs.constants import EXP_DIM, LIP_INDICES, MOTION_DIM
from emotalker.configs.fingerprint import file_signature, fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.models.lip import LipBranch
from emotalker.models.renderer.checkpoints import require_file
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.tasks.features.families import window_source
from emotalker.tasks.training.data import NeutralFrames, draw_index, split_hash, stage_clips
from emotalker.tasks.training.engine import Stage, StagePlan
from emotalker.tasks.training.loop import TrainingInputError

NAME = "lip"
FAMILIES = ("face", "mel")


class _Pick:
    """Picklable transform: select motion columns."""

    def __init__(self, cols: list[int]) -> None:
        self.cols = cols

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.cols].astype(np.float32)


class LipWindows(torch.utils.data.Dataset):
    """Continuous lip-branch windows (5 frames, each with its 0.2 s mel window) plus ``ref_exp``: the
    expression of the reference beta that the paper repeats over the window. ``neutral`` given
    (``train.lip.reference: neutral_clip``, the default): a frame of a neutral clip of the same actor and
    view, what inference's neutral reference gives; None ("clip_frame"): a random frame of the window's own
    clip, which carries its emotion. Training draws from torch's RNG (so a resumed run draws the same);
    validation fixes it per window."""

    def __init__(self, windows: WindowDataset, resample: bool, neutral: NeutralFrames | None = None) -> None:
        self.windows = windows
        self.resample = resample
        self.neutral = neutral

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.windows[idx]
        cid = item["clip_id"]
        if self.neutral is not None:
            motion = self.neutral.draw(cid, lambda n: draw_index(n, self.resample, idx))
        else:
            j = draw_index(self.windows.clip_lengths[cid], self.resample, idx)
            motion = self.windows.frame("motion", cid, j)
        item["ref_exp"] = torch.as_tensor(np.asarray(motion[:EXP_DIM], dtype=np.float32))
        return item


def lip_datasets(cfg: PipelineConfig, ws: Workspace) -> tuple[LipWindows, LipWindows | None]:
    """Motion + mel windows of the clips complete in both stores (train, val)."""
    train_ids = stage_clips(ws, FAMILIES, "train")
    w = cfg.train.lip.window
    root = ws.stores
    src = {"motion": window_source(root, "face", "motion"), "mel": window_source(root, "mel", "windows")}
    tf = {"motion": _Pick(list(range(MOTION_DIM)))}

    def neutral(ids: list[str]) -> NeutralFrames | None:
        if cfg.train.lip.reference != "neutral_clip":
            return None
        return NeutralFrames(ws, ids, "train.lip.reference")

    train = LipWindows(WindowDataset(src, train_ids, w, transforms=tf), True, neutral(train_ids))
    val_ids = stage_clips(ws, FAMILIES, "val")
    val = None
    if val_ids:
        val = LipWindows(WindowDataset(src, val_ids, w, hop=w, transforms=tf), False, neutral(val_ids))
    return train, val


def lip_model_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The LipBranch constructor arguments (``init_checkpoint`` is applied by :func:`build_lip`)."""
    return cfg.lip.model_dump(exclude={"init_checkpoint"})


def require_init_checkpoint(cfg: PipelineConfig) -> None:
    """One line naming ``lip.init_checkpoint`` and where to get it, before any data or model is touched."""
    if cfg.lip.init_checkpoint is not None:
        require_file(cfg.lip.init_checkpoint, "lip.init_checkpoint", "audio2exp")


def build_lip(cfg: PipelineConfig) -> LipBranch:
    """Lip branch; Phi_A and Phi_M1 start from SadTalker's audio2exp (``lip.init_checkpoint``; null trains
    them from random weights), Phi_A frozen under ``lip.freeze_audio_encoder``."""
    model = LipBranch.from_config(cfg.lip)
    if cfg.lip.init_checkpoint is not None:
        require_init_checkpoint(cfg)
        report = model.load_sadtalker_audio2exp(cfg.lip.init_checkpoint)
        if report["missing"]:
            raise TrainingInputError(
                f"lip.init_checkpoint {cfg.lip.init_checkpoint} lacks ExpNet weights {report['missing'][:5]}"
            )
    return model


def restore_lip(state: dict[str, Any], model_config: dict[str, Any]) -> LipBranch:
    """A registered lip branch from its weights and model config."""
    lip = LipBranch(**model_config["model"])
    lip.load_state_dict(state)
    return lip


def _lip_forward(model: LipBranch, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    motion, mel = batch["motion"], batch["mel"]
    b, t = motion.shape[:2]
    ref_exp = batch["ref_exp"][:, None].expand(b, t, EXP_DIM)  # Eq. 10's beta, repeated over the window
    pred = model(mel[:, :, None], ref_exp)["lip"]
    target = motion[..., list(LIP_INDICES)]
    return pred, target, ref_exp[..., list(LIP_INDICES)]


def lip_loss(model: LipBranch, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """MSE of the 13 lip coefficients (Eq. 10's output against the tracked ones)."""
    pred, target, _ = _lip_forward(model, batch)
    loss = F.mse_loss(pred, target)
    return loss, {"loss": loss.item(), "lip_l1": (pred - target).detach().abs().mean().item()}


def lip_validate(model: LipBranch, batches: Any) -> dict[str, float]:
    """Lip MSE vs the baseline of repeating the reference expression's lip coefficients."""
    se = base = n = 0.0
    for b in batches:
        pred, target, ref = _lip_forward(model, b)
        se += float(((pred - target) ** 2).sum())
        base += float(((ref - target) ** 2).sum())
        n += target.numel()
    return {
        "val/loss": se / max(n, 1),
        "val/lip_mse": se / max(n, 1),
        "val/reference_lip_mse": base / max(n, 1),
    }


def lip_fingerprint(cfg: PipelineConfig, ws: Workspace) -> str:
    """Model + initial weights + training settings + split: a change trains a new lip branch."""
    init = cfg.lip.init_checkpoint
    return fingerprint(
        "lip-v3",  # v3: Phi_M2 13 -> 13, frozen Phi_A, SadTalker's zero-padded mel
        lip_model_config(cfg),
        file_signature(init) if init is not None else None,
        cfg.train.lip.model_dump(),
        split_hash(ws),
    )


def plan(cfg: PipelineConfig, *, ws: Workspace) -> StagePlan:
    """The lip branch's run (the fingerprint first, as it reads the initial checkpoint's signature)."""
    require_init_checkpoint(cfg)
    fp = lip_fingerprint(cfg, ws)
    return StagePlan(
        hparams=cfg.train.lip,
        fingerprint=fp,
        data=lip_datasets(cfg, ws),
        build=lambda: (build_lip(cfg), lip_loss, lip_validate),
        model_config=lambda _: {"model": lip_model_config(cfg)},
    )


STAGE = Stage(
    name=NAME,
    families=FAMILIES,
    description="Lip branch: mel windows + reference expression -> 13 lip coefficients (Eq. 10).",
    plan=plan,
    # val/loss is the plain MSE of the 13 lip coefficients (lip_validate), no weights; the reference mode
    # is the validation's input condition: a frame of the window's own (emotional) clip is an easier task
    # than a neutral clip's, so their MSEs are not on one scale
    metric_keys=("train.lip.reference",),
)
