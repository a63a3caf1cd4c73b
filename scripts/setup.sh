#!/usr/bin/env bash
# Create the project environment from the project's own files: Debian tools, a venv, pinned packages.
# Idempotent: a stamp records the hash of the dependency files, so a second run does nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3

need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
# headless Chromium only where the browser tests run: `make test` (WITH_BROWSER=1) and CI (CI=true)
if [ "${WITH_BROWSER:-0}" = "1" ] || [ "${CI:-}" = "true" ]; then
  command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
fi
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "[setup] installing Debian packages: ${need_apt[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

stamp="$VENV/.emotalker-installed"
want=$(cat pyproject.toml requirements-nodeps.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first and exactly pinned: this machine serves the CPU wheel of 2.13.0 from local disk.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -e ".[dev,s3]"  # s3: the object-storage tests need s3fs
"$VENV/bin/python" -m pip install -q --no-deps -r requirements-nodeps.txt
"$VENV/bin/python" -m pip check || true
echo "$want" > "$stamp"
echo "[setup] environment ready in $VENV"
