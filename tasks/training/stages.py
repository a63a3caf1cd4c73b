"""Stage-specific training pieces: datasets from the Zarr stores, loss and validation functions.

Everything here is plain functions over configs, stores and models, so the training flows only wire
them to the resumable loop (``tasks/training.py``) and MLflow (``tasks/tracking.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from emotalker.configs.constants import (
    EMOTION_TO_ID,
    EXP_DIM,
    FACE_DIM,
    FACE_INDICES,
    LIP_INDICES,
    MOTION_DIM,
)
from emotalker.configs.schema import PipelineConfig
from emotalker.models.lip import LipBranch
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.manifest import Manifest
from emotalker.storage.shared import shared_file
from emotalker.storage.split import load_split
from emotalker.storage.windows import WindowDataset
from emotalker.storage.zarr_store import FeatureStore, StoreRoot, feature_store
from emotalker.tasks.features.families import store_spec, stored_rate_error, window_source
from emotalker.tasks.training.loop import TrainingInputError


@dataclass
class FaceNormalizer:
    """Per-dimension standardisation of the 57 face coefficients (train-split statistics)."""

    mean: np.ndarray
    std: np.ndarray

    def __call__(self, motion: np.ndarray) -> np.ndarray:
        return ((motion[..., list(FACE_INDICES)] - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict[str, list[float]]:
        return {"face_mean": self.mean.tolist(), "face_std": self.std.tolist()}


def clip_labels(cfg: PipelineConfig) -> dict[str, int]:
    """Emotion class of every clip, from the manifest (the stores' copy on a machine without one)."""
    rows = Manifest(shared_file(cfg.paths, "manifest")).records()
    return {r["clip_id"]: EMOTION_TO_ID[r["emotion"]] for r in rows}


def stage_clips(cfg: PipelineConfig, families: list[str], split_name: str) -> list[str]:
    """Clips of a split that are complete in every needed store; fails fast with what is missing."""
    split_path = shared_file(cfg.paths, "split")
    ids = load_split(split_path)[split_name]
    root = StoreRoot.from_paths(cfg.paths)
    for family in families:
        store = root.store(family)
        have = set(store.clip_ids())
        if not have and split_name == "train":
            raise TrainingInputError(
                f"feature store {store.display_url} has no clips: run the features flow before training"
            )
        ids = [c for c in ids if c in have]
    if split_name == "train" and not ids:
        raise TrainingInputError(
            f"the train split has no clip with all of {families}; split file {split_path}"
        )
    return ids


def _store(cfg: PipelineConfig, family: str) -> FeatureStore:
    return feature_store(cfg.paths, family)


def check_width(cfg: PipelineConfig, family: str, key: str, clip_id: str, expected: int, what: str) -> None:
    shape = _store(cfg, family).shape(clip_id, key)
    if shape[-1] != expected:
        raise TrainingInputError(
            f"{family}/{key} of {clip_id} has width {shape[-1]} but the config expects {expected} ({what})"
        )


def face_normalizer(cfg: PipelineConfig, train_ids: list[str]) -> FaceNormalizer:
    face = _store(cfg, "face")
    data = np.concatenate([face.read_clip(c, ["motion"])["motion"] for c in train_ids])
    data = data[np.isfinite(data).all(axis=1)][:, list(FACE_INDICES)]
    return FaceNormalizer(data.mean(0).astype(np.float32), np.maximum(data.std(0), 1e-4).astype(np.float32))


class _Pick:
    """Picklable transform: select motion columns."""

    def __init__(self, cols: list[int]) -> None:
        self.cols = cols

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return x[..., self.cols].astype(np.float32)


# --------------------------------------------------------------------------------------------- stage 1
def vqvae_datasets(cfg: PipelineConfig) -> tuple[WindowDataset, WindowDataset | None, FaceNormalizer]:
    train_ids = stage_clips(cfg, ["face"], "train")
    check_width(cfg, "face", "motion", train_ids[0], MOTION_DIM, "70-dim motion")
    if cfg.vqvae.in_dim != FACE_DIM:
        raise TrainingInputError(
            f"vqvae.in_dim must be {FACE_DIM} (51 expression + 6 pose), got {cfg.vqvae.in_dim}"
        )
    norm = face_normalizer(cfg, train_ids)
    labels = clip_labels(cfg)
    w = cfg.train.vqvae.window
    src = {"face": window_source(StoreRoot.from_paths(cfg.paths), "face", "motion")}
    train = WindowDataset(src, train_ids, w, labels=labels, transforms={"face": norm})
    val_ids = stage_clips(cfg, ["face"], "val")
    val = WindowDataset(src, val_ids, w, hop=w, labels=labels, transforms={"face": norm}) if val_ids else None
    return train, val, norm


def build_vqvae(cfg: PipelineConfig) -> MotionVQVAE:
    return MotionVQVAE.from_config(cfg.vqvae)


def vqvae_loss(model: MotionVQVAE, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
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


def vqvae_validate(model: MotionVQVAE, batches: Any) -> dict[str, float]:
    """Reconstruction MSE vs the mean-pose baseline (normalised space: predicting 0), emotion accuracy."""
    se = base = n = correct = total = 0.0
    counts = torch.zeros(model.quantizer.codebook_size)
    for b in batches:
        x = b["face"]
        out = model(x, b.get("label"))
        se += float(((out["recon"] - x) ** 2).sum())
        base += float((x**2).sum())
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


# --------------------------------------------------------------------------------------------- stage 2
def check_stored_rate(store: FeatureStore, clip_id: str) -> int:
    """Stored frames per video frame of the clip (its store's declared rate: 2 for HuBERT features and
    tokens); a clip written at another rate (HuBERT resampled to 25 fps by older versions) is refused."""
    error = stored_rate_error(store, clip_id)
    if error:
        raise TrainingInputError(error)
    return store_spec(store.family).rate


def transformer_datasets(
    cfg: PipelineConfig, norm: FaceNormalizer
) -> tuple[WindowDataset, WindowDataset | None]:
    """Windows of face motion (video rate) with their HuBERT features and tokens (native rate, 2x)."""
    families = ["face", "hubert_emotion", "tokens"]
    train_ids = stage_clips(cfg, families, "train")
    check_width(
        cfg, "hubert_emotion", "feats", train_ids[0], cfg.transformer.audio_dim, "transformer.audio_dim"
    )
    w = cfg.train.transformer.window
    if w % 4:
        raise TrainingInputError(f"train.transformer.window must be a multiple of 4 frames, got {w}")
    val_ids = stage_clips(cfg, families, "val")
    root = StoreRoot.from_paths(cfg.paths)
    src: dict[str, Any] = {
        "face": window_source(root, "face", "motion"),
        "audio": window_source(root, "hubert_emotion", "feats"),
        "tokens": window_source(root, "tokens", "tokens"),
    }
    for cid in [train_ids[0], *val_ids[:1]]:
        for store, _, _ in src.values():
            check_stored_rate(store, cid)
    labels = clip_labels(cfg)
    tf = {"face": norm}
    train = WindowDataset(src, train_ids, w, labels=labels, transforms=tf)
    val = WindowDataset(src, val_ids, w, hop=w, labels=labels, transforms=tf) if val_ids else None
    return train, val


def content_centres(cfg: PipelineConfig) -> tuple[np.ndarray, str]:
    """The k-means cluster centres (K, HuBERT width) behind the stored tokens, and their fingerprint."""
    from emotalker.tasks.features.kmeans import kmeans_fingerprint, recorded_kmeans

    meta = _store(cfg, "tokens").get_meta()
    if "kmeans_path" not in meta:
        raise TrainingInputError("no k-means model recorded in the tokens store: run the features flow")
    km = recorded_kmeans(StoreRoot.from_paths(cfg.paths), meta)  # beside the stores: any machine finds it
    centres = np.asarray(km.cluster_centers_, dtype=np.float32)
    if centres.shape[0] != cfg.audio.kmeans_k:
        raise TrainingInputError(
            f"the tokens' k-means has {centres.shape[0]} centres, audio.kmeans_k is {cfg.audio.kmeans_k}: "
            "rerun the features flow"
        )
    return centres, kmeans_fingerprint(km)


def build_transformer(
    cfg: PipelineConfig, vqvae: MotionVQVAE, centres: np.ndarray | None = None
) -> CrossModalTransformer:
    """Stage-2 model; its content branch attends to the tokens' k-means centres (Sec. 3.3), read from
    the k-means model the tokens store records unless ``centres`` (K, d) are given."""
    if not cfg.transformer.use_content_tokens:
        centres = None
    elif centres is None:
        centres = content_centres(cfg)[0]
    model = CrossModalTransformer.from_config(
        cfg.transformer,
        code_dim=vqvae.code_dim,
        content_vocab=cfg.audio.kmeans_k,
        content_dim=centres.shape[1] if centres is not None else cfg.transformer.audio_dim,
    )
    if centres is not None:
        model.set_content_centres(torch.from_numpy(centres))
    return model


class TransformerObjective:
    """Teacher-forced Eq. 8-9 against a frozen stage-1 VQ-VAE."""

    def __init__(self, vqvae: MotionVQVAE) -> None:
        self.vqvae = vqvae.eval()
        for p in self.vqvae.parameters():
            p.requires_grad_(False)

    def _targets(self, face: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.vqvae.to(face.device)
        with torch.no_grad():
            _, idx = self.vqvae.encode(face)
            return self.vqvae.quantizer.lookup(idx), idx

    def _run(
        self, model: CrossModalTransformer, batch: dict[str, Any]
    ) -> tuple[dict[str, torch.Tensor], Any]:
        face = batch["face"]
        z_q, idx = self._targets(face)
        with torch.no_grad():  # start token: the stage-1 encoding of the reference frame (Sec. 3.3)
            start = self.vqvae.encode_reference(face[:, 0])
        pred = model(batch["audio"], batch["tokens"].long(), z_q, reference=start)
        return model.loss(pred, z_q, idx, self.vqvae.quantizer.codebook), (pred, face)

    def __call__(
        self, model: CrossModalTransformer, batch: dict[str, Any], step: int
    ) -> tuple[torch.Tensor, dict]:
        losses, _ = self._run(model, batch)
        return losses["loss"], {k: float(v.detach()) for k, v in losses.items()}

    def validate(self, model: CrossModalTransformer, batches: Any) -> dict[str, float]:
        sums: dict[str, float] = {}
        n = se = 0.0
        for b in batches:
            losses, (pred, face) = self._run(model, b)
            for k, v in losses.items():
                sums[k] = sums.get(k, 0.0) + float(v) * len(face)
            snapped = self.vqvae.quantize(pred)[0]
            recon = self.vqvae.decode_latent(snapped, face.shape[1])
            se += float(((recon - face) ** 2).mean()) * len(face)
            n += len(face)
        out = {f"val/{k}": v / max(n, 1) for k, v in sums.items()}
        out["val/motion_mse"] = se / max(n, 1)
        return out


# ------------------------------------------------------------------------------------------- lip branch
class LipWindows(torch.utils.data.Dataset):
    """Continuous lip-branch windows (5 frames, each with its 0.2 s mel window) plus ``ref_exp``: the
    expression of a randomly sampled frame of the same clip, the reference beta that the paper repeats
    over the window. Training draws it from torch's RNG (so a resumed run draws the same); validation
    fixes it per window."""

    def __init__(self, windows: WindowDataset, resample: bool) -> None:
        self.windows = windows
        self.resample = resample

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.windows[idx]
        n = self.windows.clip_lengths[item["clip_id"]]
        if self.resample:
            j = int(torch.randint(n, ()))
        else:
            j = int(np.random.default_rng(idx).integers(n))
        motion = self.windows.frame("motion", item["clip_id"], j)
        item["ref_exp"] = torch.as_tensor(np.asarray(motion[:EXP_DIM], dtype=np.float32))
        return item


def lip_datasets(cfg: PipelineConfig) -> tuple[LipWindows, LipWindows | None]:
    families = ["face", "mel"]
    train_ids = stage_clips(cfg, families, "train")
    w = cfg.train.lip.window
    root = StoreRoot.from_paths(cfg.paths)
    src = {"motion": window_source(root, "face", "motion"), "mel": window_source(root, "mel", "windows")}
    tf = {"motion": _Pick(list(range(MOTION_DIM)))}
    train = LipWindows(WindowDataset(src, train_ids, w, transforms=tf), resample=True)
    val_ids = stage_clips(cfg, families, "val")
    val = None
    if val_ids:
        val = LipWindows(WindowDataset(src, val_ids, w, hop=w, transforms=tf), resample=False)
    return train, val


def lip_model_config(cfg: PipelineConfig) -> dict[str, Any]:
    """The LipBranch constructor arguments (``init_checkpoint`` is applied by :func:`build_lip`)."""
    return cfg.lip.model_dump(exclude={"init_checkpoint"})


def build_lip(cfg: PipelineConfig) -> LipBranch:
    """Lip branch; Phi_A and Phi_M1 start from SadTalker's audio2exp when ``lip.init_checkpoint`` is set."""
    model = LipBranch.from_config(cfg.lip)
    if cfg.lip.init_checkpoint is not None:
        report = model.load_sadtalker_audio2exp(cfg.lip.init_checkpoint)
        if report["missing"]:
            raise TrainingInputError(
                f"lip.init_checkpoint {cfg.lip.init_checkpoint} lacks ExpNet weights {report['missing'][:5]}"
            )
    return model


def _lip_forward(model: LipBranch, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    motion, mel = batch["motion"], batch["mel"]
    b, t = motion.shape[:2]
    ref_exp = batch["ref_exp"][:, None].expand(b, t, EXP_DIM)  # Eq. 10's beta, repeated over the window
    pred = model(mel[:, :, None], ref_exp)["lip"]
    target = motion[..., list(LIP_INDICES)]
    return pred, target, ref_exp[..., list(LIP_INDICES)]


def lip_loss(model: LipBranch, batch: dict[str, Any], step: int) -> tuple[torch.Tensor, dict[str, float]]:
    pred, target, _ = _lip_forward(model, batch)
    loss = F.mse_loss(pred, target)
    return loss, {"loss": loss.item(), "lip_l1": (pred - target).detach().abs().mean().item()}


def lip_validate(model: LipBranch, batches: Any) -> dict[str, float]:
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


def model_summary(model: torch.nn.Module) -> dict[str, Any]:
    return {"parameters": int(sum(p.numel() for p in model.parameters()))}


def ckpt_dir(cfg: PipelineConfig, stage: str, fp: str) -> Path:
    return cfg.paths.resolve("checkpoints") / stage / fp
