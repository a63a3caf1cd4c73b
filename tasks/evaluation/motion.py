"""Coefficient-space evaluation of generated motion: a stored clip's inputs, the generator run on them
from a reference frame, and the metrics that need no rendered video (LipL2, FaceL2, the stage-1 emotion
head, motion-space F-LMD / M-LMD through the BFM)."""

from __future__ import annotations

import numpy as np
import torch

from emotalker.configs.constants import COEFF_SLICES, EMOTION_TO_ID, EXP_DIM, FACE_INDICES
from emotalker.models.bfm import BFMLandmarks, project_landmarks
from emotalker.models.emotalker import EmoTalker
from emotalker.storage.workspace import Workspace
from emotalker.tasks.evaluation.metrics import f_lmd, face_l2, lip_l2, m_lmd
from emotalker.tasks.training.data import check_stored_rate


def clip_features(ws: Workspace, clip_id: str) -> dict[str, np.ndarray]:
    """A stored clip's inputs: face and mel per video frame, HuBERT features and tokens at their rate."""
    root = ws.stores
    video = {
        **root.store("face").read_clip(clip_id, ["motion", "coeffs"]),
        "mel": root.store("mel").read_clip(clip_id, ["windows"])["windows"],
    }
    rate = check_stored_rate(root.store("hubert_emotion"), clip_id)
    check_stored_rate(root.store("tokens"), clip_id)
    audio = {
        "audio": root.store("hubert_emotion").read_clip(clip_id, ["feats"])["feats"],
        "tokens": root.store("tokens").read_clip(clip_id, ["tokens"])["tokens"],
    }
    n = min(min(len(v) for v in video.values()), -(-min(len(v) for v in audio.values()) // rate))
    return {**{k: v[:n] for k, v in video.items()}, **{k: v[: rate * n] for k, v in audio.items()}}


def emotion_of_motion(model: EmoTalker, motion: np.ndarray) -> int:
    """The model's own stage-1 emotion head on a motion sequence (``EmoAcc_stage1_head``, not the paper's
    image-classifier EmoAcc)."""
    head = model.vqvae.emotion_classifier
    if head is None:
        return -1
    dev = model.face_mean.device
    face = (torch.as_tensor(motion[:, list(FACE_INDICES)], device=dev) - model.face_mean) / model.face_std
    with torch.inference_mode():
        z = model.vqvae.encode_latent(face[None].float())
        return int(head(z.mean(1)).argmax(1))


def evaluate_clip(
    model: EmoTalker,
    feats: dict[str, np.ndarray],
    reference: np.ndarray,
    emotion: str,
    motion: np.ndarray | None = None,
    mean_motion: np.ndarray | None = None,
) -> dict:
    """Generate one clip from its audio and a reference motion frame; coefficient-space metrics, with the
    same metrics of the baselines (:func:`motion_baselines`) beside them.

    ``motion``: another method's motion for the clip (SadTalker's), scored instead of the model's;
    ``mean_motion``: the training split's (70,) mean frame (None: no mean-motion baseline)."""
    if motion is None:
        gen = model.generate(reference, feats["audio"], feats["tokens"].astype(np.int64), feats["mel"])
    else:
        gen = np.asarray(motion, dtype=np.float32)
    gt = feats["motion"]
    label = EMOTION_TO_ID[emotion]
    return {
        "lip_l2": lip_l2(gen, gt),
        "face_l2": face_l2(gen, gt),
        "emotion_pred": emotion_of_motion(model, gen),
        "emotion_pred_gt_motion": emotion_of_motion(model, gt),
        "emotion_label": label,
        "frames": len(gen),
        **motion_baselines(model, gt, reference, mean_motion),
        "motion": gen,
    }


# Motion-space baselines scored on every clip beside the model (issue: proof that it learns): two floors a
# model must beat and the stage-1 ceiling stage 2 cannot pass (its face branch decodes stage-1 codes)
BASELINES = ("copy_reference", "mean_motion", "stage1_ceiling")
BASELINE_LABELS = {
    "copy_reference": "baseline: copy the reference",
    "mean_motion": "baseline: training mean motion",
    "stage1_ceiling": "ceiling: ground truth through stage 1",
}


def held(reference: np.ndarray, n: int) -> np.ndarray:
    """(n, 70): a (70,) reference frame held still, or (T_d, 70) driving frames looped to ``n`` frames."""
    ref = np.asarray(reference, dtype=np.float32)
    if ref.ndim == 1:
        return np.repeat(ref[None], n, axis=0)
    return ref[np.arange(n) % len(ref)]


def stage1_reconstruction(model: EmoTalker, motion: np.ndarray) -> np.ndarray:
    """Ground-truth motion through the stage-1 VQ-VAE (encode, nearest codes, decode): the best face
    motion stage 2 can produce, since it only picks codes. The 13 lip coefficients stay the ground truth's."""
    dev = model.face_mean.device
    face = (torch.as_tensor(motion[:, list(FACE_INDICES)], device=dev) - model.face_mean) / model.face_std
    with torch.inference_mode():
        _, idx = model.vqvae.encode(face[None].float())
        recon = model.vqvae.decode_indices(idx, len(motion))[0] * model.face_std + model.face_mean
    out = np.array(motion, dtype=np.float32, copy=True)
    out[:, list(FACE_INDICES)] = recon.cpu().numpy()
    return out


def motion_baselines(
    model: EmoTalker, gt: np.ndarray, reference: np.ndarray, mean_motion: np.ndarray | None
) -> dict[str, float | int]:
    """The baselines' coefficient-space metrics on one clip, keyed ``<baseline>.<metric>``: copy the
    reference (held, or driving frames looped), the training split's mean motion frame, and the stage-1
    ceiling (its LipL2 is 0 by construction: left out)."""
    n = len(gt)
    motions = {"copy_reference": held(reference, n), "stage1_ceiling": stage1_reconstruction(model, gt)}
    if mean_motion is not None:
        motions["mean_motion"] = held(mean_motion, n)
    out: dict[str, float | int] = {}
    for name, m in motions.items():
        if name != "stage1_ceiling":
            out[f"{name}.lip_l2"] = lip_l2(m, gt)
        out[f"{name}.face_l2"] = face_l2(m, gt)
        out[f"{name}.emotion_pred"] = emotion_of_motion(model, m)
    return out


def landmark_metrics(
    bfm: BFMLandmarks, gen: np.ndarray, gt: np.ndarray, coeffs: np.ndarray
) -> dict[str, float]:
    """Motion-space F-LMD / M-LMD (not Table 1's, which are measured on rendered video): generated and
    ground-truth motion both projected through the BFM with the clip's identity (mean of its per-frame
    ``id`` coefficients), in pixels of Deep3DFace's 224 crop."""
    n = min(len(gen), len(gt))
    identity = coeffs[:, COEFF_SLICES["id"]].mean(axis=0)

    def landmarks(m: np.ndarray) -> np.ndarray:
        return project_landmarks(
            bfm, identity, m[:n, :EXP_DIM], m[:n, EXP_DIM : EXP_DIM + 3], m[:n, EXP_DIM + 3 :]
        )

    pred, ref = landmarks(gen), landmarks(gt)
    return {"f_lmd_motion": f_lmd(pred, ref), "m_lmd_motion": m_lmd(pred, ref)}
