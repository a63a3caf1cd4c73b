"""Stand-ins for face-alignment and an expression classifier on synthetic "faces" (bright squares), for
tests of the image metrics that must not need real networks."""

import numpy as np

ANGLES = np.linspace(0, 2 * np.pi, 68, endpoint=False)
RING = np.stack([np.cos(ANGLES), np.sin(ANGLES)], axis=1)  # unit distance from the centre


class SquareDetector:
    """Stand-in for face-alignment: the "face" is the bright square; its 68 landmarks sit on the circle
    inscribed in it, so a landmark set's mean-centred points are radius x RING."""

    def detect_boxes(self, frames):
        boxes = np.full((len(frames), 4), np.nan)
        for i, f in enumerate(frames):
            ys, xs = np.nonzero(f.mean(axis=-1) > 128)
            if len(xs):
                boxes[i] = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
        return boxes

    def landmarks_from_boxes(self, frames, boxes):
        centre = (boxes[:, :2] + boxes[:, 2:]) / 2
        radius = (boxes[:, 2] - boxes[:, 0]) / 2
        return (centre[:, None] + radius[:, None, None] * RING).astype(np.float32)

    def detect(self, frames, boxes=None):
        lms = self.landmarks_from_boxes(frames, self.detect_boxes(frames) if boxes is None else boxes)
        return lms, np.isfinite(lms).all(axis=(1, 2))


class BrightnessClassifier:
    """Stand-in expression classifier: "happy" on bright frames, "sad" on dark ones."""

    every = 5

    def __init__(self):
        self.seen = 0

    def frame_labels(self, frames):
        self.seen += len(frames)
        return ["happy" if f.mean() > 60 else "sad" for f in frames]


def square_frames(n, size_hw, centre, half, background=None):
    h, w = size_hw
    frames = np.zeros((n, h, w, 3), np.uint8)
    if background is not None:
        frames[:] = background[:, None, None, None]
    cx, cy = centre
    frames[:, int(cy - half) : int(cy + half), int(cx - half) : int(cx + half)] = 255
    return frames
