"""Headless Chromium for report tests: a screenshot and the rendered DOM of a local HTML file."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]


def chromium() -> str:
    """The Chromium binary, or skip (``scripts/setup.sh`` installs Debian's ``chromium`` for make test)."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    pytest.skip("chromium is not installed (make test / CI=true scripts/setup.sh installs it)")


def render(page: Path, tmp: Path, size: str = "1200,2400") -> tuple[Path, str]:
    """Screenshot ``page`` and dump its DOM, each in a fresh throw-away profile under ``tmp``."""
    exe = chromium()
    shot = tmp / "screenshot.png"
    url = page.resolve().as_uri()
    for i, extra in enumerate(([f"--screenshot={shot}", f"--window-size={size}"], ["--dump-dom"])):
        done = subprocess.run(
            [exe, *FLAGS, f"--user-data-dir={tmp / f'profile-{i}'}", *extra, url],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    return shot, done.stdout
