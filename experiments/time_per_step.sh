#!/usr/bin/env bash
# Seconds per training step of configs, measured alone: each config trains twice, 40 and 120
# steps (one validation at the end of each); the difference over 80 steps is the time per step
# without start-up and validation. Run it with nothing else on the machine.
# Usage: bash experiments/time_per_step.sh CONFIG.yaml [CONFIG.yaml ...]   (env THREADS, default 2; PYTHON)
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for config in "$@"; do
  name=$(basename "$config" .yaml)
  declare -A t=()
  for n in 40 120; do
    sed -E "s/\bsteps: [0-9]+/steps: $n/; s/\bval_every: [0-9]+/val_every: $n/" "$config" \
      > "$tmp/$name.yaml"
    if ! OMP_NUM_THREADS=${THREADS:-2} "${PYTHON:-python3}" -m relgraph.cli train --config "$tmp/$name.yaml" --out "$tmp/$name-$n" \
      > "$tmp/$name-$n.log" 2>&1; then
      echo "time_per_step.sh: training $config for $n steps failed:" >&2
      tail -5 "$tmp/$name-$n.log" >&2
      exit 1
    fi
    t[$n]=$(tail -1 "$tmp/$name-$n/metrics.csv" | cut -d, -f7)
  done
  "${PYTHON:-python3}" -c "import sys; a, b = map(float, sys.argv[2:]); print(f'{sys.argv[1]}: 40 steps {a:.1f} s, 120 steps {b:.1f} s, {(b - a) / 80:.3f} s/step')" \
    "$name" "${t[40]}" "${t[120]}"
done
