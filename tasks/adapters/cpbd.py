"""cpbd (pinned 1.0.7): the CPBD sharpness function the authors' ``eval.py`` calls.

The package's ``cpbd/compute.py`` imports ``scipy.ndimage.imread`` at module level for its command line;
SciPy removed ``imread`` in 1.2, so the import fails on any SciPy the rest of the stack runs on. A
placeholder attribute (never called by ``compute``) lets the module import unchanged.
"""

from __future__ import annotations

import sys
from types import ModuleType


def check_internals() -> None:
    """Raise naming this module when ``cpbd.compute`` no longer offers ``compute(image)``."""
    module = cpbd_module()
    if not callable(getattr(module, "compute", None)):
        raise RuntimeError(f"cpbd no longer defines cpbd.compute.compute; update {__name__} for this version")


def cpbd_module() -> ModuleType:
    """``cpbd.compute``, importable on today's SciPy."""
    import scipy.ndimage

    if "cpbd.compute" not in sys.modules and not hasattr(scipy.ndimage, "imread"):
        scipy.ndimage.imread = None  # type: ignore[attr-defined]  # only the package's CLI would call it
    import cpbd  # noqa: F401

    return sys.modules["cpbd.compute"]
