#!/usr/bin/env bash
# Speed and peak memory of the graph methods on large episodes, and how their cost grows with
# the number of nodes. Writes experiments/results/bench_relational.md (atomically).
# Usage (project root): bash experiments/bench_relational.sh [relgraph-command]
set -euo pipefail
cd "$(dirname "$0")/.."
RELGRAPH=${1:-relgraph}
out=experiments/results/bench_relational.md
tmp=$(mktemp "$out.XXXX")
trap 'rm -f "$tmp"' EXIT
{
  echo "# Graph methods on large episodes: speed, peak memory, growth with n"
  echo
  echo "Machine: $(nproc) cores, $(python3 -c 'import platform; print(platform.machine())'), run on $(date -u +%Y-%m-%d)."
  echo "Conv4 on 28x28 random images, seeded; medians of timed steps; peak memory = peak RSS"
  echo "growth of a fresh process (CPU). 'relational' = full step minus the backbone alone on"
  echo "the same images (an estimate, stated as such by the command)."
  echo
  echo "Anchors (issue, same kind of machine): reference edge-labeling GNN code, GNN part alone,"
  echo "n = 400: ~5.4 s per training step at 4.1 GB peak; reference GNN (Garcia & Bruna): ~6.2 s, 4.1 GB."
  for m in protonet gnn edge_gnn edge_gnn_transductive; do
    echo
    echo "## $m, 20-way 5-shot 15-query (n = 400), one episode per step"
    echo
    echo '```'
    echo "\$ relgraph bench --method $m --ways 20 --shots 5 --queries 15 --batch 1 --steps 3"
    "$RELGRAPH" bench --method "$m" --ways 20 --shots 5 --queries 15 --batch 1 --steps 3
    echo '```'
  done
  for m in gnn edge_gnn; do
    echo
    echo "## $m: growth with n (1-shot, 15 queries, 5 to 30 ways)"
    echo
    echo '```'
    echo "\$ relgraph bench --method $m --sweep --sweep-ways 5,10,20,30 --shots 1 --queries 15 --steps 3 --no-memory"
    "$RELGRAPH" bench --method "$m" --sweep --sweep-ways 5,10,20,30 --shots 1 --queries 15 --steps 3 --no-memory
    echo '```'
  done
} > "$tmp"
mv "$tmp" "$out"
trap - EXIT
echo "wrote $out"
