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
    """Per-frame expression labels; EmoAcc samples one frame in ``every`` (the paper's "per 5 frames")."""

    model: Any
    processor: Any
    label_map: dict[int, str]  # classifier index -> MEAD emotion
    device: str = "cpu"
    every: int = 5  # EmoAcc compares one frame in every 5
    batch_size: int = 16

    @property
    def missing(self) -> list[str]:
        """MEAD emotions this classifier cannot predict."""
        return [e for e in EMOTIONS if e not in self.label_map.values()]

    def frame_labels(self, frames: np.ndarray) -> list[str]:
        """(T, H, W, 3) RGB uint8 -> the MEAD emotion of each frame (highest probability after mapping)."""
        frames = np.asarray(frames)
        if len(frames) == 0:
            raise ValueError("no frames to classify")
        index = torch.zeros(len(EMOTIONS), max(self.label_map) + 1)
        for idx, emotion in self.label_map.items():
            index[EMOTIONS.index(emotion), idx] = 1.0  # sums the classifier labels naming one emotion
        labels: list[str] = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                batch = list(frames[start : start + self.batch_size])
                inputs = self.processor(images=batch, return_tensors="pt").to(self.device)
                probs = torch.softmax(self.model(**inputs).logits.float(), dim=-1).cpu()
                scores = probs[:, : index.shape[1]] @ index.T
                labels.extend(EMOTIONS[i] for i in scores.argmax(dim=1).tolist())
        return labels


def emotion_accuracy(rendered_labels: list[str], real_labels: list[str]) -> float:
    """The paper's EmoAcc for one clip: the fraction of sampled frames (one per ``every``) where the
    classifier names the same emotion on the rendered video as on the real one (its ground truth)."""
    n = min(len(rendered_labels), len(real_labels))
    if n == 0:
        return float("nan")
    return float(np.mean([a == b for a, b in zip(rendered_labels[:n], real_labels[:n], strict=True)]))


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
