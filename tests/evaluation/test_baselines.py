"""Every evaluation scores the baselines beside the model on the same clips: copy the reference, the
training mean motion (floors) and the stage-1 ceiling (ground truth through the VQ-VAE)."""

from __future__ import annotations

import numpy as np
import torch

from emotalker.configs.constants import FACE_INDICES, LIP_INDICES
from emotalker.tasks.evaluation.metrics import face_l2, lip_l2
from emotalker.tasks.evaluation.motion import (
    emotion_of_motion,
    evaluate_clip,
    held,
    motion_baselines,
    stage1_reconstruction,
)
from emotalker.tasks.evaluation.run import evaluation_table, setting_summary
from emotalker_testkit.tiny_model import tiny_emotalker

torch.set_num_threads(1)


def clip(t: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "motion": rng.standard_normal((t, 70)).astype(np.float32),
        "audio": rng.standard_normal((2 * t, 12)).astype(np.float32),
        "tokens": rng.integers(0, 5, 2 * t),
        "mel": rng.standard_normal((t, 80, 16)).astype(np.float32),
    }


def test_floors_hold_the_reference_or_loop_the_driving_frames() -> None:
    ref = np.arange(70, dtype=np.float32)
    assert np.array_equal(held(ref, 3), np.stack([ref] * 3))
    driving = np.stack([ref, ref + 1])
    assert np.array_equal(held(driving, 5)[:, 0], [0, 1, 0, 1, 0])
    model, feats = tiny_emotalker(), clip()
    gt, mean = feats["motion"], np.full(70, 0.5, np.float32)
    out = motion_baselines(model, gt, ref, mean)
    still = np.stack([ref] * len(gt))
    assert out["copy_reference.lip_l2"] == lip_l2(still, gt) and out["copy_reference.face_l2"] == face_l2(
        still, gt
    )
    assert out["copy_reference.emotion_pred"] == emotion_of_motion(model, still)
    assert out["mean_motion.face_l2"] == face_l2(np.stack([mean] * len(gt)), gt)
    assert "mean_motion.lip_l2" not in motion_baselines(model, gt, ref, None)


def test_stage1_ceiling_is_the_ground_truth_decoded_from_its_own_codes() -> None:
    model, gt = tiny_emotalker(), clip()["motion"]
    ceiling = stage1_reconstruction(model, gt)
    face = (torch.from_numpy(gt[:, list(FACE_INDICES)]) - model.face_mean) / model.face_std
    with torch.no_grad():
        codes = model.vqvae.quantizer.nearest(model.vqvae.encode_latent(face[None]))
        decoded = model.vqvae.decode_latent(model.vqvae.quantizer.lookup(codes))[0, : len(gt)]
    np.testing.assert_allclose(ceiling[:, list(FACE_INDICES)], decoded * 1.0 + 2.0, rtol=1e-5, atol=1e-5)
    assert np.array_equal(ceiling[:, list(LIP_INDICES)], gt[:, list(LIP_INDICES)])  # lips: the ground truth's
    out = motion_baselines(model, gt, gt[0], None)
    assert "stage1_ceiling.lip_l2" not in out and out["stage1_ceiling.face_l2"] == face_l2(ceiling, gt)


def test_evaluate_clip_scores_the_baselines_on_the_clip_and_the_table_shows_them() -> None:
    model, feats = tiny_emotalker(), clip()
    mean = feats["motion"].mean(axis=0)
    rows = [
        evaluate_clip(model, feats, feats["motion"][0], e, mean_motion=mean) | {"emotion_label": i}
        for i, e in enumerate(["angry", "happy"])
    ]
    summary = setting_summary(rows)
    for b in ("copy_reference", "mean_motion"):
        assert summary[f"{b}.LipL2"] == np.mean([r[f"{b}.lip_l2"] for r in rows])
    assert summary["stage1_ceiling.FaceL2"] == np.mean([r["stage1_ceiling.face_l2"] for r in rows])
    assert "stage1_ceiling.LipL2" not in summary
    table = evaluation_table({"neutral": summary}, {})
    methods = [t["method"] for t in table[:4]]
    assert methods[0] == "this run (neutral reference)" and not any("." in k for k in table[0])
    assert methods[1:] == [
        "baseline: copy the reference (neutral)",
        "baseline: training mean motion (neutral)",
        "ceiling: ground truth through stage 1 (neutral)",
    ]
    assert all(t["clips"] == 2 for t in table[:4])


def test_baselines_text_shows_every_row_and_our_margin_over_the_floors() -> None:
    from emotalker.tasks.evaluation.table1 import baselines_text

    summary = {"LipL2": 0.5, "FaceL2": 1.5, "EmoAcc_stage1_head": 0.75, "copy_reference.LipL2": 1.0}
    summary |= {"copy_reference.FaceL2": 2.0, "copy_reference.EmoAcc_stage1_head": 0.125}
    summary |= {"mean_motion.LipL2": 0.625, "mean_motion.FaceL2": 1.5, "mean_motion.EmoAcc_stage1_head": 0.25}
    summary |= {"stage1_ceiling.FaceL2": 0.25, "stage1_ceiling.EmoAcc_stage1_head": 1.0}
    text = baselines_text(summary)
    lines = text.splitlines()
    assert [line.split("  ")[0] for line in lines[1:5]] == [
        "EmoTalker (this run)",
        "baseline: copy the reference",
        "baseline: training mean motion",
        "ceiling: ground truth through stage 1",
    ]
    assert lines[4].split()[-3:] == ["-", "0.2500", "1.0000"]  # the ceiling has no LipL2
    assert "copy the reference' by: LipL2 +50%, FaceL2 +25%" in text
    assert "mean motion' by: LipL2 +20%, FaceL2 +0%" in text
