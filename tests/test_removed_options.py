"""Options that did nothing (issue 26, point 8) are gone: setting one stops at load with one line naming it.

``lip.mel_frames`` / ``lip.mel_bins`` / ``lip.audio_embed`` only validated (the Wav2Lip encoder fixes 80 x 16
mel windows and 512 features); ``data.fps`` / ``data.sample_rate`` reached ``prepare`` only, while the
alignment, mel windows, SyncNet and rendering are built for 25 fps / 16 kHz, so another value would have
misaligned the pipeline silently; ``vqvae.num_emotions`` must equal MEAD's 8 labels; the transformer's
emotion-label embedding was an input the paper says it does not use.
"""

from __future__ import annotations

import inspect

import pytest

from emotalker.configs.schema import ConfigError, load_config
from emotalker.models.transformer import CrossModalTransformer


@pytest.mark.parametrize(
    "override",
    ["data.fps=30", "data.sample_rate=22050", "vqvae.num_emotions=6", "lip.mel_frames=20",
     "lip.mel_bins=64", "lip.audio_embed=256"],
)  # fmt: skip
def test_removed_option_is_refused_with_one_line(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert key in str(err.value) and "\n" not in str(err.value)


def test_transformer_has_no_emotion_label_input() -> None:
    """Sec. 3.3: the emotion comes from the audio (and the reference), never from a label."""
    for fn in (CrossModalTransformer.__init__, CrossModalTransformer.forward, CrossModalTransformer.generate):
        params = inspect.signature(fn).parameters
        assert not [p for p in params if "emotion" in p], fn.__name__
