"""Stage 1: the motion VQ-VAE with emotion head on the 57 face coefficients (Eq. 3).

Its datasets, loss, validation, fingerprint, registered model config, builder, loader and plots.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import torch

from emotalker.configs.constants import EMOTIONS, FACE_DIM, FACE_INDICES, MOTION_DIM
from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.tasks.features.families import window_source
from emotalker.tasks.training.data import check_width, clip_labels, split_hash, stage_clips
from emotalker.tasks.training.engine import Stage, StagePlan
from emotalker.tasks.training.loop import TrainingInputError, iterate_batches
from emotalker.tasks.training.plots import code_tsne, codebook_usage
from emotalker.tasks.training.registry import CURRENT, load_registered

NAME = "vqvae"
FAMILIES = ("face",)


@dataclass
class FaceNormalizer:
    """Per-dimension standardisation of the 57 face coefficients (train-split statistics)."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        return ((motion[..., list(FACE_INDICES)] - self.mean) / self.std).astype(np.float32)

    def raw(self, face: torch.Tensor) -> torch.Tensor:
        """Back to raw coefficient units (Table 3's MSE is measured there)."""
        return face * torch.as_tensor(self.std, device=face.device) + torch.as_tensor(
            self.mean, device=face.device
        )

    @classmethod
    def identity(cls) -> FaceNormalizer:
        """Raw coefficients, as the paper and the authors' dataset feed them (mean 0, std 1)."""
        return cls(np.zeros(FACE_DIM, np.float32), np.ones(FACE_DIM, np.float32))

    def to_dict(self) -> dict[str, list[float]]:
        return {"face_mean": self.mean.tolist(), "face_std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FaceNormalizer:
        """The normaliser a registered stage-1 model config carries (see :meth:`to_dict`)."""
        return cls(np.asarray(d["face_mean"], np.float32), np.asarray(d["face_std"], np.float32))


def face_normalizer(ws: Workspace, train_ids: list[str]) -> FaceNormalizer:
    """Statistics of the train clips' finite face frames (a std floor keeps constant dims finite)."""
    face = ws.store("face")
    data = np.concatenate([face.read_clip(c, ["motion"])["motion"] for c in train_ids])
    data = data[np.isfinite(data).all(axis=1)][:, list(FACE_INDICES)]
    return FaceNormalizer(data.mean(0).astype(np.float32), np.maximum(data.std(0), 1e-4).astype(np.float32))


def vqvae_datasets(
    cfg: PipelineConfig, ws: Workspace
) -> tuple[WindowDataset, WindowDataset | None, FaceNormalizer, FaceNormalizer]:
    """Face windows with emotion labels (train, val), the normaliser they went through (the identity
    unless ``train.vqvae.normalize_face``) and the train split's statistics (the mean-pose baseline)."""
    train_ids = stage_clips(ws, FAMILIES, "train")
    check_width(ws, "face", "motion", train_ids[0], MOTION_DIM, "70-dim motion")
    if cfg.vqvae.in_dim != FACE_DIM:
        raise TrainingInputError(
            f"vqvae.in_dim must be {FACE_DIM} (51 expression + 6 pose), got {cfg.vqvae.in_dim}"
        )
    stats = face_normalizer(ws, train_ids)
    norm = stats if cfg.train.vqvae.normalize_face else FaceNormalizer.identity()
    labels = clip_labels(ws)
    w = cfg.train.vqvae.window
    src = {"face": window_source(ws.stores, "face", "motion")}
    train = WindowDataset(src, train_ids, w, labels=labels, transforms={"face": norm})
    val_ids = stage_clips(ws, FAMILIES, "val")
    val = WindowDataset(src, val_ids, w, hop=w, labels=labels, transforms={"face": norm}) if val_ids else None
    return train, val, norm, stats


def build_vqvae(cfg: PipelineConfig) -> MotionVQVAE:
    """A fresh stage-1 model from the config (training; benchmarks)."""
    return MotionVQVAE.from_config(cfg.vqvae)


def vqvae_loss(model: MotionVQVAE, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The model's Eq. 3 loss and its terms as metrics."""
    out = model(batch["face"], batch.get("label"))  # Eq. 3
    keys = (
        "loss",
        "loss_recon",
        "loss_commit",
        "loss_codebook",
        "loss_emotion",
        "emotion_acc",
        "perplexity",
        "usage",
    )
    return out["loss"], {k: float(out[k].detach()) for k in keys if k in out}


def vqvae_validator(
    norm: FaceNormalizer, stats: FaceNormalizer
) -> Callable[[MotionVQVAE, Any], dict[str, float]]:
    """Validation whose reconstruction MSE is in raw coefficient units whatever ``norm`` (Table 3 compares
    it with the paper's), beside the mean-pose baseline (the train split's mean frame) and emotion
    accuracy."""

    def validate(model: MotionVQVAE, batches: Any) -> dict[str, float]:
        se = base = n = correct = total = 0.0
        counts = torch.zeros(model.quantizer.codebook_size)
        mean = torch.as_tensor(stats.mean)
        for b in batches:
            x = b["face"]
            out = model(x, b.get("label"))
            raw = norm.raw(x)
            se += float(((norm.raw(out["recon"]) - raw) ** 2).sum())
            base += float(((raw - mean.to(raw.device)) ** 2).sum())
            n += x.numel()
            counts += torch.bincount(out["indices"].reshape(-1).cpu(), minlength=len(counts)).float()
            if "label" in b and out.get("emotion_logits") is not None:
                correct += float((out["emotion_logits"].argmax(1) == b["label"]).sum())
                total += len(b["label"])
        p = counts / counts.sum().clamp(min=1)
        perplexity = float(torch.exp(-(p[p > 0] * p[p > 0].log()).sum()))
        metrics = {
            "val/loss": se / max(n, 1),
            "val/recon_mse": se / max(n, 1),
            "val/mean_pose_mse": base / max(n, 1),
            "val/perplexity": perplexity,
            "val/usage": float((counts > 0).float().mean()),
        }
        if total:
            metrics["val/emotion_acc"] = correct / total
        return metrics

    return validate


def vqvae_fingerprint(cfg: PipelineConfig, ws: Workspace) -> str:
    """Model + training settings + split: a change trains a new stage-1 model."""
    return fingerprint("vqvae-v2", cfg.vqvae.model_dump(), cfg.train.vqvae.model_dump(), split_hash(ws))


def vqvae_model_config(cfg: PipelineConfig, norm: FaceNormalizer) -> dict[str, Any]:
    """Registered beside the weights: the constructor arguments and the face normaliser."""
    return {"model": cfg.vqvae.model_dump(), **norm.to_dict()}


def restore_vqvae(state: dict[str, Any], model_config: dict[str, Any]) -> MotionVQVAE:
    """A registered stage-1 model from its weights and model config."""
    vqvae = MotionVQVAE(**model_config["model"])
    vqvae.load_state_dict(state)
    return vqvae


def load_vqvae(
    cfg: PipelineConfig, model: str = CURRENT, *, ws: Workspace
) -> tuple[MotionVQVAE, FaceNormalizer, str]:
    """Stage-1 model (a version, ``current`` or an alias; see ``registry.choose_version``) and its sha."""
    state, mc, _, sha = load_registered(cfg, NAME, model, ws=ws)
    return restore_vqvae(state, mc).eval(), FaceNormalizer.from_dict(mc), sha


def codebook_plots(
    model: MotionVQVAE, data: Any, d: Path, batch_size: int, *, n_emotions: int = len(EMOTIONS)
) -> None:
    """Codebook usage histogram and the t-SNE of codes coloured by their dominant emotion (Fig. 4a)."""
    model.eval().cpu()
    k = model.quantizer.codebook_size
    per_emotion = np.zeros((n_emotions, k))
    with torch.inference_mode():
        for b in iterate_batches(data, batch_size):
            _, idx = model.encode(b["face"])
            for e in range(n_emotions):
                sel = b["label"] == e
                if sel.any():
                    per_emotion[e] += np.bincount(idx[sel].reshape(-1).numpy(), minlength=k)
    counts = per_emotion.sum(0)
    dominant = np.where(counts > 0, per_emotion.argmax(0), -1)
    mlflow.log_artifact(str(codebook_usage(counts, d / "codebook_usage.png")), "plots")
    codebook = model.quantizer.codebook.detach().cpu().numpy()
    mlflow.log_artifact(str(code_tsne(codebook, dominant, d / "codebook_tsne.png")), "plots")
    mlflow.log_metric("codebook/used_codes", float((counts > 0).sum()))


def plan(cfg: PipelineConfig, *, ws: Workspace) -> StagePlan:
    """Stage 1's run: datasets first (fails fast on missing stores, empty split, bad widths)."""
    train, val, norm, stats = vqvae_datasets(cfg, ws)
    return StagePlan(
        hparams=cfg.train.vqvae,
        fingerprint=vqvae_fingerprint(cfg, ws),
        data=(train, val),
        build=lambda: (build_vqvae(cfg), vqvae_loss, vqvae_validator(norm, stats)),
        model_config=lambda _: vqvae_model_config(cfg, norm),
        after=lambda model, d: codebook_plots(model, val or train, d, cfg.train.vqvae.batch_size),
    )


STAGE = Stage(
    name=NAME,
    families=FAMILIES,
    description="Stage 1: motion VQ-VAE with emotion head on the 57 face coefficients (Eq. 3). "
    "Plots: loss curves, codebook usage, t-SNE of codes by emotion (Fig. 4a).",
    plan=plan,
    # val/loss is the reconstruction MSE in raw coefficient units (vqvae_validator): commitment_beta,
    # emotion_weight, emotion_head and normalize_face change training, not what the metric measures
    metric_keys=(),
)
