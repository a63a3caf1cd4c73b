"""SadTalker PoseVAE: released parameter layout, strict loading, and parity with upstream's inference.

The parity reference below is written functionally from the state dict, following upstream's
``Audio2Pose.test`` / ``CVAE`` decoder / ``ResUnet`` / ``AudioEncoder`` and ``Audio2Coeff.generate`` /
``using_refpose`` step by step (global ``torch.randn`` per chunk, ``savgol_filter`` on a (1, T, 6) array).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from scipy.signal import savgol_filter

from emotalker.models.pose_vae import (
    N_TENSORS,
    PoseVAE,
    build_pose_vae,
    load_sadtalker_audio2pose,
    pose_chunks,
    sadtalker_pose,
    sadtalker_pose_motion,
    savgol_window,
    write_standin_pose_vae,
)
from emotalker.models.weights import CheckpointError
from emotalker_testkit.weights import spread_weights

torch.set_num_threads(1)


def _random_model(seed: int = 0) -> PoseVAE:
    """Weights that make audio, chunking and eval-mode BN all move the poses (see ``spread_weights``)."""
    torch.manual_seed(seed)  # parameters the spread leaves (e.g. the style bias) are seeded too
    return spread_weights(PoseVAE(), seed)


def _state(model: PoseVAE) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- layout and loading


def test_released_layout_names_and_shapes() -> None:
    sd = PoseVAE().state_dict()
    assert len(sd) == N_TENSORS == 419
    groups = {"audio_encoder.": 91, "netG.encoder.": 154, "netG.decoder.": 154, "netD_motion.": 20}
    assert {g: sum(k.startswith(g) for k in sd) for g in groups} == groups
    shapes = {
        "audio_encoder.audio_encoder.0.conv_block.0.weight": (32, 1, 3, 3),
        "audio_encoder.audio_encoder.12.conv_block.1.num_batches_tracked": (),
        "netG.encoder.MLP.L0.weight": (128, 454),
        "netG.encoder.linear_logvar.weight": (64, 128),
        "netG.encoder.classbias": (46, 64),
        "netG.decoder.MLP.L0.weight": (128, 262),
        "netG.decoder.MLP.L1.weight": (192, 128),
        "netG.decoder.linear_audio.weight": (6, 512),
        "netG.decoder.pose_linear.weight": (6, 6),
        "netG.decoder.classbias": (46, 64),
        "netG.decoder.resunet.input_layer.3.weight": (32, 32, 3, 3),
        "netG.decoder.resunet.upsample_1.upsample.weight": (256, 256, 2, 1),
        "netG.decoder.resunet.up_residual_conv3.conv_skip.1.running_var": (32,),
        "netG.decoder.resunet.output_layer.0.weight": (1, 32, 1, 1),
        "netD_motion.seq.0.conv.weight": (256, 6, 4),
        "netD_motion.seq.2.norm.running_mean": (1024,),
        "netD_motion.seq.3.bias": (1,),
    }
    assert {k: tuple(sd[k].shape) for k in shapes} == shapes
    assert "netD_motion.seq.0.conv.bias" not in sd


def test_strict_load_from_safetensors_among_other_sections(tmp_path: Path) -> None:
    src = _random_model(1)
    flat = {f"audio2pose.{k}": v for k, v in _state(src).items()}
    flat |= {
        "kp_extractor.fc.weight": torch.zeros(2),
        "audio2exp.netG.mapping1.weight": torch.zeros(64, 577),
        "face_3drecon.fc.bias": torch.zeros(3),
        "generator.x": torch.zeros(1),
    }
    path = tmp_path / "SadTalker_V0.0.2_256.safetensors"
    save_file(flat, str(path))
    dst = PoseVAE()
    assert load_sadtalker_audio2pose(dst, path) == "safetensors"
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k


def test_strict_load_from_old_pth(tmp_path: Path) -> None:
    src = _random_model(2)
    opt = torch.optim.Adam(src.netG.parameters())
    path = tmp_path / "auido2pose_00140-model.pth"
    torch.save({"model": _state(src), "optimizer": opt.state_dict(), "epoch": 140}, path)
    model = build_pose_vae(path)
    assert not model.training
    for k, v in src.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k


def _one_line_error(exc_type: type[Exception], fn: Callable[[], object], match: str) -> None:
    with pytest.raises(exc_type, match=match) as info:
        fn()
    assert "\n" not in str(info.value)


def test_load_errors_are_one_line(tmp_path: Path) -> None:
    sd = _state(PoseVAE())
    missing = {f"audio2pose.{k}": v for k, v in sd.items() if k != "netG.decoder.classbias"}
    save_file(missing, str(tmp_path / "missing.safetensors"))
    _one_line_error(
        CheckpointError,
        lambda: load_sadtalker_audio2pose(PoseVAE(), tmp_path / "missing.safetensors"),
        r"1 missing keys .*netG\.decoder\.classbias",
    )
    wrong = dict(sd, **{"netG.decoder.MLP.L0.weight": torch.zeros(128, 263)})
    torch.save({"model": wrong, "epoch": 1}, tmp_path / "shape.pth")
    _one_line_error(
        CheckpointError,
        lambda: load_sadtalker_audio2pose(PoseVAE(), tmp_path / "shape.pth"),
        r"1 shape mismatches .*MLP\.L0\.weight \(128, 263\) vs \(128, 262\)",
    )
    _one_line_error(
        FileNotFoundError,
        lambda: load_sadtalker_audio2pose(PoseVAE(), tmp_path / "nope.safetensors"),
        "audio2pose checkpoint not found",
    )
    save_file({"audio2exp.w": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    _one_line_error(
        CheckpointError,
        lambda: load_sadtalker_audio2pose(PoseVAE(), tmp_path / "other.safetensors"),
        "no 'audio2pose.' tensors",
    )
    torch.save(sd, tmp_path / "bare.pth")  # a bare state dict is not the released {'model': ...} layout
    _one_line_error(
        CheckpointError,
        lambda: load_sadtalker_audio2pose(PoseVAE(), tmp_path / "bare.pth"),
        "expected auido2pose_00140-model.pth",
    )


def test_standin_has_the_released_layout(tmp_path: Path) -> None:
    a = write_standin_pose_vae(tmp_path / "a.safetensors", seed=3)
    b = write_standin_pose_vae(tmp_path / "b" / "b.safetensors", seed=3)
    ta, tb = load_file(str(a)), load_file(str(b))
    assert len(ta) == N_TENSORS and all(k.startswith("audio2pose.") for k in ta)
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    model = build_pose_vae(a)
    assert torch.equal(model.netG.decoder.classbias, ta["audio2pose.netG.decoder.classbias"])


# ---------------------------------------------------------------- chunking and smoothing rules


def test_pose_chunks_follow_upstream() -> None:
    # frame 0 is the reference; windows 1..T-1 in 32-frame chunks, the remainder = the last 32 windows
    assert pose_chunks(70) == [(1, 33, 32), (33, 65, 32), (38, 70, 5)]
    assert pose_chunks(65) == [(1, 33, 32), (33, 65, 32)]
    assert pose_chunks(33) == [(1, 33, 32)]
    assert pose_chunks(34) == [(1, 33, 32), (2, 34, 1)]
    assert pose_chunks(10) == [(1, 10, 9)]  # short: one chunk, front-padded to 32 embeddings
    assert pose_chunks(1) == []
    with pytest.raises(ValueError):
        pose_chunks(0)


def test_savgol_window_for_short_clips() -> None:
    assert [savgol_window(t) for t in range(3, 16)] == [3, 3, 5, 5, 7, 7, 9, 9, 11, 11, 13, 13, 13]


# ---------------------------------------------------------------- independent upstream reference

Stride = int | tuple[int, int]

_AE = [  # Wav2Lip audio encoder: (stride, padding, residual) per Conv2d block
    (1, 1, False), (1, 1, True), (1, 1, True),
    ((3, 1), 1, False), (1, 1, True), (1, 1, True),
    (3, 1, False), (1, 1, True), (1, 1, True),
    ((3, 2), 1, False), (1, 1, True),
    (1, 0, False), (1, 0, False),
]  # fmt: skip


def _bn(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    w, b = sd[f"{p}.weight"], sd[f"{p}.bias"]
    return F.batch_norm(x, sd[f"{p}.running_mean"], sd[f"{p}.running_var"], w, b, False, 0.0, 1e-5)


def _conv(x: torch.Tensor, sd: dict, p: str, stride: Stride = 1, padding: int = 0) -> torch.Tensor:
    return F.conv2d(x, sd[f"{p}.weight"], sd[f"{p}.bias"], stride, padding)


def _ref_audio_encoder(sd: dict, audio_sequences: torch.Tensor) -> torch.Tensor:
    b = audio_sequences.size(0)
    x = torch.cat([audio_sequences[:, i] for i in range(audio_sequences.size(1))], dim=0)
    for i, (stride, pad, residual) in enumerate(_AE):
        p = f"audio_encoder.audio_encoder.{i}.conv_block"
        out = _bn(_conv(x, sd, f"{p}.0", stride, pad), sd, f"{p}.1")
        x = F.relu(out + x if residual else out)
    return x.reshape((b, -1, x.shape[1], 1, 1)).squeeze(-1).squeeze(-1)


def _ref_residual_conv(x: torch.Tensor, sd: dict, p: str, stride: Stride) -> torch.Tensor:
    h = _conv(F.relu(_bn(x, sd, f"{p}.conv_block.0")), sd, f"{p}.conv_block.2", stride, 1)
    h = _conv(F.relu(_bn(h, sd, f"{p}.conv_block.3")), sd, f"{p}.conv_block.5", 1, 1)
    return h + _bn(_conv(x, sd, f"{p}.conv_skip.0", stride, 1), sd, f"{p}.conv_skip.1")


def _ref_resunet(x: torch.Tensor, sd: dict, p: str) -> torch.Tensor:
    def up(t: torch.Tensor, name: str) -> torch.Tensor:
        w, b = sd[f"{p}.{name}.upsample.weight"], sd[f"{p}.{name}.upsample.bias"]
        return F.conv_transpose2d(t, w, b, stride=(2, 1))

    h = F.relu(_bn(_conv(x, sd, f"{p}.input_layer.0", 1, 1), sd, f"{p}.input_layer.1"))
    x1 = _conv(h, sd, f"{p}.input_layer.3", 1, 1) + _conv(x, sd, f"{p}.input_skip.0", 1, 1)
    x2 = _ref_residual_conv(x1, sd, f"{p}.residual_conv_1", (2, 1))
    x3 = _ref_residual_conv(x2, sd, f"{p}.residual_conv_2", (2, 1))
    x4 = up(_ref_residual_conv(x3, sd, f"{p}.bridge", (2, 1)), "upsample_1")
    x6 = up(_ref_residual_conv(torch.cat([x4, x3], 1), sd, f"{p}.up_residual_conv1", 1), "upsample_2")
    x8 = up(_ref_residual_conv(torch.cat([x6, x2], 1), sd, f"{p}.up_residual_conv2", 1), "upsample_3")
    x10 = _ref_residual_conv(torch.cat([x8, x1], 1), sd, f"{p}.up_residual_conv3", 1)
    return torch.sigmoid(_conv(x10, sd, f"{p}.output_layer.0"))


def _ref_decoder(sd: dict, batch: dict) -> dict:
    p = "netG.decoder"
    z, class_id, ref, audio_in = batch["z"], batch["class"], batch["ref"], batch["audio_emb"]
    bs = z.shape[0]
    audio_out = F.linear(audio_in, sd[f"{p}.linear_audio.weight"], sd[f"{p}.linear_audio.bias"])
    audio_out = audio_out.reshape([bs, -1])
    z = z + sd[f"{p}.classbias"][class_id]
    x = torch.cat([ref, z, audio_out], dim=-1)
    x = F.relu(F.linear(x, sd[f"{p}.MLP.L0.weight"], sd[f"{p}.MLP.L0.bias"]))
    x = torch.sigmoid(F.linear(x, sd[f"{p}.MLP.L1.weight"], sd[f"{p}.MLP.L1.bias"]))
    pose_emb = _ref_resunet(x.reshape((bs, 32, -1)).unsqueeze(1), sd, f"{p}.resunet")
    out = F.linear(pose_emb.squeeze(1), sd[f"{p}.pose_linear.weight"], sd[f"{p}.pose_linear.bias"])
    batch.update({"pose_motion_pred": out})
    return batch


def _ref_audio2pose_test(sd: dict, x: dict) -> dict:
    seq_len, latent_dim = 32, 64
    batch: dict = {}
    ref = x["ref"]
    batch["ref"] = x["ref"][:, 0, -6:]
    batch["class"] = x["class"]
    bs = ref.shape[0]
    indiv_mels_use = x["indiv_mels"][:, 1:]
    num_frames = int(x["num_frames"]) - 1
    div, re = num_frames // seq_len, num_frames % seq_len
    pose_motion_pred_list = [torch.zeros(batch["ref"].unsqueeze(1).shape, dtype=batch["ref"].dtype)]
    for i in range(div):
        batch["z"] = torch.randn(bs, latent_dim)
        batch["audio_emb"] = _ref_audio_encoder(sd, indiv_mels_use[:, i * seq_len : (i + 1) * seq_len])
        batch = _ref_decoder(sd, batch)
        pose_motion_pred_list.append(batch["pose_motion_pred"])
    if re != 0:
        batch["z"] = torch.randn(bs, latent_dim)
        audio_emb = _ref_audio_encoder(sd, indiv_mels_use[:, -1 * seq_len :])
        if audio_emb.shape[1] != seq_len:
            pad_dim = seq_len - audio_emb.shape[1]
            audio_emb = torch.cat([audio_emb[:, :1].repeat(1, pad_dim, 1), audio_emb], 1)
        batch["audio_emb"] = audio_emb
        batch = _ref_decoder(sd, batch)
        pose_motion_pred_list.append(batch["pose_motion_pred"][:, -1 * re :, :])
    batch["pose_pred"] = ref[:, :1, -6:] + torch.cat(pose_motion_pred_list, dim=1)
    return batch


def _ref_generate(
    sd: dict, mels: torch.Tensor, coeff70: torch.Tensor, style: int, refpose: np.ndarray | None = None
) -> np.ndarray:
    t = mels.shape[0]
    x = {
        "indiv_mels": mels.unsqueeze(1).unsqueeze(0),  # bs T 1 80 16
        "ref": coeff70.reshape(1, 1, 70).repeat(1, t, 1),  # generate_batch repeats the first frame
        "num_frames": t,
        "class": torch.LongTensor([style]),
    }
    with torch.no_grad():
        pose_pred = _ref_audio2pose_test(sd, x)["pose_pred"]
    pose_len = pose_pred.shape[1]
    if pose_len < 13:
        pose_len = int((pose_len - 1) / 2) * 2 + 1
        pose_pred = torch.Tensor(savgol_filter(np.array(pose_pred.cpu()), pose_len, 2, axis=1))
    else:
        pose_pred = torch.Tensor(savgol_filter(np.array(pose_pred.cpu()), 13, 2, axis=1))
    coeffs = torch.cat((torch.zeros(1, t, 64), pose_pred), dim=-1)[0].numpy()
    if refpose is not None:  # using_refpose
        num_frames, refpose_num_frames = coeffs.shape[0], refpose.shape[0]
        if refpose_num_frames < num_frames:
            div, re = num_frames // refpose_num_frames, num_frames % refpose_num_frames
            refpose = np.concatenate([refpose for _ in range(div)] + [refpose[:re, :]], axis=0)
        coeffs[:, 64:70] = coeffs[:, 64:70] + (refpose[:num_frames, :] - refpose[0:1, :])
    return coeffs[:, 64:70]


@pytest.mark.parametrize(("t", "style", "with_refpose"), [(70, 7, False), (65, 45, True), (10, 0, True)])
def test_parity_with_upstream_reference(t: int, style: int, with_refpose: bool) -> None:
    model = _random_model(4)
    sd = _state(model)
    g = torch.Generator().manual_seed(11)
    mels = torch.randn(t, 80, 16, generator=g)
    coeff70 = torch.randn(70, generator=g) * 0.2
    refpose = (torch.randn(4, 6, generator=g) * 0.1).numpy() if with_refpose else None

    torch.manual_seed(123)  # upstream draws z with the global RNG
    expected = _ref_generate(sd, mels, coeff70, style, refpose)
    got = sadtalker_pose(model, mels, coeff70, style, generator=123, ref_pose_seq=refpose)
    assert got.shape == (t, 6) and got.dtype == torch.float32
    assert float(np.std(expected[:, :3], axis=0).min()) > 1e-4  # the check is not vacuous
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-5)


def test_frame0_motion_is_zero_and_seed_decides_the_pose() -> None:
    model = _random_model(5)
    mels, ref = torch.randn(40, 1, 80, 16), torch.randn(6)
    motion = sadtalker_pose_motion(model, mels, ref, 3, generator=7)
    assert motion.shape == (40, 6) and torch.equal(motion[0], torch.zeros(6))
    assert torch.equal(motion, sadtalker_pose_motion(model, mels, ref, 3, generator=7))
    assert torch.equal(motion, sadtalker_pose_motion(model, mels.numpy()[:, 0], ref.numpy(), 3, generator=7))
    assert not torch.allclose(motion[1:], sadtalker_pose_motion(model, mels, ref, 3, generator=8)[1:])
    # the same generator state gives the same poses; the reference pose adds ref[64:70] to every frame
    coeff = torch.randn(70)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(sadtalker_pose(model, mels, coeff, 1, g1), sadtalker_pose(model, mels, coeff, 1, g2))
    # the style id only shifts z by the decoder's classbias
    with torch.no_grad():
        model.netG.decoder.classbias[2] = model.netG.decoder.classbias[3]
    assert torch.equal(motion, sadtalker_pose_motion(model, mels, ref, 2, generator=7))


def test_invalid_inputs() -> None:
    model = _random_model(6)
    with pytest.raises(ValueError, match="T >= 3"):
        sadtalker_pose(model, torch.randn(2, 80, 16), torch.zeros(70), 0, 0)
    with pytest.raises(ValueError, match="0..45"):
        sadtalker_pose(model, torch.randn(5, 80, 16), torch.zeros(70), 46, 0)
    with pytest.raises(ValueError, match="70"):
        sadtalker_pose(model, torch.randn(5, 80, 16), torch.zeros(64), 0, 0)
    with pytest.raises(ValueError, match="80, 16"):
        sadtalker_pose(model, torch.randn(5, 80, 12), torch.zeros(70), 0, 0)
    with pytest.raises(ValueError, match="eval"):
        sadtalker_pose(model.train(), torch.randn(5, 80, 16), torch.zeros(70), 0, 0)
