import numpy as np
import pytest
import torch

from emotalker.models.syncnet import SyncNet, load_syncnet
from emotalker.tasks.demo.standins.fake_eval_assets import write_fake_syncnet
from emotalker.tasks.evaluation.sync import (
    crop_face,
    crop_windows,
    face_track,
    offset_and_confidence,
    shifted_distances,
    sync_confidence,
)


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


def test_face_track_keeps_the_longest_run_of_overlapping_detections_and_fills_gaps():
    boxes = np.full((40, 4), np.nan)
    boxes[0:5] = [0, 0, 20, 20]  # a short track, then the face jumps (IoU 0): a new track starts
    boxes[5:30:3] = [100, 100, 150, 150]  # detections every 3rd frame: gaps inside the track
    boxes[8] = [110, 100, 160, 150]
    start, track = face_track(boxes)
    assert start == 5 and len(track) == 29 - 5 + 1
    assert track[1].tolist() == pytest.approx([100 + 10 / 3, 100, 150 + 10 / 3, 150])  # interpolated
    with pytest.raises(ValueError, match="no face detected"):
        face_track(np.full((4, 4), np.nan))


def test_sync_crop_follows_syncnet_pythons_window():
    frame = np.zeros((200, 200, 3), np.uint8)
    frame[:, :, 0] = np.arange(200)[None, :]  # red encodes the column, green the row
    frame[:, :, 1] = np.arange(200)[:, None]
    windows = crop_windows(np.tile([60.0, 40.0, 140.0, 120.0], (20, 1)))  # s 40, centre (100, 80)
    assert windows[10].tolist() == [40.0, 100.0, 80.0]
    crop = crop_face(frame, windows[10])
    assert crop.shape == (224, 224, 3)
    # a 2.8 s square: rows y - s .. y + 1.8 s = 40 .. 152, columns x - 1.4 s .. x + 1.4 s = 44 .. 156
    assert crop[0, 0, :2].tolist() == pytest.approx([44, 40], abs=1)
    assert crop[-1, -1, :2].tolist() == pytest.approx([155, 151], abs=1)
    corner = crop_face(frame, np.array([40.0, 20.0, 20.0]))  # off the top-left: grey padding
    assert corner[0, 0].tolist() == [110, 110, 110]
    # the median filter removes a one-frame jump of the box
    jumpy = np.tile([60.0, 40.0, 140.0, 120.0], (20, 1))
    jumpy[10] += 50
    assert crop_windows(jumpy)[10].tolist() == [40.0, 100.0, 80.0]


def test_sync_warns_when_the_offset_search_would_mostly_see_padding(syncnet_file, caplog):
    _, model = syncnet_file
    rng = np.random.default_rng(3)
    frames = rng.integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    wave = (rng.normal(size=16000 * 12 // 25) * 0.1).astype(np.float32)
    with caplog.at_level("WARNING", logger="emotalker.tasks.evaluation.sync"):
        sync_confidence(model, frames, wave)  # 7 lip windows against 31 offsets
    assert "Sync on 12 frames" in caplog.text and "at least 36 frames" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="emotalker.tasks.evaluation.sync"):
        sync_confidence(model, frames, wave, vshift=3)  # 7 windows cover the 7 offsets
    assert "Sync on" not in caplog.text


def test_track_shorter_than_the_median_kernel_is_refused_with_the_reason() -> None:
    box = [60.0, 40.0, 140.0, 120.0]
    assert crop_windows(np.tile(box, (7, 1))).min() > 0  # 7 frames: every filtered window holds the face
    with pytest.raises(ValueError, match="face track of 6 frames: SyncNet's 13-frame .* needs at least 7"):
        crop_windows(np.tile(box, (6, 1)))
