#!/usr/bin/env bash
# Speed and peak memory of the graph methods on large episodes, and how their cost grows with
# the number of nodes. Writes experiments/results/bench_relational.md (atomically).
# Usage (project root): bash experiments/bench_relational.sh [relgraph-command [note]]
# (the note, e.g. what else ran on the machine, is written under the command)
set -euo pipefail
cd "$(dirname "$0")/.."
RELGRAPH=${1:-relgraph}
NOTE=${2:-}
out=experiments/results/bench_relational.md
tmp=$(mktemp "$out.XXXX")
trap 'rm -f "$tmp"' EXIT
{
  echo "# Graph methods on large episodes: speed, peak memory, growth with n"
  echo
  echo "Machine: $(nproc) cores, $(python3 -c 'import platform; print(platform.machine())'), run on $(date -u +%Y-%m-%d)."
  echo "Command: \`bash experiments/bench_relational.sh${1:+ $1}\` (the thread count is in each block)."
  if [ -n "$NOTE" ]; then echo; echo "Note (the second argument): $NOTE"; fi
  echo
  echo "Conv4 on 28x28 random images, seeded; medians of timed steps; peak memory = peak RSS"
  echo "growth of a fresh process (CPU). The backbone and the relational head are timed apart"
  echo "(each block's footnote says what each column covers); b+r/full = their sum over the"
  echo "full step, timed too."
  echo
  echo "The papers' own graph networks, timed like for like against these heads on precomputed"
  echo "features: [bench_reference_heads.md](bench_reference_heads.md)."
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
