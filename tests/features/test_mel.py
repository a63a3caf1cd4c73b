"""Wav2Lip/SadTalker mel spectrogram and per-video-frame windows.

Golden numbers were produced once with librosa 0.10.2 (``filters.mel``; the golden column is far from the
edges, where the STFT padding does not reach); librosa is not a dependency. ``upstream_melspectrogram``
re-derives SadTalker's ``src/utils/audio.py`` (+ ``hparams.py``) step by step on top of librosa 0.9.2's
``stft`` (``center=True``, ``pad_mode='constant'``: zero padding since 0.9.0, read in the 0.9.2 wheel) and
``filters.mel`` (Slaney scale and area norm), with scipy for ``lfilter`` and ``get_window``.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import signal

from emotalker.tasks.features.mel import (
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    mel_window_starts,
    mel_windows,
    melspectrogram,
    stft_magnitude,
)


def test_filterbank_shape_triangles_and_peaks() -> None:
    fb = mel_filterbank()
    assert fb.shape == (80, 401)
    assert np.all(fb >= 0)
    peaks = fb.argmax(axis=1)
    assert np.all(np.diff(peaks) >= 0) and peaks[-1] > peaks[0]
    centres = mel_to_hz(np.linspace(hz_to_mel(55.0), hz_to_mel(7600.0), 82))[1:-1]
    assert np.all(np.diff(centres) > 0)
    for row in fb:
        nz = np.nonzero(row)[0]
        assert nz.size >= 1 and np.all(np.diff(nz) == 1)  # one contiguous support
        vals = row[nz]
        top = int(np.argmax(vals))
        assert np.all(np.diff(vals[: top + 1]) >= 0) and np.all(np.diff(vals[top:]) <= 0)
    # Nothing below 55 Hz (bin 2 = 40 Hz) or above 7600 Hz (bin 380).
    assert np.all(fb[:, :3] == 0) and np.all(fb[:, 381:] == 0)


def test_filterbank_matches_librosa_golden() -> None:
    fb = mel_filterbank()
    np.testing.assert_array_equal(np.nonzero(fb[0])[0], [3, 4, 5, 6])
    np.testing.assert_allclose(fb[0, 3:7], [0.003869592, 0.01934796, 0.02081245, 0.0053340821], rtol=1e-5)
    np.testing.assert_array_equal(np.nonzero(fb[40])[0], np.arange(84, 90))
    np.testing.assert_allclose(
        fb[40, 84:90],
        [0.0043831076, 0.0093631335, 0.014343159, 0.012076846, 0.0072780512, 0.0024792573],
        rtol=1e-5,
    )
    np.testing.assert_array_equal(np.nonzero(fb[79])[0], np.arange(353, 380))


def test_slaney_scale_round_trip_and_break_point() -> None:
    hz = np.array([0.0, 55.0, 500.0, 1000.0, 4000.0, 7600.0])
    np.testing.assert_allclose(mel_to_hz(hz_to_mel(hz)), hz, rtol=1e-10, atol=1e-9)
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(200.0)) == pytest.approx(3.0)


def test_pure_tone_lands_in_right_bin() -> None:
    sr = 16000
    t = np.arange(sr) / sr
    fb = mel_filterbank()
    for f0 in (300.0, 1000.0, 3000.0):
        mel = melspectrogram(0.5 * np.sin(2 * np.pi * f0 * t))
        assert mel.shape == (80, 81)
        loudest = int(np.argmax(mel[:, 40]))
        fft_bin = int(round(f0 / (sr / 800)))
        # The filter that weights the tone's FFT bin most (or its neighbour sharing that bin) wins.
        assert abs(loudest - int(np.argmax(fb[:, fft_bin]))) <= 1
        assert fb[loudest, fft_bin] > 0


def test_melspectrogram_matches_librosa_golden() -> None:
    t = np.arange(4000) / 16000
    x = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 3000 * t)
    mel = melspectrogram(x)
    assert mel.shape == (80, 21) and mel.dtype == np.float32
    col = mel[:, 10]
    expected = {9: 1.65464, 10: 1.98976, 11: 0.490574, 54: 0.19514, 55: 1.65475, 56: -0.820585}
    for b, v in expected.items():
        assert col[b] == pytest.approx(v, abs=1e-4)
    others = np.setdiff1d(np.arange(80), list(expected))
    assert np.all(col[others] == -4.0)


def test_output_range_and_frame_count() -> None:
    rng = np.random.default_rng(0)
    for n in (1, 50, 400, 1001, 16000):
        x = rng.standard_normal(n) * 3.0  # loud enough to hit the +4 clip
        mel = melspectrogram(x)
        assert mel.shape == (80, 1 + n // 200)
        assert mel.min() >= -4.0 and mel.max() <= 4.0
    loud = melspectrogram(rng.standard_normal(16000) * 50)
    assert loud.max() == 4.0
    assert np.all(melspectrogram(np.zeros(1000)) == -4.0)


def test_stft_centering() -> None:
    # An impulse at sample 1000 is centred in frame 5 (1000 / hop 200): that frame has the most energy.
    x = np.zeros(4000)
    x[1000] = 1.0
    energy = stft_magnitude(x).sum(axis=0)
    assert int(np.argmax(energy)) == 5


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        melspectrogram(np.zeros(0))
    with pytest.raises(ValueError, match="NaN"):
        melspectrogram(np.array([0.0, np.nan, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        mel_windows(np.zeros(80), 3)


def test_window_starts_by_hand() -> None:
    # int(80 * (i - 2) / 25): i=0 -> int(-6.4) = -6, i=1 -> int(-3.2) = -3, i=2 -> 0, i=3 -> 3, i=7 -> 16
    np.testing.assert_array_equal(mel_window_starts(8), [-6, -3, 0, 3, 6, 9, 12, 16])
    assert mel_window_starts(26)[-1] == 73  # i=25: int(80 * 23 / 25) = int(73.6)
    assert mel_window_starts(0).shape == (0,)


def test_windows_clamp_and_repeat_edges() -> None:
    n_mel = 40
    mel = np.tile(np.arange(n_mel, dtype=np.float32), (80, 1))  # value == mel frame index
    wins = mel_windows(mel, 12)
    assert wins.shape == (12, 80, 16)
    np.testing.assert_array_equal(wins[0, 0], [0] * 7 + list(range(1, 10)))  # start -6
    np.testing.assert_array_equal(wins[2, 0], np.arange(16))  # start 0
    np.testing.assert_array_equal(wins[3, 5], np.arange(3, 19))
    # i=11: start int(80*9/25) = 28 -> 28..43, clamped at 39
    np.testing.assert_array_equal(wins[11, 0], list(range(28, 40)) + [39] * 4)
    assert np.all(wins[:, 7] == wins[:, 0])  # every bin windowed the same way


def test_windows_on_very_short_audio() -> None:
    mel = melspectrogram(np.random.default_rng(1).standard_normal(500) * 0.1)  # 3 mel frames
    wins = mel_windows(mel, 2)
    assert wins.shape == (2, 80, 16)
    np.testing.assert_array_equal(wins[1, :, -1], mel[:, -1])
    assert mel_windows(mel, 0).shape == (0, 80, 16)


def _slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    return np.where(m >= 15.0, 1000.0 * np.exp(np.log(6.4) / 27.0 * (m - 15.0)), (200.0 / 3) * m)


def upstream_melspectrogram(wav: np.ndarray, pad_mode: str = "constant") -> np.ndarray:
    """SadTalker ``audio.melspectrogram`` with librosa 0.9.2 semantics, written out loop by loop."""
    sr, n_fft, hop, n_mels, fmin, fmax = 16000, 800, 200, 80, 55.0, 7600.0
    y = signal.lfilter([1, -0.97], [1], wav)  # preemphasis(wav, 0.97, True)
    y = np.pad(y, (n_fft // 2, n_fft // 2), mode=pad_mode)  # stft(center=True, pad_mode=...)
    window = signal.get_window("hann", n_fft, fftbins=True)
    n_frames = 1 + (len(y) - n_fft) // hop
    spec = np.stack([np.fft.rfft(window * y[i * hop : i * hop + n_fft]) for i in range(n_frames)], axis=1)
    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)  # filters.mel(sr, n_fft, n_mels, fmin, fmax), float32
    mel_f = _slaney_mel_to_hz(np.linspace(_slaney_hz_to_mel(fmin), _slaney_hz_to_mel(fmax), n_mels + 2))
    fdiff, ramps = np.diff(mel_f), np.subtract.outer(mel_f, fftfreqs)
    basis = np.zeros((n_mels, 1 + n_fft // 2), dtype=np.float32)
    for i in range(n_mels):
        basis[i] = np.maximum(0, np.minimum(-ramps[i] / fdiff[i], ramps[i + 2] / fdiff[i + 1]))
    basis *= (2.0 / (mel_f[2 : n_mels + 2] - mel_f[:n_mels]))[:, None]
    mel = np.dot(basis, np.abs(spec))
    s_db = 20 * np.log10(np.maximum(np.exp(-100 / 20 * np.log(10)), mel)) - 20  # _amp_to_db - ref_level_db
    return np.clip(8 * ((s_db + 100) / 100) - 4, -4, 4)  # _normalize: symmetric, max_abs_value 4


def test_melspectrogram_is_sadtalkers_zero_padded_stft() -> None:
    """Every column, the edges included, equals upstream's: the STFT pads with zeros (librosa 0.9.2)."""
    rng = np.random.default_rng(3)
    t = np.arange(9600) / 16000  # 0.6 s = 15 video frames, cut to a multiple of 640 as upstream does
    wav = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    ours = melspectrogram(wav)
    ref = upstream_melspectrogram(wav)
    assert ours.shape == ref.shape == (80, 49)
    np.testing.assert_allclose(ours, ref, atol=2e-5)
    reflect = upstream_melspectrogram(wav, pad_mode="reflect")  # the padding this test tells apart
    assert np.abs(reflect[:, :2] - ref[:, :2]).max() > 0.1
    np.testing.assert_allclose(reflect[:, 3:-3], ref[:, 3:-3], atol=2e-5)  # the middle does not depend on it


def test_mel_family_fingerprint_changed_with_the_padding() -> None:
    """Stores written with the reflect-padded windows (``mel-v1``) must recompute."""
    from emotalker.configs.constants import MEL_FMAX, MEL_FMIN, MEL_HOP, MEL_N_FFT
    from emotalker.configs.fingerprint import fingerprint
    from emotalker.tasks.features.families.mel import MEL_FINGERPRINT

    assert MEL_FINGERPRINT != fingerprint("mel-v1", MEL_N_FFT, MEL_HOP, MEL_FMIN, MEL_FMAX)
