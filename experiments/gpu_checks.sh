#!/usr/bin/env bash
# The checks that need a GPU, in one short script (run on a CUDA machine from the project root):
#   1. tests/methods/test_cuda.py: every method, the kernels, training and evaluation on CUDA against
#      the CPU (skipped on machines without CUDA, so CI never runs them);
#   2. relgraph bench on CUDA: the graph methods on 20-way 5-shot 15-query episodes (n = 400)
#      and the growth of their cost with n.
# Training the Vinyals cells on a GPU is experiments/gpu/reproduce.sh (all models at once, within
# 10 minutes); this script keeps to the checks (about 3 minutes).
# Usage: bash experiments/gpu_checks.sh OUT_DIR
# Environment: PYTHON (default python3).
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: gpu_checks.sh OUT_DIR}
mkdir -p "$out"
py=${PYTHON:-python3}
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

