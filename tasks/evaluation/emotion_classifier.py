"""Image emotion accuracy (the paper's EmoAcc) with a facial-expression classifier the user supplies.

Any Hugging Face image-classification model saved with ``save_pretrained`` (weights as safetensors, an
image processor config, ``id2label`` names) works: its labels are mapped to MEAD's eight emotions by
name (``anger`` -> ``angry``, ``surprise`` -> ``surprised``, ...); MEAD emotions it lacks (often
``contempt`` for FER-7 models) can never be predicted, which the result reports.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotalker.configs.constants import EMOTIONS

LABEL_ALIASES: dict[str, str] = {
    "anger": "angry",
    "angry": "angry",
    "contempt": "contempt",
    "disgust": "disgusted",
    "disgusted": "disgusted",
    "fear": "fear",
    "fearful": "fear",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "neutral": "neutral",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprised",
    "surprised": "surprised",
}
CLASSIFIER_HELP = (
    "set eval.emotion_classifier_checkpoint to a save_pretrained directory of a Hugging Face "
    "image-classification model for facial expressions (config.json with id2label, safetensors weights, "
    "preprocessor_config.json)"
)


def mead_label(name: str) -> str | None:
    """MEAD emotion for a classifier label name, or None when it has no MEAD counterpart."""
    return LABEL_ALIASES.get(name.strip().lower().replace("_", " ").split()[0]) if name.strip() else None


@dataclass
class VideoEmotionClassifier:
    """Per-frame expression probabilities averaged over a video's (sub-sampled) frames."""

    model: Any
    processor: Any
    label_map: dict[int, str]  # classifier index -> MEAD emotion
    device: str = "cpu"
    every: int = 5  # classify every n-th frame
    batch_size: int = 16

    @property
    def missing(self) -> list[str]:
        """MEAD emotions this classifier cannot predict."""
        return [e for e in EMOTIONS if e not in self.label_map.values()]

    def predict(self, frames: np.ndarray) -> str:
        """(T, H, W, 3) RGB uint8 -> the MEAD emotion with the highest mean probability."""
        picked = np.asarray(frames)[:: self.every]
        if len(picked) == 0:
            raise ValueError("no frames to classify")
        probs = []
        with torch.inference_mode():
            for start in range(0, len(picked), self.batch_size):
                batch = list(picked[start : start + self.batch_size])
                inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
                probs.append(torch.softmax(self.model(**inputs).logits.float(), dim=-1).cpu())
        mean = torch.cat(probs).mean(dim=0)
        scores = {e: 0.0 for e in EMOTIONS}
        for idx, emotion in self.label_map.items():
            scores[emotion] += float(mean[idx])
        return max(EMOTIONS, key=lambda e: scores[e])


def load_emotion_classifier(path: str | Path, device: str = "cpu") -> VideoEmotionClassifier:
    """Load a local ``save_pretrained`` classifier (safetensors only) and map its labels to MEAD."""
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    path = Path(path).expanduser()
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"no image-classification model at {path}: {CLASSIFIER_HELP}")
    if not (path / "preprocessor_config.json").is_file():
        raise FileNotFoundError(f"{path} has no preprocessor_config.json: {CLASSIFIER_HELP}")
    model = AutoModelForImageClassification.from_pretrained(path, use_safetensors=True)
    processor = AutoImageProcessor.from_pretrained(path)
    label_map = {
        int(i): e for i, name in model.config.id2label.items() if (e := mead_label(str(name))) is not None
    }
    if not label_map:
        raise ValueError(
            f"none of {path}'s labels {sorted(model.config.id2label.values())} names a MEAD emotion "
            f"({', '.join(EMOTIONS)})"
        )
    return VideoEmotionClassifier(model.to(device).eval(), processor, label_map, device=device)
