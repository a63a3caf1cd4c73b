"""End-to-end inference wrapper on tiny models: any length T -> (T, 70) finite motion."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from emotalker.configs.constants import EXP_DIM, FACE_INDICES, LIP_INDICES, NON_LIP_EXP_INDICES
from emotalker_testkit.tiny_model import tiny_emotalker as make

torch.set_num_threads(1)


@pytest.mark.parametrize("t", [1, 7, 1003])
def test_generate_any_length(t: int) -> None:
    model = make()
    rng = np.random.default_rng(0)
    out = model.generate(
        reference=rng.standard_normal(70).astype(np.float32),
        emotion_audio_feats=rng.standard_normal((2 * t - 1, 12)).astype(np.float32),  # native HuBERT rate
        content=rng.integers(0, 5, 2 * t - 1),
        mel_windows=rng.standard_normal((t, 80, 16)).astype(np.float32),
    )
    assert out.shape == (t, 70) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # the face part is decoded from codes (de-normalised), the lip part comes from the lip branch
    assert not np.allclose(out[:, list(FACE_INDICES)], 0)
    assert not np.allclose(out[:, list(LIP_INDICES)], 0)


def inputs(t: int = 9) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {
        "reference": rng.standard_normal(70).astype(np.float32),
        "emotion_audio_feats": rng.standard_normal((2 * t - 1, 12)).astype(np.float32),
        "content": rng.integers(0, 5, 2 * t - 1),
        "mel_windows": rng.standard_normal((t, 80, 16)).astype(np.float32),
    }


def test_start_token_is_the_stage1_encoding_of_the_reference() -> None:
    model = make()
    seen: list[torch.Tensor] = []
    orig = model.transformer.generate

    def spy(*args: object, **kw: object) -> object:
        seen.append(kw["start"])  # type: ignore[arg-type]
        return orig(*args, **kw)  # type: ignore[arg-type]

    model.transformer.generate = spy  # type: ignore[method-assign]
    x = inputs()
    model.generate(**x)
    ref = torch.as_tensor(x["reference"])
    face_ref = ((ref[list(FACE_INDICES)] - model.face_mean) / model.face_std)[None]
    assert seen[0].shape == (1, 8)  # code_dim, not the 57 raw coefficients
    assert torch.allclose(seen[0], model.vqvae.encode_reference(face_ref))
    with torch.no_grad():  # a different stage-1 encoder gives a different start token
        model.vqvae.encoder.net[0].weight.add_(0.5)
    model.generate(**x)
    assert not torch.allclose(seen[0], seen[1])


def test_lip_mapping_takes_the_generated_face_coefficients_frame_by_frame() -> None:
    model = make()
    seen: list[torch.Tensor] = []
    model.lip.expnet.register_forward_hook(lambda _m, args, _o: seen.append(args[1].clone()))
    x = inputs(t=9)
    out = model.generate(**x)
    beta = torch.cat(seen).numpy()  # (T, 64) reference expression per frame
    assert beta.shape == (9, EXP_DIM)
    np.testing.assert_allclose(
        beta[:, list(NON_LIP_EXP_INDICES)], out[:, list(NON_LIP_EXP_INDICES)], atol=1e-5
    )
    assert np.ptp(beta[:, list(NON_LIP_EXP_INDICES)], axis=0).max() > 0  # varies by frame, not a repeat
    np.testing.assert_allclose(beta[:, list(LIP_INDICES)], np.tile(x["reference"][list(LIP_INDICES)], (9, 1)))


def test_bad_inputs() -> None:
    model = make()
    with pytest.raises(ValueError, match="emotion_audio_feats"):
        model.generate(np.zeros(70), np.zeros((8, 12)), np.zeros(8, dtype=np.int64), np.zeros((7, 80, 16)))
    with pytest.raises(ValueError, match="reference"):
        model.generate(np.zeros(57), np.zeros((16, 12)), np.zeros(16, dtype=np.int64), np.zeros((8, 80, 16)))
    with pytest.raises(ValueError, match="content"):
        model.generate(np.zeros(70), np.zeros((16, 12)), np.zeros(6, dtype=np.int64), np.zeros((8, 80, 16)))
    with pytest.raises(ValueError, match="mel_windows"):
        model.generate(np.zeros(70), np.zeros((16, 12)), np.zeros(16, dtype=np.int64), np.zeros((8, 80)))


def test_decoding_ten_times_the_training_context_keeps_a_bounded_window() -> None:
    """generation.max_context: 10x the training context (paper: 96 frames = 24 tokens) is decoded with
    every decoder step seeing at most ``max_context`` tokens and their aligned audio, never the whole past."""
    train_tokens = 24
    model = make(max_context=train_tokens)
    seen: list[tuple[int, int]] = []
    decode = model.transformer._decode

    def spy(inputs, audio, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append((inputs.shape[1], audio.shape[1]))
        return decode(inputs, audio, *args, **kwargs)

    model.transformer._decode = spy  # type: ignore[method-assign]
    t = 10 * train_tokens * 4
    rng = np.random.default_rng(1)
    args = (
        rng.standard_normal(70).astype(np.float32),
        rng.standard_normal((2 * t - 1, 12)).astype(np.float32),  # native HuBERT rate
        rng.integers(0, 5, 2 * t - 1),
        rng.standard_normal((t, 80, 16)).astype(np.float32),
    )
    out = model.generate(*args)
    assert out.shape == (t, 70) and np.isfinite(out).all()
    assert len(seen) == 10 * train_tokens
    per_token = round(len(args[1]) / (10 * train_tokens))  # audio frames per token
    assert max(n for n, _ in seen) == train_tokens
    assert max(a for _, a in seen) <= per_token * (train_tokens + 4)  # the window's audio, +-k at the edges
    # with a window longer than the sequence, decoding is the full-context decoding
    short = (args[1][:191], args[2][:191], args[3][:96])
    full, windowed = make(max_context=None), make(max_context=train_tokens)
    assert np.allclose(full.generate(args[0], *short), windowed.generate(args[0], *short), atol=1e-5)
    with pytest.raises(ValueError, match="max_context"):
        make(max_context=0)


def _inputs(t: int, seed: int = 2) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((2 * t - 1, 12)).astype(np.float32),  # native HuBERT rate
        rng.integers(0, 5, 2 * t - 1),
        rng.standard_normal((t, 80, 16)).astype(np.float32),
    )


def test_driving_frames_stand_in_for_the_reference_frame_by_frame() -> None:
    """Table 5's setting: (T, 70) driving frames; each frame conditions its own token and lip frame."""
    model, t = make(), 48
    audio, tokens, mel = _inputs(t)
    rng = np.random.default_rng(3)
    neutral = rng.standard_normal(70).astype(np.float32)
    # driving frames that all equal the neutral frame are the neutral setting
    same = model.generate(np.tile(neutral, (t, 1)), audio, tokens, mel)
    assert np.allclose(same, model.generate(neutral, audio, tokens, mel), atol=1e-5)
    driving = rng.standard_normal((t, 70)).astype(np.float32)
    out = model.generate(driving, audio, tokens, mel)
    assert not np.allclose(out, same, atol=1e-3)
    # changing the driving frames from frame 32 (token 8) on leaves the tokens before it as they were (the
    # frames of tokens 0-5 too; the stage-1 decoder's receptive field reaches a token or two across)
    later = driving.copy()
    later[32:] += 1.0
    out2 = model.generate(later, audio, tokens, mel)
    assert np.allclose(out[:24], out2[:24], atol=1e-5) and not np.allclose(out[32:], out2[32:], atol=1e-3)
    # a short driving clip is looped over the audio
    assert np.allclose(
        model.generate(driving[:10], audio, tokens, mel),
        model.generate(np.resize(driving[:10], (t, 70)), audio, tokens, mel),
        atol=1e-5,
    )
    with pytest.raises(ValueError, match="driving frames"):
        model.generate(np.zeros((t, 57), np.float32), audio, tokens, mel)


def test_generate_reports_each_decoded_token() -> None:
    """Issue 30 case 10: long audio decodes for minutes, so each token is reported as it is decoded (the
    generate command's progress bar); the callback changes nothing in the output."""
    model = make()
    seen: list[tuple[int, int]] = []
    x = inputs(37)
    with_bar = model.generate(**x, on_token=lambda done, total: seen.append((done, total)))
    n_tok = model.vqvae.n_tokens(37)
    assert seen == [(i, n_tok) for i in range(1, n_tok + 1)] and n_tok > 1
    np.testing.assert_array_equal(with_bar, model.generate(**x))
