#!/usr/bin/env bash
# Rebuild the bundled checkpoint crossvit/assets/shapes_tiny.{safetensors,json} from scratch (CPU is fine).
# The exact command line is also stored in the checkpoint's JSON ("record" -> "command"), with the wall time and
# the held-out accuracy. Deterministic for a given machine and thread count: model, data and batches come from --seed.
# On a 2-core machine, run it with nothing else busy: a second CPU-bound process makes 2 torch threads many
# times slower (use --threads 1 then).
#
# Recipe (chosen with benchmarks/attention_recipes.py, see the README): cross-entropy of the model's logits, plus
# 0.5 x each branch head's own cross-entropy (both heads carry the decision), plus 0.05 x the mean entropy of the CLS
# tokens' attention rows (each CLS reads few tokens, so its attention shows what it reads); 3000 steps of 64 images.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
time "$PY" -m crossvit.train --preset shapes_tiny --steps 3000 --lr 1e-3 --warmup-steps 150 --eval-every 500 \
    --eval-images 2000 --head-loss-weight 0.5 --attention-entropy-weight 0.05 --seed 1 --threads 2 \
    --out crossvit/assets --name shapes_tiny --overwrite
