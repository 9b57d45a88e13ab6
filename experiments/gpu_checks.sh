#!/usr/bin/env bash
# The checks that need a GPU, in one short script (run on a CUDA machine from the project root):
#   1. tests/methods/test_cuda.py: every method, the kernels, training and evaluation on CUDA against
#      the CPU (skipped on machines without CUDA, so CI never runs them);
#   2. relgraph bench on CUDA: the graph methods on 20-way 5-shot 15-query episodes (n = 400)
#      and the growth of their cost with n;
#   3. optionally, cells of the Vinyals table (experiments/omniglot.py), given as arguments,
#      each started only while more than CELL_MIN seconds of DEADLINE are left.
# Usage: bash experiments/gpu_checks.sh OUT_DIR [cell ...]   e.g. ... /tmp/gpu maml:1 maml:5
# Environment: DEADLINE (seconds from the start, default 540), CELL_MIN (default 150),
# PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_checks.sh OUT_DIR [cell ...]}
shift
mkdir -p "$out"
py=${PYTHON:-python3}
deadline=${DEADLINE:-540}
cell_min=${CELL_MIN:-150}
start=$SECONDS

{
  nvidia-smi -L
  "$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
} 2>&1 | tee "$out/machine.txt"

timeout 150 "$py" -m pytest -q -p no:cacheprovider tests/methods/test_cuda.py 2>&1 | tee "$out/test_cuda.log" | tail -3

{
  for m in protonet gnn edge_gnn edge_gnn_transductive; do
    echo "\$ relgraph bench --method $m --ways 20 --shots 5 --queries 15 --batch 1 --device cuda"
    timeout 30 "$py" -m relgraph.cli bench --method "$m" --ways 20 --shots 5 --queries 15 --batch 1 \
      --device cuda --steps 10
  done
  echo "\$ relgraph bench --method edge_gnn --ways 20 --shots 5 --queries 15 --batch 8 --device cuda"
  timeout 30 "$py" -m relgraph.cli bench --method edge_gnn --ways 20 --shots 5 --queries 15 \
    --batch 8 --device cuda --steps 10
  for m in gnn edge_gnn; do
    echo "\$ relgraph bench --method $m --sweep --sweep-ways 5,10,20,30,50 --shots 1 --queries 15 --device cuda --no-memory"
    timeout 30 "$py" -m relgraph.cli bench --method "$m" --sweep --sweep-ways 5,10,20,30,50 --shots 1 \
      --queries 15 --device cuda --steps 10 --no-memory
  done
} > "$out/bench_cuda.txt" 2>&1
echo "bench done after $((SECONDS - start)) s"

for cell in "$@"; do
  left=$((deadline - (SECONDS - start)))
  if ((left < cell_min)); then
    echo "skipping $cell: $left s left" | tee -a "$out/cells.log"
    continue
  fi
  echo "== $cell ($left s left)" | tee -a "$out/cells.log"
  timeout "$left" "$py" experiments/omniglot.py "$cell" >> "$out/cells.log" 2>&1
  echo "rc=$? after $((SECONDS - start)) s" | tee -a "$out/cells.log"
  cp experiments/results/omniglot.json "$out/omniglot.json"
done
