"""The built wheel works on its own: installed to a folder and run from outside the checkout (slow).

The editable install hides packaging mistakes (a subpackage missing from ``packages``, configs not shipped
as package data), because it reads the checkout; a wheel does not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = ("emotalker", "configs", "flows", "models", "storage", "tasks")  # pyproject's package-dir


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd[:4]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_runs_demo_data_from_outside_the_checkout(tmp_path: Path, prefect_server: None) -> None:
    from emotalker.tasks.demo.standins.demo_layout import relocated_demo_overrides
    from emotalker_testkit.reliability import subprocess_env

    dist, site, outside, root = (tmp_path / n for n in ("dist", "site", "outside", "root"))
    outside.mkdir()
    env = subprocess_env(tmp_path / "prefect-home")
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    src = tmp_path / "src"  # a copy: setuptools writes build/ and *.egg-info beside the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    skip = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in PACKAGE_DIRS:
        shutil.copytree(REPO / pkg, src / pkg, ignore=skip)
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(src)], tmp_path, env, 300)
    (wheel,) = dist.glob("emotalker*.whl")
    _run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], tmp_path, env, 300)
    for pkg in PACKAGE_DIRS:  # every module and shipped config of the checkout is in the wheel
        installed = site / "emotalker" if pkg == "emotalker" else site / "emotalker" / pkg
        wanted = {p.relative_to(REPO / pkg) for p in (REPO / pkg).rglob("*") if p.suffix in (".py", ".yaml")}
        missing = sorted(str(p) for p in wanted if not (installed / p).is_file())
        assert not missing, f"{pkg}/: not in the wheel: {missing}"

    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    probe = "import emotalker.flows.cli as m, emotalker.configs as c; print(m.__file__, c.__file__)"
    where = _run([sys.executable, "-c", probe], outside, env, 120)
    assert all(Path(p).is_relative_to(site) for p in where.split()), where  # not the checkout's copy

    overrides = [
        *relocated_demo_overrides(root),
        "synthetic.actors=[M003]",
        "synthetic.emotion_model_steps=0",
        "synthetic.audio2exp_steps=0",
        "synthetic.emotions=[neutral]",
        "synthetic.levels=[1]",
        "synthetic.image_size=64",
        "synthetic.workers=1",
    ]
    cmd = [sys.executable, "-m", "emotalker.flows.cli", "run", "demo-data", "--config", "demo"]
    _run([*cmd, *[f"--set={o}" for o in overrides]], outside, env, 600)
    assert sorted(p.name for p in (root / "mirror").glob("*.tar")) == ["M003.tar"]
    assert (root / "assets" / "hubert-content" / "config.json").is_file()
    assert not list(outside.iterdir())  # nothing written relative to the working directory
