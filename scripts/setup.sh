#!/usr/bin/env bash
# Set up everything mffmoe needs on a fresh machine: a Python 3.11 virtualenv in .venv with the package and
# all extras (torch 2.14.1 + torchvision 0.29.1 pinned in pyproject.toml), and Debian's chromium for the
# browser test. Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.mffmoe-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[all]"
  touch "$stamp"
fi
# Headless Chromium for the web page test (Debian's package; Playwright drives it, no browser download).
if ! command -v chromium >/dev/null 2>&1 && [ "${MFFMOE_SKIP_BROWSER:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not installed (not root, no sudo); the browser test will be skipped" >&2
  fi
fi
