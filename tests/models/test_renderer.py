"""SadTalker face renderer: released layouts load strictly, the cached source path equals SadTalker's call."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from emotalker.configs.schema import RendererWidthsConfig
from emotalker.models.pose_vae import N_TENSORS, PoseVAE, load_sadtalker_audio2pose
from emotalker.models.renderer import (
    CheckpointError,
    FaceRenderer,
    RendererWidths,
    coefficient_windows,
    load_facerender_weights,
    load_mapping_weights,
)
from emotalker.models.renderer.blocks import bake_spectral_norm, fold_batchnorm
from emotalker.models.renderer.kinematics import transform_keypoints
from emotalker.tasks.demo.standins.fake_renderer import write_renderer_standins

NARROW = RendererWidths(
    kp_block_expansion=8,
    kp_max_features=64,
    generator_block_expansion=8,
    generator_max_features=64,
    dense_block_expansion=4,
    dense_max_features=32,
    dense_compress=1,
    mapping_descriptor=32,
    spade_hidden=16,
    num_kp=15,
    reshape_depth=8,
)
RELEASED = RendererWidths.from_config(RendererWidthsConfig())  # the schema's defaults: facerender.yaml


@pytest.fixture(scope="module")
def standins(tmp_path_factory):
    return write_renderer_standins(tmp_path_factory.mktemp("renderer"), NARROW, seed=3, he_widths=(8, 64))


def _file_state(path, prefix: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return {k[len(prefix) :]: v for k, v in load_file(str(path)).items() if k.startswith(prefix)}


def test_released_sizes_have_the_released_tensor_counts():
    with torch.device("meta"):
        r = FaceRenderer(RELEASED, layouts=(70, 73))
    # SadTalker_V0.0.2_256.safetensors: 75 kp_extractor. and 386 generator. tensors
    assert len(r.kp_extractor.state_dict()) == 75
    assert len(r.generator.state_dict()) == 386
    assert r.generator.state_dict()["second.weight"].shape == (512, 256, 1, 1)
    assert r.kp_extractor.state_dict()["predictor.conv.weight"].shape == (16384, 1024, 1, 1)
    assert r.mappings["73"].state_dict()["first.0.weight"].shape == (1024, 73, 7)


@pytest.mark.parametrize("layout", ["safetensors", "facevid2vid"])
def test_each_renderer_layout_loads_strictly(standins, layout):
    r = FaceRenderer(NARROW, layouts=(70, 73))
    assert load_facerender_weights(r.kp_extractor, r.generator, standins[layout]) == layout
    if layout == "safetensors":
        expected = _file_state(standins[layout], "generator.")
    else:
        expected = torch.load(standins[layout], weights_only=True)["generator"]
    got = r.generator.state_dict()
    assert set(got) == set(expected)
    for k, v in expected.items():
        torch.testing.assert_close(got[k], v)


def test_mapping_layouts_load_strictly(standins):
    r = FaceRenderer(NARROW, layouts=(70, 73))
    load_mapping_weights(r.mappings["70"], standins["mapping"])
    load_mapping_weights(r.mappings["73"], standins["mapping_full"])
    saved = torch.load(standins["mapping_full"], weights_only=True)["mapping"]
    torch.testing.assert_close(r.mappings["73"].fc_exp.weight, saved["fc_exp.weight"])
    with pytest.raises(CheckpointError, match="shape mismatches"):  # 73-column file into the 70 net
        load_mapping_weights(r.mappings["70"], standins["mapping_full"])


def test_wrong_widths_or_file_give_one_line_errors(standins, tmp_path):
    wide = FaceRenderer(dataclasses.replace(NARROW, generator_block_expansion=16))
    with pytest.raises(CheckpointError, match="render.widths") as err:
        load_facerender_weights(wide.kp_extractor, wide.generator, standins["safetensors"])
    assert "\n" not in str(err.value) and "generator." in str(err.value)
    bad = tmp_path / "other.pth.tar"
    torch.save({"model": {}}, bad)
    with pytest.raises(CheckpointError, match="facevid2vid dict"):
        load_facerender_weights(wide.kp_extractor, wide.generator, bad)
    with pytest.raises(CheckpointError, match="'mapping'"):
        load_mapping_weights(wide.mappings["70"], bad)


def test_every_width_key_changes_the_network():
    def shapes(w: RendererWidths) -> dict[str, tuple[int, ...]]:
        with torch.device("meta"):
            r = FaceRenderer(w, layouts=(70,))
        return {k: tuple(v.shape) for k, v in r.state_dict().items()}

    ref = shapes(NARROW)
    for field in dataclasses.fields(RendererWidths):
        value = getattr(NARROW, field.name)
        changed = dataclasses.replace(NARROW, **{field.name: value * 2})
        assert shapes(changed) != ref, field.name


def test_coefficient_windows_are_27_frames_clamped_at_the_ends():
    coeffs = np.arange(30, dtype=np.float32)[:, None].repeat(2, axis=1)
    w = coefficient_windows(coeffs, 0, 30)
    assert w.shape == (30, 2, 27)
    np.testing.assert_array_equal(w[0, 0], np.r_[np.zeros(13), np.arange(14)])
    np.testing.assert_array_equal(w[15, 0], np.arange(2, 29))
    np.testing.assert_array_equal(w[29, 0], np.r_[np.arange(16, 30), np.full(13, 29)])


@pytest.mark.parametrize("mode", ["crop", "full"])
def test_cached_source_renders_what_sadtalkers_per_batch_call_renders(standins, mode):
    """Source volume / dense-motion inputs computed once == SadTalker recomputing them for each batch."""
    torch.manual_seed(0)
    r = FaceRenderer(NARROW, layouts=(70, 73))
    load_facerender_weights(r.kp_extractor, r.generator, standins["safetensors"])
    load_mapping_weights(r.mappings["70"], standins["mapping"])
    load_mapping_weights(r.mappings["73"], standins["mapping_full"])
    r.eval()
    n = 73 if mode == "full" else 70
    image = torch.rand(1, 3, 128, 128)
    src_coeffs = torch.randn(1, n) * 0.3
    windows = torch.from_numpy(
        coefficient_windows(np.random.default_rng(0).normal(0, 0.3, (4, n)), 0, 3)
    ).float()
    with torch.inference_mode():
        state = r.prepare(image, src_coeffs, mode)
        ours = r.render(state, windows)
        # SadTalker's make_animation: kp_source from the repeated source window, generator(source batch, ...)
        mapping = r.mappings[str(n)]
        kp_c = r.kp_extractor(image)
        kp_s = transform_keypoints(kp_c, mapping(src_coeffs[:, :, None].expand(-1, -1, 27)))
        kp_d = transform_keypoints(kp_c, mapping(windows))
        theirs = r.generator(image.expand(3, -1, -1, -1), kp_d, kp_s.expand(3, -1, -1))
        # what load_renderer does for inference, checked in float64: the fold is exact algebra, and in
        # float32 its rounding, amplified through the warps, reached 1.5e-4 on one CPU (CI, AMD EPYC)
        plain = copy.deepcopy(r.generator).double()
        baked = fold_batchnorm(bake_spectral_norm(copy.deepcopy(r.generator).double()))
        inputs = (image.double(), state.kp_source.double())
        before_bake = plain.render(plain.prepare(*inputs), kp_d.double())
        after_bake = baked.render(baked.prepare(*inputs), kp_d.double())
    assert ours.shape == (3, 3, 128, 128) and 0 <= ours.min() and ours.max() <= 1
    torch.testing.assert_close(ours, theirs, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(after_bake, before_bake, atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(after_bake.float(), ours, atol=1e-3, rtol=1e-3)
    assert (ours[0] - ours[2]).abs().max() > 1e-4  # the frames follow their own windows


def test_sadtalker_safetensors_feeds_deep3dface_and_the_lip_branch(standins):
    from emotalker.configs.schema import LipConfig
    from emotalker.models.deep3dface import load_recon_net
    from emotalker.models.lip import LipBranch

    net = load_recon_net(standins["safetensors"])
    expected = _file_state(standins["safetensors"], "face_3drecon.")
    torch.testing.assert_close(net.final_layers[1].weight, expected["final_layers.1.weight"])
    lip = LipBranch.from_config(LipConfig())
    report = lip.load_sadtalker_audio2exp(standins["safetensors"], strict=True)
    assert report == {"missing": [], "unexpected": []}
    audio2exp = _file_state(standins["safetensors"], "audio2exp.netG.")
    torch.testing.assert_close(lip.expnet.mapping1.weight, audio2exp["mapping1.weight"])
    # the PoseVAE stand-in: every released audio2pose. tensor, loaded strictly (Table 2 row 1, generate)
    pose = PoseVAE()
    assert load_sadtalker_audio2pose(pose, standins["safetensors"]) == "safetensors"
    audio2pose = _file_state(standins["safetensors"], "audio2pose.")
    assert len(audio2pose) == N_TENSORS
    torch.testing.assert_close(pose.netG.decoder.classbias, audio2pose["netG.decoder.classbias"])


@pytest.mark.slow
def test_released_size_layouts_load_strictly_and_render(tmp_path):
    """Every released layout at the released widths (random weights), and one 256 px frame."""
    paths = write_renderer_standins(tmp_path, RELEASED, seed=1)
    r = FaceRenderer(RELEASED, layouts=(70, 73))
    for layout in ("safetensors", "facevid2vid"):
        assert load_facerender_weights(r.kp_extractor, r.generator, paths[layout]) == layout
    load_mapping_weights(r.mappings["70"], paths["mapping"])
    load_mapping_weights(r.mappings["73"], paths["mapping_full"])
    bake_spectral_norm(r.generator)
    r.eval()
    with torch.inference_mode():
        state = r.prepare(torch.rand(1, 3, 256, 256), torch.zeros(1, 70), "crop")
        frame = r.render(state, torch.zeros(1, 70, 27))
    assert frame.shape == (1, 3, 256, 256) and torch.isfinite(frame).all()
