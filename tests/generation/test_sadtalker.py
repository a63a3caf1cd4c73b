"""SadTalker as a method: ExpNet + PoseVAE motion against upstream's inference on random weights saved in
the released layouts, weight resolution from the config, and Table 2 row 2's frozen ExpNet lips.

The upstream reference is written functionally from the state dicts, following ``src/generate_batch.py``
(``parse_audio_length`` / ``crop_pad_audio``, the mel window loop, ``generate_blink_seq_randomly`` with the
global ``random``), ``Audio2Exp.test`` (10-frame chunks) and ``SimpleWrapperV2.forward``; the pose half is
``tests/models/test_pose_vae.py``'s reference of ``Audio2Pose.test`` + ``Audio2Coeff.generate``. The mel
itself is the project's (``tasks/features/mel.py``), which upstream's ``audio.melspectrogram`` stands for.
"""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from emotalker.configs.constants import LIP_INDICES
from emotalker.configs.schema import load_config
from emotalker.models.lip import ExpNet
from emotalker.models.pose_vae import PoseVAE
from emotalker.tasks.features.mel import melspectrogram
from emotalker.tasks.generation.sadtalker import (
    SadTalkerModels,
    SadTalkerWeightsError,
    blink_ratio,
    cut_wave,
    load_sadtalker,
    sadtalker_lip_branch,
    sadtalker_mel_windows,
    sadtalker_motion,
)
from emotalker_testkit.weights import spread_weights

torch.set_num_threads(1)

_spec = importlib.util.spec_from_file_location(
    "pose_vae_reference", Path(__file__).resolve().parents[1] / "models" / "test_pose_vae.py"
)
assert _spec is not None and _spec.loader is not None
_pose_ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_pose_ref)


