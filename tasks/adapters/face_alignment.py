"""face-alignment (pinned 1.5.0): build ``FaceAlignment`` with FAN weights from a local file.

``FaceAlignment`` has no argument for the landmark network's weights: its constructor fetches them by
URL through the private ``_load_native``. Overriding that one method is the only way to load a file
that is already on disk (offline clusters, a pinned copy). ``s3fd_detect_batch`` runs the S3FD network
held by its ``SFDDetector`` on a batch and post-processes each frame's own candidates.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
import torch

LOAD_NATIVE_PARAMS = ("self", "network_name", "network_size", "device", "dtype")


def check_internals() -> None:
    """Raise naming this module when face-alignment no longer builds its FAN through ``_load_native``."""
    import face_alignment

    fa = face_alignment.FaceAlignment
    load = getattr(fa, "_load_native", None)
    params = tuple(inspect.signature(load).parameters) if load is not None else ()
    if params != LOAD_NATIVE_PARAMS or "self._load_native(" not in inspect.getsource(fa.__init__):
        raise RuntimeError(
            f"face-alignment {face_alignment.__version__} no longer builds its FAN with "
            f"FaceAlignment._load_native{LOAD_NATIVE_PARAMS[1:]}; update {__name__} for this version"
        )


def local_face_alignment(fan_path: str | Path, **kwargs: Any) -> Any:
    """``FaceAlignment(LandmarksType.TWO_D, **kwargs)`` whose 2D FAN loads from ``fan_path``, not a URL."""
    import face_alignment
    from face_alignment import api as fa_api

    check_internals()
    fan_path = Path(fan_path)

    class _LocalFA(face_alignment.FaceAlignment):
        def _load_native(self, network_name: str, network_size: int, device: str, dtype: Any) -> Any:
            net = fa_api.FAN(network_size)
            net.load_state_dict(torch.load(fan_path, map_location=device, weights_only=True))
            return net.to(device, dtype=dtype).eval()

    return _LocalFA(face_alignment.LandmarksType.TWO_D, **kwargs)


S3FD_MEAN_BGR = (104.0, 117.0, 123.0)
S3FD_CANDIDATE_SCORE = 0.05  # face-alignment's get_predictions threshold
S3FD_NMS_IOU = 0.3  # SFDDetector._filter_bboxes
S3FD_VARIANCES = (0.1, 0.2)


def s3fd_detect_batch(detector: Any, frames: torch.Tensor) -> list[np.ndarray]:
    """Per frame of a (B, 3, H, W) RGB batch (any dtype, any device), S3FD's kept candidates (N, 5):
    x1, y1, x2, y2, score after NMS and ``filter_threshold``, as face-alignment's ``detect_from_image``
    returns them for that frame alone.

    face-alignment's ``detect_from_batch`` decodes, for every frame, the candidate positions of *all*
    frames of the batch in a Python loop and copies every score map to the host; here the thresholding
    runs on the detector's device and only each frame's own candidates come back (what NMS and the score
    filter would keep anyway: the other frames' positions score <= 0.05 in this one).
    """
    from face_alignment.detection.sfd.bbox import decode, nms

    device = detector.device
    net = detector.face_detector
    x = frames.to(device).to(torch.float32).flip(-3)  # RGB -> BGR
    x = x - torch.tensor(S3FD_MEAN_BGR, device=x.device).view(1, 3, 1, 1)
    dtype = next(net.parameters()).dtype  # float32 as face-alignment; lower with eval.detector_dtype
    with torch.inference_mode():
        olist = [o.to(torch.float32) for o in net(x.to(dtype))]
    per_frame: list[list[np.ndarray]] = [[] for _ in range(len(frames))]
    for level in range(len(olist) // 2):
        cls = torch.nn.functional.softmax(olist[2 * level], dim=1)[:, 1]  # (B, H, W) face score
        b, h, w = torch.nonzero(cls > S3FD_CANDIDATE_SCORE, as_tuple=True)
        if len(b) == 0:
            continue
        score = cls[b, h, w].cpu().numpy()
        loc = olist[2 * level + 1].permute(0, 2, 3, 1)[b, h, w].cpu().numpy()  # (N, 4)
        b, h, w = (t.cpu().numpy() for t in (b, h, w))
        stride = 2 ** (level + 2)
        priors = np.stack(
            [stride / 2 + w * stride, stride / 2 + h * stride, np.full(len(w), stride * 4.0)], axis=1
        )[:, [0, 1, 2, 2]].astype(np.float64)
        boxes = np.concatenate([decode(loc, priors, S3FD_VARIANCES), score[:, None]], axis=1)
        for i in np.unique(b):
            per_frame[i].append(boxes[b == i])
    out = []
    for cands in per_frame:
        arr = np.concatenate(cands) if cands else np.zeros((0, 5))
        if len(arr):
            arr = arr[nms(arr, S3FD_NMS_IOU)]
            arr = arr[arr[:, 4] > detector.filter_threshold]
        out.append(arr.reshape(-1, 5))
    return out
