"""HuBERT loading (local dir, classifier checkpoint, HF cache id), framing, batching and video alignment.

All models are tiny random HuBERTs saved in the real Hugging Face formats by
emotalker.tasks.demo.standins.fake_hubert.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import HubertForSequenceClassification

from emotalker.tasks.demo.standins.fake_hubert import (
    convert_to_legacy_bin,
    write_er_from_base,
    write_tiny_hubert,
    write_tiny_hubert_to_hf_cache,
)
from emotalker.tasks.features.audio_io import AudioError
from emotalker.tasks.features.hubert import (
    HubertModelNotFound,
    _run_batch,
    extract_hubert,
    extract_hubert_chunked,
    extract_hubert_single,
    hubert_frames,
    load_hubert,
    make_batches,
    pass_sharing,
    per_clip_conv_default,
)

REPO_ID = "superb/hubert-base-superb-er"
LENGTHS = [16000, 8000, 16000, 12345, 400, 719, 720, 8000]


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hubert")
    return {
        "group": write_tiny_hubert(root / "group"),
        "layer": write_tiny_hubert(root / "layer", feat_extract_norm="layer"),
        "cls": write_tiny_hubert(root / "cls", classifier=True, seed=3),
    }


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [(rng.standard_normal(n) * 0.1).astype(np.float32) for n in LENGTHS]


def test_hubert_frames_formula() -> None:
    assert [hubert_frames(n) for n in (0, 399, 400, 719, 720, 16000, 32000)] == [0, 0, 1, 1, 2, 49, 99]


def test_load_local_dir_settings(models: dict[str, Path]) -> None:
    model, s = load_hubert(models["group"])
    assert not model.training
    assert s.num_layers == 10 and s.hidden_size == 32
    assert s.uses_attention_mask is False and s.do_normalize is False
    _, s2 = load_hubert(models["layer"])
    assert s2.uses_attention_mask is True and s2.do_normalize is True


def test_waveform_normalization_modes(tmp_path: Path) -> None:
    d = write_tiny_hubert(tmp_path / "m", do_normalize=True)  # group norm, but the config says normalise
    assert load_hubert(d)[1].do_normalize is False  # pretraining rule: base (group-norm) models do not
    assert load_hubert(d, normalization="preprocessor_config")[1].do_normalize is True
    (d / "preprocessor_config.json").unlink()
    assert load_hubert(d, normalization="preprocessor_config")[1].do_normalize is False  # rule as fallback
    large = write_tiny_hubert(tmp_path / "large", feat_extract_norm="layer", do_normalize=False)
    assert load_hubert(large)[1].do_normalize is True  # large models were pretrained on normalised audio
    assert load_hubert(large, normalization="preprocessor_config")[1].do_normalize is False
    with pytest.raises(ValueError, match="normalization must be one of"):
        load_hubert(d, normalization="always")


def test_classifier_checkpoint_loads_encoder_weights(
    models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    reports: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = reports.append  # type: ignore[method-assign]
    # transformers' loggers do not propagate to caplog
    transformers_logs = [logging.getLogger(f"transformers.{m}") for m in ("modeling_utils", "distributed")]
    for logger in transformers_logs:
        logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger="emotalker.tasks.features.hubert"):
            model, _ = load_hubert(models["cls"])
    finally:
        for logger in transformers_logs:
            logger.removeHandler(handler)
    # the unused head is named once by us, not as transformers' load-report warning on every worker
    assert [r.getMessage()[:40] for r in reports if r.levelno >= logging.WARNING] == []
    assert "['classifier', 'projector'] weights" in caplog.text
    ref = HubertForSequenceClassification.from_pretrained(models["cls"]).hubert.state_dict()
    got = model.state_dict()
    assert set(got) == set(ref)
    for k, v in ref.items():
        assert torch.equal(got[k], v), k


def test_legacy_bin_checkpoint_loads_same_weights(tmp_path: Path, waves: list[np.ndarray]) -> None:
    d = write_tiny_hubert(tmp_path / "legacy", classifier=True, seed=5)
    ref_model, _ = load_hubert(d)
    bin_path = convert_to_legacy_bin(d)
    assert bin_path.is_file() and not (d / "model.safetensors").exists()
    model, _ = load_hubert(d)
    a = extract_hubert(ref_model, waves[:1], [9])[0][9]
    b = extract_hubert(model, waves[:1], [9])[0][9]
    np.testing.assert_array_equal(a, b)


def test_load_by_id_from_hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "hub"
    snap = write_tiny_hubert_to_hf_cache(cache, REPO_ID)
    repo = cache / "models--superb--hubert-base-superb-er"
    assert (repo / "refs" / "main").read_text() == snap.name
    assert (snap / "config.json").is_file() and (snap / "model.safetensors").is_file()
    model, s = load_hubert(REPO_ID, cache_dir=cache)
    assert s.path == snap and s.name == REPO_ID
    # The default cache location is honoured too (what HF_HUB_CACHE sets at import time).
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    assert load_hubert(REPO_ID)[1].path == snap


@pytest.mark.slow
def test_load_by_id_with_env_offline(tmp_path: Path) -> None:
    cache = tmp_path / "hub"
    write_tiny_hubert_to_hf_cache(cache, REPO_ID)
    env = dict(os.environ, HF_HUB_CACHE=str(cache), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    code = (
        "from emotalker.tasks.features.hubert import load_hubert, extract_hubert\n"
        "import numpy as np\n"
        f"m, s = load_hubert({REPO_ID!r})\n"
        "f = extract_hubert(m, [np.zeros(16000, np.float32)], [9])[0][9]\n"
        "print('OK', s.path.parent.parent.name, f.shape)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "OK models--superb--hubert-base-superb-er (49, 32)" in res.stdout


def test_missing_model_error_names_id_and_fix(tmp_path: Path) -> None:
    with pytest.raises(HubertModelNotFound) as exc:
        load_hubert(REPO_ID, cache_dir=tmp_path / "empty-cache")
    msg = str(exc.value)
    assert REPO_ID in msg and f"huggingface-cli download {REPO_ID}" in msg and "audio.emotion_model" in msg
    assert isinstance(exc.value, FileNotFoundError)
    with pytest.raises(HubertModelNotFound, match="no-such-dir"):
        load_hubert(tmp_path / "no-such-dir")
    (tmp_path / "noweights").mkdir()
    (tmp_path / "noweights" / "config.json").write_text('{"model_type": "hubert"}')
    with pytest.raises(HubertModelNotFound, match="noweights"):
        load_hubert(tmp_path / "noweights")


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_batched_matches_per_clip(models: dict[str, Path], waves: list[np.ndarray], kind: str) -> None:
    model, s = load_hubert(models[kind])
    layers = [0, 9, -1]
    batched = extract_hubert(model, waves, layers, batch_seconds=3.0, normalize=s.do_normalize)
    single = extract_hubert_single(model, waves, layers, normalize=s.do_normalize)
    assert len(batched) == len(waves)
    for w, b, one in zip(waves, batched, single, strict=True):
        assert set(b) == {0, 9, -1}
        for k in layers:
            assert b[k].shape == (hubert_frames(w.size), 32) and b[k].dtype == np.float32
            np.testing.assert_allclose(b[k], one[k], atol=2e-5, rtol=1e-4)
    assert not np.allclose(batched[0][0], batched[0][9])  # different layers really differ


def test_padding_would_break_group_norm(models: dict[str, Path], waves: list[np.ndarray]) -> None:
    """Why group-norm models never share a padded waveform: zero padding changes every frame."""
    model, _ = load_hubert(models["group"])
    padded = _run_batch(model, [waves[0], waves[1]], [9], "cpu", use_mask=False)[1][9]
    alone = extract_hubert_single(model, [waves[1]], [9])[0][9]
    assert padded.shape == alone.shape
    assert np.abs(padded - alone).max() > 1e-2


def _count_forwards(module: torch.nn.Module) -> tuple[list[int], object]:
    calls: list[int] = []
    return calls, module.register_forward_hook(lambda *_a: calls.append(1))


@pytest.mark.parametrize("layers", [[0], [3], [9, -1]])
def test_group_norm_mixed_length_batches_are_exact_with_per_clip_conv(
    models: dict[str, Path], waves: list[np.ndarray], layers: list[int]
) -> None:
    """Conv encoder per clip, padded frames masked from the transformer on: any padding is exact."""
    model, _ = load_hubert(models["group"])
    forwards, hook = _count_forwards(model.encoder.layers[0])
    try:
        one_batch = extract_hubert(model, waves, layers, batch_seconds=60.0, max_padding=0.99)
        assert len(forwards) == 1  # every length in one batch
        forwards.clear()
        default = extract_hubert(model, waves, layers, batch_seconds=60.0)  # buckets of <= 10% padding
        assert len(forwards) == len(make_batches(LENGTHS, 60.0)) == 5
        forwards.clear()
        equal_only = extract_hubert(model, waves, layers, batch_seconds=60.0, mixed_lengths=False)
        assert len(forwards) == len(set(LENGTHS))
    finally:
        hook.remove()
    single = extract_hubert_single(model, waves, layers)
    for w, *got, one in zip(waves, one_batch, default, equal_only, single, strict=True):
        for k in layers:
            for g in got:
                assert g[k].shape == (hubert_frames(w.size), 32)
                np.testing.assert_allclose(g[k], one[k], atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_cpu_runs_the_conv_encoder_per_clip_in_a_batch(models: dict[str, Path], kind: str) -> None:
    """On the CPU an equal-length batch still goes through the conv encoder one clip at a time (faster
    there), and through the transformer once."""
    model, s = load_hubert(models[kind])
    rng = np.random.default_rng(5)
    same = [(0.1 * rng.standard_normal(9000)).astype(np.float32) for _ in range(3)]
    convs, conv_hook = _count_forwards(model.feature_extractor)
    layers_run, layer_hook = _count_forwards(model.encoder.layers[0])
    try:
        got = extract_hubert(model, same, [2, -1], normalize=s.do_normalize)
    finally:
        conv_hook.remove()
        layer_hook.remove()
    assert (len(convs), len(layers_run)) == (3, 1)
    single = extract_hubert_single(model, same, [2, -1], normalize=s.do_normalize)
    for g, one in zip(got, single, strict=True):
        for k in (2, -1):
            np.testing.assert_allclose(g[k], one[k], atol=2e-5, rtol=1e-4)
    assert per_clip_conv_default("cpu") and not per_clip_conv_default(torch.device("cuda", 0))


def test_last_layer_is_last_hidden_state(models: dict[str, Path], waves: list[np.ndarray]) -> None:
    model, _ = load_hubert(models["group"])
    feats = extract_hubert(model, waves[:1], [-1, 10])[0]
    with torch.inference_mode():
        ref = model(torch.from_numpy(waves[0])[None]).last_hidden_state[0].numpy()
    np.testing.assert_allclose(feats[-1], ref, atol=1e-6)
    np.testing.assert_array_equal(feats[10], feats[-1])


def test_make_batches_rules() -> None:
    lengths = [100, 300, 300, 200, 300]
    assert make_batches(lengths, 1000 / 16000, equal_length_only=True) == [[1, 2, 4], [3], [0]]
    assert make_batches(lengths, 1000 / 16000) == [[1, 2, 4], [3], [0]]  # 200 is 33% short of 300
    assert make_batches(lengths, 1000 / 16000, max_padding=0.7) == [[1, 2, 4], [3, 0]]
    # Budget counts padded samples; a clip longer than the budget still gets its own batch.
    assert make_batches([5000, 10], 1000 / 16000, equal_length_only=False) == [[0], [1]]
    # Padding: a clip joins only if at most max_padding shorter than the batch's longest.
    assert make_batches([100, 95, 89, 90], 1.0) == [[0, 1, 3], [2]]
    assert make_batches([100, 95, 89, 90], 1.0, max_padding=0.0) == [[0], [1], [3], [2]]
    assert make_batches([100, 95, 89, 90], 1.0, max_padding=0.5) == [[0, 1, 3, 2]]
    with pytest.raises(ValueError, match="batch_seconds"):
        make_batches(lengths, 0, equal_length_only=True)
    with pytest.raises(ValueError, match="max_padding"):
        make_batches(lengths, 1.0, max_padding=1.0)


def test_extract_errors(models: dict[str, Path]) -> None:
    model, _ = load_hubert(models["group"])
    with pytest.raises(AudioError, match="clip 1"):
        extract_hubert(model, [np.zeros(800, np.float32), np.zeros(100, np.float32)], [9])
    with pytest.raises(ValueError, match="layer 11 out of range"):
        extract_hubert(model, [np.zeros(800, np.float32)], [11])


def test_one_second_gives_49_frames(models: dict[str, Path]) -> None:
    model, _ = load_hubert(models["group"])
    f = extract_hubert(model, [np.random.default_rng(2).standard_normal(16000).astype(np.float32)], [9])[0][9]
    assert f.shape == (49, 32)


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_only_needed_layers_run_and_outputs_match_the_full_model(
    models: dict[str, Path], waves: list[np.ndarray], kind: str
) -> None:
    model, _ = load_hubert(models[kind])
    n = model.config.num_hidden_layers
    calls: list[int] = []
    hooks = [
        layer.register_forward_hook(lambda *_a, i=i: calls.append(i))
        for i, layer in enumerate(model.encoder.layers)
    ]
    try:
        for layers in ([0], [3], [-3], [2, n - 4], [-1]):
            calls.clear()
            got = extract_hubert(model, waves[:3], layers)
            ran = sorted(set(calls))
            deepest = max(k % (n + 1) for k in layers)
            extra = 1 if kind == "layer" and deepest < n else 0  # stable layer norm runs one more
            assert ran == list(range(min(n, max(1, deepest + extra)))), (layers, ran)
            calls.clear()
            ref = extract_hubert_single(model, waves[:3], layers)  # full forward pass
            assert sorted(set(calls)) == list(range(n))
            for g, r in zip(got, ref, strict=True):
                for k in layers:
                    np.testing.assert_allclose(g[k], r[k], rtol=1e-4, atol=1e-4)
    finally:
        for h in hooks:
            h.remove()
    assert len(model.encoder.layers) == n  # the shared model was not cut


def test_encoder_digest_identifies_shared_encoders(tmp_path: Path, models: dict[str, Path]) -> None:
    er = write_er_from_base(models["group"], tmp_path / "er")
    _, base_s = load_hubert(models["group"])
    _, er_s = load_hubert(er)
    assert er_s.encoder_digest == base_s.encoder_digest  # head differs, encoder identical
    _, other_s = load_hubert(models["cls"])  # another seed
    assert other_s.encoder_digest != base_s.encoder_digest
    normalised = write_tiny_hubert(tmp_path / "norm", do_normalize=True)  # same weights, other input
    assert load_hubert(normalised)[1].encoder_digest == base_s.encoder_digest  # pretraining rule: raw
    hf = load_hubert(normalised, normalization="preprocessor_config")[1]
    assert hf.do_normalize and hf.encoder_digest != base_s.encoder_digest


def test_shared_encoder_features_come_from_one_forward_pass(
    tmp_path: Path, models: dict[str, Path], waves: list[np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    import emotalker.tasks.features.hubert as hubert_mod
    from emotalker.storage.zarr_store import FeatureStore
    from emotalker.tasks.features.audio_io import write_wav
    from emotalker.tasks.features.families import REGISTRY
    from emotalker.tasks.features.workers import compute_chunk

    er = write_er_from_base(models["group"], tmp_path / "er")
    clips = []
    for i, w in enumerate(waves[:3]):
        path = tmp_path / f"c{i}.wav"
        write_wav(path, w, 16000, subtype="FLOAT")  # no 16-bit rounding: compare exactly
        clips.append(
            {"clip_id": f"c{i}", "prepared_audio": str(path), "n_frames": hubert_frames(w.size) // 2}
        )
    passes: list[list[int]] = []
    real = hubert_mod.extract_hubert

    def counting(model, waves, layers, **kw):  # type: ignore[no-untyped-def]
        passes.append(list(layers))
        return real(model, waves, layers, **kw)

    monkeypatch.setattr(hubert_mod, "extract_hubert", counting)
    audio_cfg = {
        "emotion_model": str(er),
        "emotion_layer": -1,
        "content_model": str(models["group"]),
        "content_layer": 3,
        "batch_seconds": 60.0,
        "waveform_normalization": "pretraining",
    }
    status = compute_chunk(clips, REGISTRY["hubert"], str(tmp_path / "store"), audio_cfg, "cpu", "fp")
    assert all(s["ok"] for s in status), status
    assert passes == [[-1, 3]]  # one pass serves both families

    model, _ = load_hubert(models["group"])
    ref = extract_hubert_single(model, waves[:3], [-1, 3])
    for family, k in (("hubert_emotion", -1), ("hubert_content", 3)):
        store = FeatureStore(str(tmp_path / "store"), family)
        for i, c in enumerate(clips):
            got = store.read_clip(c["clip_id"], ["feats"])["feats"]
            # stored at HuBERT's native rate (floor((N - 400) / 320) + 1 frames), not resampled to 25 fps
            assert len(got) == hubert_frames(len(waves[i])) and got.shape[0] > c["n_frames"]
            assert store.read_attrs(c["clip_id"])["frame_rate"] == 50
            np.testing.assert_allclose(got, ref[i][k], rtol=1e-4, atol=1e-4)

    passes.clear()
    audio_cfg["emotion_model"] = str(models["cls"])  # a different encoder: two passes
    again = compute_chunk(clips, REGISTRY["hubert"], str(tmp_path / "store2"), audio_cfg, "cpu", "fp")
    assert all(s["ok"] for s in again)
    assert sorted(passes) == [[-1], [3]]


def test_repeated_truncated_passes_on_a_fresh_model_stay_exact(
    models: dict[str, Path], waves: list[np.ndarray]
) -> None:
    # transformers records hidden states with hooks installed on first use: views of the encoder must not
    # stack a new set per call (which shifted every later hidden_states index)
    model, _ = load_hubert(models["group"])  # never run yet
    reference, _ = load_hubert(models["group"])
    ref = extract_hubert_single(reference, waves[:2], [4])
    hooks = None
    for _ in range(3):
        got = extract_hubert(model, waves[:2], [4])
        for g, r in zip(got, ref, strict=True):
            np.testing.assert_allclose(g[4], r[4], rtol=1e-5, atol=1e-5)
        n_hooks = len(model.encoder.layers[0]._forward_hooks)
        assert hooks is None or n_hooks == hooks
        hooks = n_hooks


def test_pass_sharing_says_why_a_pair_does_not_share(
    tmp_path: Path, models: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """`emotalker hubert-check`: run on the real checkpoints, it tells which HuBERT speed-up applies."""
    import json
    import shutil

    from emotalker.flows.cli import main

    base = models["group"]
    er = write_er_from_base(base, tmp_path / "er")  # like superb ER: base encoder + head, no normalisation
    normed = Path(shutil.copytree(base, tmp_path / "normed"))
    pre = normed / "preprocessor_config.json"
    pre.write_text(json.dumps({**json.loads(pre.read_text()), "do_normalize": True}))

    assert pass_sharing(load_hubert(er), load_hubert(base))["shared_pass"] is True
    assert pass_sharing(load_hubert(er), load_hubert(normed))["shared_pass"] is True  # pretraining rule
    hf = "preprocessor_config"
    report = pass_sharing(load_hubert(er, normalization=hf), load_hubert(normed, normalization=hf))
    assert report["shared_pass"] is False and "normalisation differs" in str(report["reason"])
    report = pass_sharing(load_hubert(models["cls"]), load_hubert(base))
    assert report["shared_pass"] is False and "different encoder weights" in str(report["reason"])

    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    args = ["hubert-check", "--config", str(demo), "--set", f"audio.emotion_model={er}"]
    assert main([*args, "--set", f"audio.content_model={normed}"]) == 0
    assert json.loads(capsys.readouterr().out)["shared_pass"] is True
    hf_mode = ["--set", "audio.waveform_normalization=preprocessor_config"]
    assert main([*args, "--set", f"audio.content_model={normed}", *hf_mode]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["shared_pass"] is False
    assert [c["do_normalize"] for c in printed["checkpoints"]] == [False, True]
    assert main([*args, "--set", f"audio.content_model={tmp_path / 'absent'}"]) == 2
    assert "absent" in capsys.readouterr().err


def test_hubert_fingerprint_follows_the_normalisation_mode() -> None:
    """Switching the waveform normalisation changes the features, so stored HuBERT features go stale."""
    from emotalker.configs.schema import load_config
    from emotalker.tasks.features.families.hubert import hubert_fingerprint

    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    pretraining = load_config(demo)
    hf = load_config(demo, ["audio.waveform_normalization=preprocessor_config"])
    assert pretraining.audio.waveform_normalization == "pretraining"
    assert hubert_fingerprint(pretraining) != hubert_fingerprint(hf)


# Chunked long audio: the conv encoder (and so hidden_states[0]) is exact; deeper layers miss attention
# beyond the context. On these random stand-ins attention is nearly uniform over the whole clip (the worst
# case: trained HuBERT attends mostly locally), and the stated tolerance is a relative L2 error of 2%.
CHUNK_TOLERANCE = 0.02


@pytest.mark.parametrize("kind", ["group", "layer"])
def test_chunked_long_audio_matches_one_pass_within_tolerance(models: dict[str, Path], kind: str) -> None:
    model, _ = load_hubert(models[kind])
    n = 16000 * 15 + 123  # not a whole number of hops
    wave = (np.random.default_rng(1).standard_normal(n) * 0.1).astype(np.float32)
    layers = [0, 5, -1]
    one = extract_hubert_single(model, [wave], layers)[0]
    chunked = extract_hubert_chunked(model, wave, layers, chunk_seconds=4, context_seconds=1)
    for k in layers:
        assert chunked[k].shape == one[k].shape == ((n - 400) // 320 + 1, 32)
        rel = np.linalg.norm(chunked[k] - one[k]) / np.linalg.norm(one[k])
        assert rel < (1e-5 if k == 0 else CHUNK_TOLERANCE), (k, rel)
    # without global group-norm statistics (each chunk normalised alone) the conv encoder would not be exact
    if kind == "group":
        alone = extract_hubert_single(model, [wave[: 320 * 300 + 80]], [0])[0][0]
        assert np.abs(alone - one[0][:300]).max() > 1e-3


def test_extract_hubert_chunks_only_clips_longer_than_the_chunk(models: dict[str, Path]) -> None:
    model, _ = load_hubert(models["group"])
    rng = np.random.default_rng(2)
    short, long = (rng.standard_normal(n).astype(np.float32) * 0.1 for n in (16000 * 3, 16000 * 12 + 7))
    out = extract_hubert(model, [short, long], [-1], chunk_seconds=2, context_seconds=1)
    assert np.allclose(out[0][-1], extract_hubert_single(model, [short], [-1])[0][-1], atol=1e-5)
    assert np.array_equal(
        out[1][-1], extract_hubert_chunked(model, long, [-1], chunk_seconds=2, context_seconds=1)[-1]
    )
    assert len(out[1][-1]) == hubert_frames(long.size)
    with pytest.raises(ValueError, match="chunk_seconds"):
        extract_hubert_chunked(model, long, [-1], chunk_seconds=0)


def test_hubert_fingerprint_follows_the_chunking() -> None:
    from emotalker.configs.schema import load_config
    from emotalker.tasks.features.families.hubert import hubert_fingerprint

    demo = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"
    base = hubert_fingerprint(load_config(demo))
    assert hubert_fingerprint(load_config(demo, ["audio.chunk_seconds=10"])) != base
    assert hubert_fingerprint(load_config(demo, ["audio.chunk_context_seconds=1"])) != base
