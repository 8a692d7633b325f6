#!/usr/bin/env bash
# Rebuild the bundled checkpoint crossvit/assets/shapes_tiny.{safetensors,json} from scratch (CPU is fine).
# The exact command line is also stored in the checkpoint's JSON ("record" -> "command"), with the wall time and
# the held-out accuracy. Deterministic for a given machine and thread count: model, data and batches come from --seed.
# On a 2-core machine, run it with nothing else busy: a second CPU-bound process makes 2 torch threads many
# times slower (use --threads 1 then).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
time "$PY" -m crossvit.train --preset shapes_tiny --steps 800 --lr 1e-3 --warmup-steps 100 --eval-every 200 \
    --eval-images 2000 --seed 0 --threads 2 --out crossvit/assets --name shapes_tiny
