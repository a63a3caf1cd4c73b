"""EmoAcc with ESR-9, the classifier the paper names [32], run the way upstream's inference runs it.

Upstream (siqueira-hc/Efficient-Facial-Feature-Learning-with-Wide-Ensemble-based-Convolutional-Neural-
Networks) decides its labels with these quirks, all kept here because they decide the numbers:

1. Branches never in eval mode: ``ESR.__init__`` (``model/ml/esr_9.py``) keeps the 9 branches in a plain
   list (a dict after the Wrapyfi port), so its ``self.eval()`` only reaches ``self.base``; the branches'
   BatchNorm normalises with batch statistics, and ``controller/cvision.py`` feeds one face per forward
   (``_pre_process_input_image`` ends in ``unsqueeze(0)``). Here: each image's own statistics
   (``ESR9.branch_batch_stats``), so batching frames changes nothing; the base uses running statistics.
2. BGR input: ``uimage.read`` / ``CVVideo.get_frame`` return OpenCV's BGR frames and nothing converts them
   before the network. Pipeline frames are RGB, so they are flipped to BGR here.
3. ``uimage.resize(face, (96, 96))`` = ``cv2.resize`` (bilinear) on the uint8 crop, then PIL +
   ``ToTensor`` (/255) and ``Normalize(mean 0, std 1)`` (a no-op): no mean/std.
4. Label = ``_predict``'s plurality vote over the branches' ``fc`` argmax (``np.argmax(emotion_votes)``):
   ties go to the lowest AffectNet index.
5. AffectNet class order (``model/utils/udata.py``): Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger,
   Contempt, mapped one-to-one to MEAD's eight emotions (``AFFECTNET_TO_MEAD``).

Read at upstream commits 32bf0d8 (``model/ml/esr_9.py``, branches in a list), 14b121f (the Wrapyfi port:
``esr_9.py`` with a dict, ``uimage.py``, ``main_esr9.py``), cf530eb / 0c3997b (``controller/cvision.py``:
``_pre_process_input_image``, ``_predict``) and ``model/utils/udata.py``
(``AffectNetCategorical.get_class``, the same order in every stored version).

Upstream first finds the face (dlib CNN detector) and classifies the crop; here the caller's frames are
the face crops (``tasks/evaluation/rendered.py`` crops to the face box). Upstream's video mode keeps one
frame in ``int(30 / 5) = 6``; EmoAcc's one in ``every`` = 5 is the paper's ("per 5 frames").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from emotalker.configs.constants import EMOTIONS
from emotalker.models.esr9 import AFFECTNET_CLASSES, ESR9, INPUT_SIZE, load_esr9

AFFECTNET_TO_MEAD: dict[str, str] = {
    "Neutral": "neutral",
    "Happy": "happy",
    "Sad": "sad",
    "Surprise": "surprised",
    "Fear": "fear",
    "Disgust": "disgusted",
    "Anger": "angry",
    "Contempt": "contempt",
}
ESR9_LABEL_MAP: dict[int, str] = {i: AFFECTNET_TO_MEAD[name] for i, name in enumerate(AFFECTNET_CLASSES)}


def esr9_inputs(frames_rgb: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) RGB uint8 face crops -> (T, 3, 96, 96) float BGR in [0, 1], as upstream preprocesses:
    cv2.resize (bilinear) on uint8, then /255, no mean/std."""
    frames_rgb = np.asarray(frames_rgb)
    if frames_rgb.ndim != 4 or frames_rgb.shape[-1] != 3 or frames_rgb.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8 RGB, got {frames_rgb.shape} {frames_rgb.dtype}")
    resized = [
        cv2.resize(np.ascontiguousarray(f[..., ::-1]), (INPUT_SIZE, INPUT_SIZE)) for f in frames_rgb
    ]  # BGR, as cv2.imread gives upstream
    batch = torch.from_numpy(np.stack(resized)).permute(0, 3, 1, 2).float()
    return batch / 255.0


def majority_vote(branch_labels: np.ndarray, num_classes: int = len(AFFECTNET_CLASSES)) -> np.ndarray:
    """(T, branches) class indices -> (T,) the most voted class per row; a tie goes to the lowest index
    (``np.argmax`` of the vote counts, as upstream)."""
    branch_labels = np.asarray(branch_labels, dtype=np.int64)
    votes = np.zeros((branch_labels.shape[0], num_classes), dtype=np.int64)
    np.add.at(votes, (np.arange(branch_labels.shape[0])[:, None], branch_labels), 1)
    return votes.argmax(axis=1)


@dataclass
class ESR9EmotionClassifier:
    """Same interface as ``VideoEmotionClassifier``: MEAD labels of the frames EmoAcc samples (one in
    ``every``, the paper's "per 5 frames")."""

    model: ESR9
    device: str = "cpu"
    every: int = 5
    batch_size: int = 32
    label_map: dict[int, str] = field(default_factory=lambda: dict(ESR9_LABEL_MAP))

    @property
    def missing(self) -> list[str]:
        """MEAD emotions ESR-9 cannot predict: none (AffectNet's 8 classes include contempt)."""
        return [e for e in EMOTIONS if e not in self.label_map.values()]

    def branch_logits(self, frames: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) RGB uint8 -> (T, 9, 8) each branch's ``fc`` output (AffectNet order)."""
        frames = np.asarray(frames)
        if len(frames) == 0:
            raise ValueError("no frames to classify")
        self.model.eval()  # the base as upstream (running statistics); the branches' mode is per image
        out = []
        with torch.inference_mode():
            for start in range(0, len(frames), self.batch_size):
                x = esr9_inputs(frames[start : start + self.batch_size]).to(self.device)
                out.append(self.model(x)[0].float().cpu())
        return torch.cat(out)

    def affectnet_labels(self, frames: np.ndarray) -> np.ndarray:
        """(T, H, W, 3) RGB uint8 -> (T,) the ensemble's AffectNet class index per frame."""
        logits = self.branch_logits(frames).numpy()
        return majority_vote(logits.argmax(axis=2))

    def frame_labels(self, frames: np.ndarray) -> list[str]:
        """(T, H, W, 3) RGB uint8 face crops -> the MEAD emotion of each frame (ensemble vote)."""
        return [self.label_map[int(i)] for i in self.affectnet_labels(frames)]


def load_esr9_classifier(folder: str | Path, device: str = "cpu", every: int = 5) -> ESR9EmotionClassifier:
    """ESR-9 from the folder of its 10 released state dicts, ready for EmoAcc."""
    return ESR9EmotionClassifier(load_esr9(folder, device), device=device, every=every)
