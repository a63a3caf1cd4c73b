"""Stage 2: the cross-modal Transformer over the frozen stage-1 codebook (Eq. 4-9).

Its datasets, objective (loss and validation against the frozen VQ-VAE), fingerprint, registered model
config, builder and loader.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from emotalker.configs.fingerprint import fingerprint
from emotalker.configs.schema import PipelineConfig
from emotalker.models.transformer import CrossModalTransformer
from emotalker.models.vqvae import MotionVQVAE
from emotalker.storage.windows import WindowDataset
from emotalker.storage.workspace import Workspace
from emotalker.tasks.features.families import window_source
from emotalker.tasks.training.data import (
    NeutralFrames,
    check_stored_rate,
    check_width,
    clip_labels,
    draw_index,
    split_hash,
    stage_clips,
)
from emotalker.tasks.training.engine import Stage, StagePlan
from emotalker.tasks.training.loop import LossFn, TrainingInputError, ValFn
from emotalker.tasks.training.registry import CURRENT
from emotalker.tasks.training.vqvae import FaceNormalizer, load_vqvae

NAME = "transformer"
FAMILIES = ("face", "hubert_emotion", "tokens")  # tokens carry the k-means vocabulary, hence K


class ReferencedWindows(torch.utils.data.Dataset):
    """Stage-2 windows plus ``ref``: the (normalised) face frame whose stage-1 encoding is the start token.

    ``train.transformer.reference``: "neutral_clip" (default) draws it from a neutral clip of the same actor
    and view, what inference gives (a window's own frames carry its emotion, which the model would learn
    to copy); "window_frame" a random frame of the window (the authors' ``ref_idx``); "window_first_frame"
    the window's first frame. Training draws through :func:`draw_index` (a function of seed and step)."""

    def __init__(
        self,
        windows: WindowDataset,
        norm: FaceNormalizer,
        mode: str,
        neutral: NeutralFrames | None,
        resample: bool,
    ) -> None:
        if mode == "neutral_clip" and neutral is None:
            raise ValueError("reference 'neutral_clip' needs the split's neutral frames")
        self.windows, self.norm, self.mode, self.neutral, self.resample = (
            windows,
            norm,
            mode,
            neutral,
            resample,
        )

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, idx: int) -> dict[str, Any]:
        item = self.windows[idx]
        face = item["face"]
        if self.mode == "window_first_frame":
            ref = face[0]
        elif self.mode == "window_frame":
            ref = face[draw_index(len(face), self.resample, idx)]
        else:
            assert self.neutral is not None
            frame = self.neutral.draw(item["clip_id"], lambda n: draw_index(n, self.resample, idx))
            ref = torch.as_tensor(self.norm(np.asarray(frame, np.float32)[None])[0])
        item["ref"] = ref
        return item


def transformer_datasets(
    cfg: PipelineConfig, ws: Workspace, norm: FaceNormalizer
) -> tuple[ReferencedWindows, ReferencedWindows | None]:
    """Windows of face motion (video rate) with their HuBERT features and tokens (native rate, 2x) and
    the start token's reference frame (``train.transformer.reference``)."""
    train_ids = stage_clips(ws, FAMILIES, "train")
    check_width(
        ws, "hubert_emotion", "feats", train_ids[0], cfg.transformer.audio_dim, "transformer.audio_dim"
    )
    w = cfg.train.transformer.window
    if w % 4:
        raise TrainingInputError(f"train.transformer.window must be a multiple of 4 frames, got {w}")
    val_ids = stage_clips(ws, FAMILIES, "val")
    root = ws.stores
    src: dict[str, Any] = {
        "face": window_source(root, "face", "motion"),
        "audio": window_source(root, "hubert_emotion", "feats"),
        "tokens": window_source(root, "tokens", "tokens"),
    }
    for cid in [train_ids[0], *val_ids[:1]]:
        for store, _, _ in src.values():
            check_stored_rate(store, cid)
    labels = clip_labels(ws)
    tf = {"face": norm}
    mode = cfg.train.transformer.reference
    key = "train.transformer.reference"

    def referenced(ids: list[str], hop: int | None, resample: bool) -> ReferencedWindows:
        neutral = NeutralFrames(ws, ids, key) if mode == "neutral_clip" else None
        windows = WindowDataset(src, ids, w, hop=hop, labels=labels, transforms=tf)
        return ReferencedWindows(windows, norm, mode, neutral, resample)

    train = referenced(train_ids, None, True)
    val = referenced(val_ids, w, False) if val_ids else None  # the inference condition, fixed per window
    return train, val


