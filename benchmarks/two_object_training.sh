#!/usr/bin/env bash
# Does the bundled model need two-object scenes in training? Trains the bundled recipe (benchmarks/train_bundled.sh)
# with a quarter of the training set replaced by two-object scenes (crossvit.scenes, soft target 0.5 on each of the
# scene's two classes: --two-object-fraction 0.25), then measures it exactly as the bundled model is measured
# (benchmarks/explanations.py, same held-out seeds) and writes figures/two_object_training.md: the candidate's
# tables. Compare them with figures/explanation_faithfulness.md (the bundled model). About 15 min on 2 cores, with
# nothing else busy; the candidate checkpoint stays in a temporary folder (the bundled one is never touched).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$PY" -m crossvit.train --preset shapes_tiny --steps 3000 --lr 1e-3 --warmup-steps 150 --eval-every 500 \
    --eval-images 2000 --head-loss-weight 0.5 --attention-entropy-weight 0.05 --two-object-fraction 0.25 \
    --seed 1 --threads 2 --out "$work" --name candidate --quiet
(cd benchmarks && "../$PY" explanations.py --checkpoint "$work/candidate.safetensors" --out "$work")
{
    echo "# The bundled recipe with two-object scenes in training (a candidate, not the bundled model)"
    echo
    echo "Written by \`benchmarks/two_object_training.sh\`: the bundled model's training command plus"
    echo "\`--two-object-fraction 0.25\` (5000 of the 20000 training images are two-object scenes, soft target 0.5 on"
    echo "each of their two classes), measured by \`benchmarks/explanations.py\` on the same held-out seeds as"
    echo "\`figures/explanation_faithfulness.md\`."
    echo
    cat "$work/explanation_faithfulness.md"
} > figures/two_object_training.md
echo "wrote figures/two_object_training.md"
