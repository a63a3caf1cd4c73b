"""face-alignment (pinned 1.5.0): build ``FaceAlignment`` with FAN weights from a local file.

``FaceAlignment`` has no argument for the landmark network's weights: its constructor fetches them by
URL through the private ``_load_native``. Overriding that one method is the only way to load a file
that is already on disk (offline clusters, a pinned copy).
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

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
