"""The one fingerprint helper: its bytes are what every store, prepared clip and model was tagged with."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from emotalker.configs.fingerprint import digest, fingerprint
from emotalker.configs.schema import load_config
from emotalker.tasks.data.prepare import prepare_fingerprint
from emotalker.tasks.features.families.mel import MEL_FINGERPRINT


def test_digest_hashes_the_sorted_key_json_as_before() -> None:
    payload = {"b": [1, 2.5, None], "a": {"y": "x", "p": Path("/m")}}
    text = json.dumps(payload, sort_keys=True, default=str)
    assert digest(payload) == hashlib.sha256(text.encode()).hexdigest()[:16]
    assert fingerprint("v1", payload, 3) == digest(["v1", payload, 3])  # the parts as one JSON list
    plain = {"fps": 25, "video_path": None}
    assert digest(plain, strict=True) == digest(plain)
    with pytest.raises(TypeError):
        digest({"p": Path("/m")}, strict=True)  # the prepared clips' fingerprint never hashed a str()


def test_stored_fingerprints_keep_their_values() -> None:
    """Values computed before the helper was shared: a change here would recompute every store."""
    assert MEL_FINGERPRINT == "9cf3db97f94d6471"  # v2 (issue 26): zero-padded STFT; v1 ad15c49e9e61a670
    assert prepare_fingerprint({"video_path": None}, 30, 16000, 0) == "57dc16db3c92c2de"
    cfg = load_config("demo")
    text = json.dumps({"audio": cfg.audio.model_dump(mode="json")}, sort_keys=True, default=str)
    assert cfg.fingerprint("audio") == hashlib.sha256(text.encode()).hexdigest()[:16]


def test_motion_to_coeffs_inverts_coeffs_to_motion() -> None:
    from emotalker.models.motion import coeffs_to_motion, motion_to_coeffs

    motion = np.random.default_rng(0).standard_normal((5, 70)).astype(np.float32)
    coeffs = motion_to_coeffs(motion)
    assert coeffs.shape == (5, 257) and coeffs.dtype == np.float32
    np.testing.assert_array_equal(coeffs_to_motion(coeffs), motion)
