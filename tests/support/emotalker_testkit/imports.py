"""Which libraries a piece of code imports, measured in a fresh interpreter.

A feature rerun with nothing to do must not pay for the model stack: each of these costs seconds of
start-up on every CLI call (torch alone ~1-3 s on 2 busy cores).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HEAVY_MODULES = (
    "torch",
    "transformers",
    "sklearn",
    "joblib",
    "dask",
    "distributed",
    "mlflow",
    "pandas",
    "av",
)

_REPORT = (
    "\nimport json as _json, sys as _sys\n"
    "_heavy = [m for m in {heavy!r} if m in _sys.modules]\n"
    "print(_json.dumps({{'result': result, 'heavy': _heavy}}, default=str))\n"
)


def run_fresh(
    code: str, args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[Any, list[str]]:
    """Run ``code`` (which sets ``result``, argv in ``sys.argv[1:]``) in a new interpreter; return
    ``result`` and the :data:`HEAVY_MODULES` that process imported."""
    program = code + _REPORT.format(heavy=HEAVY_MODULES)
    done = subprocess.run(
        [sys.executable, "-c", program, *args], capture_output=True, text=True, timeout=600, env=env, cwd=cwd
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    return report["result"], report["heavy"]
