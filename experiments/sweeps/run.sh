#!/usr/bin/env bash
# Train every variant of a validation sweep in parallel (one process each; made for a GPU
# machine with many cores), then, for the small1 sweep, compare them with ProtoNet on the same
# 1,000 validation episodes. Needs runs/omniglot_small1/protonet (train.init_from) for small1.
# Usage: bash experiments/sweeps/run.sh small1|challenge OUT_DIR   (env TRAIN_S, default 420)
set -uo pipefail
cd "$(dirname "$0")/../.."
sweep=${1:?usage: run.sh small1|challenge OUT_DIR}
out=${2:?usage: run.sh small1|challenge OUT_DIR}
py=${PYTHON:-python3}
start=$SECONDS
mkdir -p "$out/configs"
runs=()
for cfg in $("$py" experiments/sweeps/variants.py "$sweep" "$out/configs"); do
  name=$(basename "$cfg" .yaml)
  runs+=("$out/$name")
  OMP_NUM_THREADS=1 timeout "${TRAIN_S:-420}" "$py" -m relgraph.cli train --config "$cfg" \
    --out "$out/$name" > "$out/$name.log" 2>&1 &
done
wait
echo "training done after $((SECONDS - start)) s"
for run in "${runs[@]}"; do
  echo "== $(basename "$run"): step,val_acc,time_s"
  cut -d, -f1,4,7 "$run/metrics.csv" 2>/dev/null | tail -n +2 | tr '\n' ' '
  echo
done | tee "$out/curves.txt"
if [[ $sweep == small1 ]]; then
  done_runs=()
  for run in "${runs[@]}"; do [[ -f $run/checkpoint.pt ]] && done_runs+=("$run"); done
  "$py" experiments/paired_val.py runs/omniglot_small1/protonet "${done_runs[@]}" \
    --episodes 1000 --device "${DEVICE:-cuda}" | tee "$out/paired.txt"
fi
echo "all done after $((SECONDS - start)) s"
