#!/usr/bin/env bash
# Lint, types and import structure (configured in pyproject.toml). Run by .ci/run before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy
.venv/bin/lint-imports --no-cache            # layering: the library never imports the CLI, ...
.venv/bin/python scripts/check_imports.py    # no import cycle anywhere, imports inside functions included