def _spread(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Audio, reference and blinks all move the output (see ``spread_weights``)."""
    return spread_weights(model, seed)


# ---------------------------------------------------------------- upstream reference


def _ref_blink(num_frames: int) -> np.ndarray:
    """generate_blink_seq_randomly, drawing from the global ``random`` as upstream does."""
    ratio = np.zeros((num_frames, 1))
    if num_frames <= 20:
        return ratio
    frame_id = 0
    while frame_id in range(num_frames):
        start = random.choice(range(min(10, num_frames), min(int(num_frames / 2), 70)))
        if frame_id + start + 5 <= num_frames - 1:
            ratio[frame_id + start : frame_id + start + 5, 0] = [0.5, 0.9, 1.0, 0.9, 0.5]
            frame_id = frame_id + start + 5
        else:
            break
    return ratio


def _ref_get_data(wav: np.ndarray, coeff70: np.ndarray) -> dict:
    bit_per_frames = 16000 / 25
    num_frames = int(len(wav) / bit_per_frames)
    wav = wav[: int(num_frames * bit_per_frames)]
    orig_mel = melspectrogram(wav).T
    indiv_mels = []
    for i in range(num_frames):
        start_idx = int(80.0 * ((i - 2) / float(25)))
        seq = [min(max(item, 0), orig_mel.shape[0] - 1) for item in range(start_idx, start_idx + 16)]
        indiv_mels.append(orig_mel[seq, :].T)
    ratio = _ref_blink(num_frames)
    ref_coeff = np.repeat(coeff70.reshape(1, 70), num_frames, axis=0)
    return {
        "indiv_mels": torch.FloatTensor(np.asarray(indiv_mels)).unsqueeze(1).unsqueeze(0),
        "ref": torch.FloatTensor(ref_coeff).unsqueeze(0),
        "num_frames": num_frames,
        "ratio_gt": torch.FloatTensor(ratio).unsqueeze(0),
    }


def _ref_netg(sd: dict, x: torch.Tensor, ref: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """SimpleWrapperV2.forward from the ``netG.`` state dict."""
    n = x.size(0)
    for i, (stride, pad, residual) in enumerate(_pose_ref._AE):
        p = f"netG.audio_encoder.{i}.conv_block"
        out = _pose_ref._bn(_pose_ref._conv(x, sd, f"{p}.0", stride, pad), sd, f"{p}.1")
        x = F.relu(out + x if residual else out)
    x = x.view(n, -1)
    y = F.linear(
        torch.cat([x, ref.reshape(n, -1), ratio.reshape(n, -1)], dim=1),
        sd["netG.mapping1.weight"],
        sd["netG.mapping1.bias"],
    )
    return y.reshape(ref.shape[0], ref.shape[1], -1)


def _ref_audio2exp_test(sd: dict, batch: dict) -> torch.Tensor:
    mel_input = batch["indiv_mels"]
    exp = []
    for i in range(0, mel_input.shape[1], 10):
        current = mel_input[:, i : i + 10]
        ref = batch["ref"][:, :, :64][:, i : i + 10]
        ratio = batch["ratio_gt"][:, i : i + 10]
        exp.append(_ref_netg(sd, current.view(-1, 1, 80, 16), ref, ratio))
    return torch.cat(exp, dim=1)


def _ref_sadtalker(
    exp_sd: dict, pose_sd: dict, wav: np.ndarray, coeff70: np.ndarray, style: int, seed: int
) -> np.ndarray:
    random.seed(seed)
    torch.manual_seed(seed)
    batch = _ref_get_data(wav, coeff70)
    with torch.no_grad():
        exp = _ref_audio2exp_test(exp_sd, batch)[0].numpy()
    mels = batch["indiv_mels"][0, :, 0]
    pose = _pose_ref._ref_generate(pose_sd, mels, batch["ref"][0, 0], style)
    return np.concatenate([exp, pose], axis=1)


# ---------------------------------------------------------------- fixtures: released layouts


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> dict:
    """Random ExpNet and PoseVAE saved as SadTalker_V0.0.2_256.safetensors (beside another section) and as
    the older auido2exp_00300 / auido2pose_00140 .pth dicts."""
    d = tmp_path_factory.mktemp("sadtalker")
    expnet, pose = _spread(ExpNet(), 1), _spread(PoseVAE(), 2)
    exp_sd = {f"netG.{k}": v.clone() for k, v in expnet.state_dict().items()}
    pose_sd = {k: v.clone() for k, v in pose.state_dict().items()}
    tensors = {f"audio2exp.{k}": v for k, v in exp_sd.items()}
    tensors |= {f"audio2pose.{k}": v for k, v in pose_sd.items()}
    tensors["kp_extractor.other.weight"] = torch.zeros(3)
    st = d / "SadTalker_V0.0.2_256.safetensors"
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(st))
    exp_pth, pose_pth = d / "auido2exp_00300-model.pth", d / "auido2pose_00140-model.pth"
    torch.save({"model": exp_sd, "optimizer": {}, "epoch": 300}, exp_pth)
    torch.save({"model": pose_sd, "optimizer": {}, "epoch": 140}, pose_pth)
    return {"st": st, "exp_pth": exp_pth, "pose_pth": pose_pth, "exp_sd": exp_sd, "pose_sd": pose_sd}


def _cfg(**keys: Path | int | None):
    ov = [f"{k}={'null' if v is None else v}" for k, v in keys.items()]
    return load_config("configs/demo.yaml", ["device=cpu", *ov])


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("t", [0, 5, 20, 21, 22, 45, 100, 400])
def test_blink_ratio_follows_upstream_draws(t: int) -> None:
    for seed in (0, 3):
        random.seed(seed)
        try:
            expected = _ref_blink(t)
        except IndexError:  # upstream's choice over an empty range (T = 21): no blink here
            assert t == 21
            expected = np.zeros((t, 1))
        got = blink_ratio(t, random.Random(seed))
        np.testing.assert_array_equal(got, expected)
    if t >= 45:
        assert blink_ratio(t, random.Random(0)).max() == 1.0  # blinks happen
        assert not np.array_equal(blink_ratio(t, random.Random(0)), blink_ratio(t, random.Random(1)))


@pytest.mark.parametrize(
    ("layout", "seconds", "style", "seed"), [("safetensors", 2.37, 5, 0), ("pth", 1.0319, 45, 7)]
)
def test_motion_equals_upstream_on_released_layouts(released, layout, seconds, style, seed) -> None:
    """Same wav, reference, pose style and seed: SadTalker's 70 coefficients per frame as upstream's."""
    if layout == "safetensors":
        cfg = _cfg(**{"render.checkpoint": released["st"]})
    else:
        cfg = _cfg(
            **{
                "sadtalker.audio2exp_checkpoint": released["exp_pth"],
                "sadtalker.audio2pose_checkpoint": released["pose_pth"],
                "render.checkpoint": Path("/nonexistent/render.pth"),
            }
        )
    models = load_sadtalker(cfg)
    g = np.random.default_rng(4)
    wav = (g.standard_normal(int(seconds * 16000)) * 0.1).astype(np.float32)
    coeff70 = (g.standard_normal(70) * 0.3).astype(np.float32)
    got = sadtalker_motion(models, wav, coeff70, style, seed)
    expected = _ref_sadtalker(released["exp_sd"], released["pose_sd"], wav, coeff70, style, seed)
    assert got.shape == expected.shape == (int(len(wav) / 640), 70) and got.dtype == np.float32
    assert expected[:, :64].std(axis=0).min() > 1e-3 and expected[:, 64:67].std(axis=0).min() > 1e-5
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # negative controls: another seed (blinks and z) or another reference expression changes the motion
    assert not np.allclose(sadtalker_motion(models, wav, coeff70, style, seed + 1), got, atol=1e-4)
    other = coeff70.copy()
    other[:64] += 0.5
    moved = sadtalker_motion(models, wav, other, style, seed)
    assert not np.allclose(moved[:, :64], got[:, :64], atol=1e-4)
    np.testing.assert_allclose(moved[:, 64:], got[:, 64:], rtol=1e-6)  # the pose reads ref[64:70] only


def test_wave_is_cut_to_whole_video_frames() -> None:
    wav = np.random.default_rng(0).standard_normal(640 * 7 + 639).astype(np.float32)
    assert len(cut_wave(wav)) == 640 * 7
    windows = sadtalker_mel_windows(wav)
    assert windows.shape == (7, 80, 16)
    np.testing.assert_array_equal(windows, sadtalker_mel_windows(wav[: 640 * 7]))
    with pytest.raises(ValueError, match="one video frame"):
        cut_wave(wav[:639])


def test_weights_resolve_from_the_config_with_one_line_errors(released, tmp_path) -> None:
    both = load_sadtalker(_cfg(**{"render.checkpoint": released["st"]}))
    assert both.sources == {"audio2exp": str(released["st"]), "audio2pose": str(released["st"])}
    assert isinstance(both, SadTalkerModels) and not any(p.requires_grad for p in both.expnet.parameters())
    torch.testing.assert_close(both.expnet.mapping1.weight, released["exp_sd"]["netG.mapping1.weight"])
    mixed = load_sadtalker(
        _cfg(**{"render.checkpoint": released["st"], "sadtalker.audio2pose_checkpoint": released["pose_pth"]})
    )
    assert mixed.sources["audio2pose"] == str(released["pose_pth"])
    cases = [
        ({"render.checkpoint": tmp_path / "none.safetensors"}, "render.checkpoint"),
        ({"render.checkpoint": released["pose_pth"]}, "set sadtalker.audio2exp_checkpoint"),
        (
            {"render.checkpoint": released["st"], "sadtalker.audio2pose_checkpoint": tmp_path / "x.pth"},
            "sadtalker.audio2pose_checkpoint",
        ),
        (  # an ExpNet file where the PoseVAE belongs: refused (strict), naming the key
            {"render.checkpoint": released["st"], "sadtalker.audio2pose_checkpoint": released["exp_pth"]},
            "sadtalker.audio2pose_checkpoint",
        ),
    ]
    for keys, message in cases:
        with pytest.raises(SadTalkerWeightsError) as err:
            load_sadtalker(_cfg(**keys))
        assert message in str(err.value) and "\n" not in str(err.value)


def test_row2_lips_are_sadtalkers_frozen_expnet(released) -> None:
    """Table 2 row 2: the released ExpNet, not retrained; its lip entries as they are (no mapping2)."""
    cfg = _cfg(**{"render.checkpoint": released["st"]})
    lip = sadtalker_lip_branch(cfg)
    assert lip.lip_mix == 0.0 and not any(p.requires_grad for p in lip.parameters()) and not lip.training
    mel, ref = torch.randn(6, 1, 80, 16), torch.randn(6, 64)
    ratio = torch.rand(6, 1)
    out = lip(mel, ref, ratio)
    with torch.no_grad():
        y = _ref_netg(released["exp_sd"], mel, ref[:, None], ratio)[:, 0]
    torch.testing.assert_close(out["exp"], y, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out["lip"], y[:, list(LIP_INDICES)], rtol=1e-5, atol=1e-5)
