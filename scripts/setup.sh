#!/usr/bin/env bash
# Set up everything mffmoe needs on a fresh machine: a Python 3.11 virtualenv in .venv with the package and
# all extras (torch 2.14.1 + torchvision 0.29.1 pinned in pyproject.toml), and Debian's chromium for the
# browser test (and poppler-utils for the PDF report test). Idempotent: a second run only checks.
#
# A first run is mostly downloading torch and its CUDA libraries (time and size: README, Requirements).
# Each step prints one line; on a terminal pip shows what it fetches and its progress bars. Off a terminal
# (CI, logs) or with MFFMOE_SETUP_QUIET=1, pip is quiet and only the step lines remain.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
start=$SECONDS

did=0  # a second run only checks, and prints nothing
step() { did=1; printf '==> [%ds] %s\n' "$((SECONDS - start))" "$*" >&2; }

if [ -t 1 ] && [ "${MFFMOE_SETUP_QUIET:-0}" != 1 ] && [ -z "${CI:-}" ]; then
  pip_flags=(--progress-bar on)
else
  pip_flags=(--quiet --progress-bar off)
fi

if [ ! -x .venv/bin/python ]; then
  step "creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
fi
stamp=.venv/.mffmoe-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  step "upgrading pip"
  .venv/bin/python -m pip install --quiet --upgrade pip
  step "installing mffmoe with all extras: torch and its CUDA libraries are the big download (a few minutes)"
  .venv/bin/python -m pip install "${pip_flags[@]}" -e ".[all]"
  touch "$stamp"
  step "installed; .venv is $(du -sh .venv 2>/dev/null | cut -f1)"
fi
# Headless Chromium for the web page test (Debian's package; Playwright drives it, no browser download).
if ! command -v chromium >/dev/null 2>&1 && [ "${MFFMOE_SKIP_BROWSER:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing chromium (apt) for the browser test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    step "installing chromium (sudo apt) for the browser test"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "note: chromium not installed (not root, no sudo); the browser test will be skipped" >&2
  fi
fi
# poppler's pdftoppm: the report test turns the PDF reports' pages into pictures to check them.
if ! command -v pdftoppm >/dev/null 2>&1 && [ "${MFFMOE_SKIP_BROWSER:-0}" != 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    step "installing poppler-utils (apt) for the PDF report test"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
  elif command -v sudo >/dev/null 2>&1; then
    step "installing poppler-utils (sudo apt) for the PDF report test"
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq poppler-utils >/dev/null
  else
    echo "note: poppler-utils not installed (not root, no sudo); the PDF report test will be skipped" >&2
  fi
fi
if [ "$did" = 1 ]; then step "set-up done"; fi
