#!/usr/bin/env bash
# Set up (see setup.sh) and run the main job on generated sample media.
# Without official weights this runs with RANDOM weights (--untrained): the pipeline is real, the scores are
# meaningless, and every result says so. With the official files in ./models/MFF-MoE-V1 (or MFFMOE_WEIGHTS),
# it uses them instead.
set -euo pipefail
cd "$(dirname "$0")/.."
MFFMOE_SKIP_BROWSER=1 ./scripts/setup.sh
.venv/bin/mffmoe sample samples >/dev/null
weights=${MFFMOE_WEIGHTS:-models/MFF-MoE-V1}
if [ -e "$weights/MFF-MoE-v1.pth" ] || [ -e "$weights/weight.pth" ] || [[ "$weights" == *.safetensors ]]; then
  exec .venv/bin/mffmoe analyze samples --weights "$weights" --frames 8 "$@"
fi
echo "No official weights at $weights: running with random weights (--untrained), scores are meaningless." >&2
exec .venv/bin/mffmoe analyze samples --untrained --frames 8 "$@"
