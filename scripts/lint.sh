#!/usr/bin/env bash
# Lint and type checks (ruff, mypy; configured in pyproject.toml). Run by .ci/run before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check src tests benchmarks scripts
.venv/bin/mypy
