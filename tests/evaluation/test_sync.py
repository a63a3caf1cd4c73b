import numpy as np
import pytest
import torch

from emotalker.models.syncnet import SyncNet, load_syncnet
from emotalker.tasks.data.standins.fake_eval_assets import write_fake_syncnet
from emotalker.tasks.evaluation.sync import offset_and_confidence, shifted_distances, sync_confidence


@pytest.fixture(scope="module")
def syncnet_file(tmp_path_factory):
    """A random SyncNet saved as the released syncnet_v2.model is: a plain state dict."""
    path = write_fake_syncnet(tmp_path_factory.mktemp("syncnet") / "syncnet_v2.model")
    model = SyncNet()
    model.load_state_dict(torch.load(path, weights_only=True))  # the reference, loaded by hand
    return path, model.eval()


def test_released_format_loads_and_embeds_like_the_saved_model(syncnet_file):
    path, ref = syncnet_file
    model = load_syncnet(path)
    x = torch.rand(2, 3, 5, 224, 224) * 255
    a = torch.randn(2, 1, 13, 20)
    with torch.inference_mode():
        assert torch.allclose(model.embed_lips(x), ref.embed_lips(x))
        assert model.embed_audio(a).shape == (2, 1024)


def test_bad_syncnet_files_fail_with_where_to_get_the_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="syncnet_v2.model"):
        load_syncnet(tmp_path / "missing.model")
    wrong = tmp_path / "wrong.model"
    torch.save({"netcnnaud.0.weight": torch.zeros(3)}, wrong)
    with pytest.raises(ValueError, match="does not match the SyncNet architecture"):
        load_syncnet(wrong)
    text = tmp_path / "text.model"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a SyncNet state dict"):
        load_syncnet(text)


def test_shifted_distances_match_a_loop_and_find_a_known_offset():
    g = torch.Generator().manual_seed(1)
    lip = torch.randn(40, 8, generator=g)
    k = 3
    audio = torch.zeros_like(lip)
    audio[k:] = lip[:-k]  # audio[t] = lip[t - k]: the audio lags the video by k frames
    audio[:k] = torch.randn(k, 8, generator=g)
    d = shifted_distances(lip, audio, vshift=5)
    padded = torch.cat([torch.zeros(5, 8), audio, torch.zeros(5, 8)])
    for i in (0, 17, 39):
        for s in (0, 5, 10):
            want = torch.linalg.vector_norm(lip[i] - padded[i + s] + 1e-6)
            assert d[i, s] == pytest.approx(float(want), rel=1e-5)
    res = offset_and_confidence(d, vshift=5)
    assert res["offset"] == -k  # syncnet_python's sign: offset = vshift - argmin
    assert res["confidence"] > 1.0 and res["min_dist"] < float(d.mean(0).median())


def test_sync_confidence_runs_on_a_short_clip_and_rejects_too_short_ones(syncnet_file):
    _, model = syncnet_file
    rng = np.random.default_rng(2)
    frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    wave = (rng.normal(size=16000 * 12 // 25) * 0.1).astype(np.float32)
    res = sync_confidence(model, frames, wave, vshift=3)
    assert res["frames"] == 12 - 5
    assert -3 <= res["offset"] <= 3 and res["confidence"] >= 0.0 and np.isfinite(res["min_dist"])
    with pytest.raises(ValueError, match="too short for SyncNet"):
        sync_confidence(model, frames[:5], wave)
    with pytest.raises(ValueError, match="16 kHz"):
        sync_confidence(model, frames, wave, sr=22050)