def content_centres(cfg: PipelineConfig, ws: Workspace) -> tuple[np.ndarray, str]:
    """The k-means cluster centres (K, HuBERT width) behind the stored tokens, and their fingerprint."""
    from emotalker.tasks.features.kmeans import kmeans_fingerprint, recorded_kmeans

    meta = ws.store("tokens").get_meta()
    if "kmeans_path" not in meta:
        raise TrainingInputError("no k-means model recorded in the tokens store: run the features flow")
    km = recorded_kmeans(ws.stores, meta)  # beside the stores: any machine finds it
    centres = np.asarray(km.cluster_centers_, dtype=np.float32)
    if centres.shape[0] != cfg.audio.kmeans_k:
        raise TrainingInputError(
            f"the tokens' k-means has {centres.shape[0]} centres, audio.kmeans_k is {cfg.audio.kmeans_k}: "
            "rerun the features flow"
        )
    return centres, kmeans_fingerprint(km)


def build_transformer(
    cfg: PipelineConfig,
    vqvae: MotionVQVAE,
    centres: np.ndarray | None = None,
    *,
    ws: Workspace | None = None,
) -> CrossModalTransformer:
    """Stage-2 model; its content branch attends to the tokens' k-means centres (Sec. 3.3), read from
    the k-means model the tokens store of ``ws`` records unless ``centres`` (K, d) are given."""
    if not cfg.transformer.use_content_tokens:
        centres = None
    elif centres is None:
        if ws is None:
            raise ValueError("build_transformer needs the content centres or the workspace to read them from")
        centres = content_centres(cfg, ws)[0]
    model = CrossModalTransformer.from_config(
        cfg.transformer,
        code_dim=vqvae.code_dim,
        content_vocab=cfg.audio.kmeans_k,
        content_dim=centres.shape[1] if centres is not None else cfg.transformer.audio_dim,
    )
    if centres is not None:
        model.set_content_centres(torch.from_numpy(centres))
    return model


def restore_transformer(state: dict[str, Any], model_config: dict[str, Any]) -> CrossModalTransformer:
    """A registered stage-2 model from its weights and model config."""
    kwargs = dict(model_config["model"])
    # models registered before issue 26 were trained with the authors' window and the style on every input
    kwargs.setdefault("alignment_window", "authors")
    kwargs.setdefault("style_every_input", True)
    transformer = CrossModalTransformer(**kwargs)
    transformer.load_state_dict(state)
    return transformer


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
            start = self.vqvae.encode_reference(batch["ref"])
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


def transformer_fingerprint(cfg: PipelineConfig, ws: Workspace, vq_hash: str) -> str:
    """Model + training settings + split + the stage-1 weights + the tokens' vocabulary (K, centres)."""
    return fingerprint(
        "transformer-v3",
        cfg.transformer.model_dump(),
        cfg.train.transformer.model_dump(),
        split_hash(ws),
        vq_hash,
        cfg.audio.kmeans_k,
        content_centres(cfg, ws)[1] if cfg.transformer.use_content_tokens else None,
    )


def transformer_model_config(
    cfg: PipelineConfig, model: CrossModalTransformer, vqvae: MotionVQVAE, vq_hash: str
) -> dict[str, Any]:
    """Registered beside the weights: the constructor arguments and the stage-1 weights it was built on."""
    return {
        "model": {
            **cfg.transformer.model_dump(),
            "code_dim": vqvae.code_dim,
            "content_vocab": model.content_vocab,
            "content_dim": model.content_dim,
        },
        "vqvae_weights_sha": vq_hash,
    }


def plan(cfg: PipelineConfig, *, ws: Workspace, vqvae_version: str | None = None) -> StagePlan:
    """Stage 2's run on the stage-1 version ``vqvae_version`` (None: the newest trained on these stores)."""
    vqvae, norm, vq_hash = load_vqvae(cfg, vqvae_version or CURRENT, ws=ws)
    train, val = transformer_datasets(cfg, ws, norm)

    def build() -> tuple[torch.nn.Module, LossFn, ValFn]:
        model = build_transformer(cfg, vqvae, ws=ws)
        objective = TransformerObjective(vqvae)
        return model, objective, objective.validate

    return StagePlan(
        hparams=cfg.train.transformer,
        fingerprint=transformer_fingerprint(cfg, ws, vq_hash),
        data=(train, val),
        build=build,
        model_config=lambda model: transformer_model_config(cfg, model, vqvae, vq_hash),
        params={"vqvae.weights_sha": vq_hash},
        tags={"vqvae_weights_sha": vq_hash},
    )


STAGE = Stage(
    name=NAME,
    families=FAMILIES,
    description="Stage 2: cross-modal Transformer over the frozen stage-1 codebook (Eq. 4-9).",
    plan=plan,
    # val/loss is Eq. 8 (CrossModalTransformer.loss): L2 + contrastive_weight * InfoNCE when
    # use_contrastive, the InfoNCE logits divided by contrastive_temperature and taken over the stage-1
    # codebook's vqvae.codebook_size codes (its chance level is log K); the reference mode is the
    # validation's input condition (a frame of the target window is an easier start token than a neutral one)
    metric_keys=(
        "transformer.contrastive_weight",
        "transformer.contrastive_temperature",
        "transformer.use_contrastive",
        "vqvae.codebook_size",
        "train.transformer.reference",
    ),
)
