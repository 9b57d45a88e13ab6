#!/usr/bin/env bash
# Every Vinyals model (experiments/configs/omniglot_<method>_<k>shot.yaml) and both Omniglot
# challenge configs trained at once on one GPU to their full budgets, then evaluated as
# experiments/omniglot.py and experiments/omniglot_challenge.py do; everything ends within the
# deadline (default 570 s). Details and options: experiments/gpu/reproduce.py --help.
#
# On a lent GPU machine (the device tool runs this in the repository root; ../shared is not
# there, so the data travel in an ignored folder of the checkout, ~8 MB):
#   here, once (.gpudata/ is in .gitignore):
#                mkdir -p .gpudata/omniglot && cp -r ../shared/data/omniglot/{full,images_background_small1.zip} .gpudata/omniglot/
#   run:         command "bash experiments/gpu/reproduce.sh --data .gpudata --scale 2 --gate
#                --deadline 555", carry [".gpudata"], timeout_s 600. Outputs land in $OUT
#                (reproduce.md, results.tar.gz, runs.tar.gz.1..5, machine.txt): at most 8 files,
#                each under 16 MB, as the tool returns them. Write nothing else into $OUT.
#                --models picks fewer jobs (e.g. the maml ones alone: their steps are slow).
#   next call, as planned on 2026-12-06: the challenge alone, the one part of issue 19 that
#                a budget statement cannot close (its Vinyals cells each meet their paper or
#                state their budget): three seeds of each ResNet-12 variant at up to 3x their
#                budgets, then per condition one evaluation of the ensemble of its three runs if
#                it validates above each run alone (else of the best run), and only if it
#                validates above the committed row (--gate):
#                "bash experiments/gpu/reproduce.sh --data .gpudata --scale 3 --gate
#                --deadline 540 --eval-reserve 120 --choose-tta 1,5,9 --challenge
#                full_r12,minimal_r12 --seeds 3 --models ''", carry [".gpudata"], timeout_s 600.
#                Merge: tar xzf results.tar.gz; python experiments/omniglot_challenge.py --merge
#                results/omniglot_challenge.json --why "...".
#                Then, with device time left, where a ResNet-12 step's time goes (its steps ran
#                51-77 ms, several times what the arithmetic needs on an H200): "python3
#                experiments/bench_pipeline.py --configs omniglot_challenge_full_r12 --device
#                cuda --data .gpudata --steps 20 --val-episodes 20 --no-startup --out
#                /tmp/pipeline_r12.md; python3 -m relgraph.cli bench --method protonet --backbone
#                resnet12 --ways 56 --shots 1 --queries 3 --image-size 84 --device cuda --amp
#                float16 --steps 20"; and the Vinyals models furthest from their rows
#                ("--models relation:1,relation:5,gnn:1 --challenge '' --scale 4 --gate
#                --choose-tta 1,5,9"), then the maml models alone. --choose-tta also chooses each
#                Vinyals model's test-time augmentation on its validation characters
#                (experiments/omniglot.py --choose-tta; 1,000 episodes per choice, maml none).
# The CUDA MPS daemon is started where CUDA is (3.7-8.1x faster steps than time-sharing with 17
# jobs, experiments/results/gpu/reproduce.md); --no-mps turns it off.
# Without --data the script looks at $RELGRAPH_DATA, shared/data, then ../shared/data, and stops
# with one line naming the missing files.
#
# Anywhere, a check of the script itself (4 steps per model on the CPU):
#   bash experiments/gpu/reproduce.sh --smoke --out /tmp/repro
set -euo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
exec "${PYTHON:-python3}" experiments/gpu/reproduce.py "$@"
