"""
Reproducing a table from the command line
=========================================

Every number in relgraph's results files comes from a committed command: a YAML config trained
with ``relgraph train``, scored with ``relgraph evaluate`` on fixed, seeded episodes, and an
experiment script in ``experiments/`` that runs both and writes the table
(:doc:`/omniglot`). This tutorial walks through that workflow on the embedded ``glyphs`` data,
so it runs anywhere in about a minute: a config, a training run interrupted and resumed, an
evaluation with a confidence interval, and a run on two processes with ``torchrun``.

Each step runs the ``relgraph`` command in a subprocess, as you would in a shell
(``sys.executable -m relgraph.cli`` is the same program as the ``relgraph`` script that
``pip install`` puts on your path).
"""

# %%
# A config
# --------
# An experiment is one YAML file: method, backbone, data, training and evaluation protocol
# (:class:`relgraph.engine.Config`; every value is checked, and a wrong key or type is an error
# naming it). The small1 Omniglot configs (``experiments/configs/omniglot_small1_*.yaml``) have
# this shape with ``dataset: omniglot``, the zip of the minimal background set as ``roots``,
# ``rotations: true`` and small affine warps; each picks its own episodes and steps (the ProtoNet
# one trains on 40-way episodes for 3,000 steps). Here: the
# glyphs training alphabets, validated on the glyphs validation alphabets, 60 steps.
import csv
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch

import relgraph.cli

workdir = tempfile.TemporaryDirectory(prefix="relgraph-t08-")
here = Path(workdir.name)  # the commands run in this folder
# the commands import the same relgraph as this script, wherever it was installed
python_path = os.pathsep.join([str(Path(relgraph.cli.__file__).parents[1]),
                               os.environ.get("PYTHONPATH", "")])
environment = {**os.environ, "PYTHONPATH": python_path}
(here / "protonet_glyphs.yaml").write_text("""\
method: protonet
method_args: {distance: euclidean}
backbone: conv4
data: {dataset: glyphs, split: train, val_split: val, image_size: 28}
train: {ways: 20, shots: 1, queries: 5, steps: 60, lr: 0.001, val_every: 20,
        val_episodes: 50, seed: 0, device: cpu}
eval: {ways: 5, shots: 1, queries: 15, episodes: 200}
""")


def run(*args, torchrun=(), threads=None):
    """Run ``relgraph ARGS`` (under ``torchrun TORCHRUN`` if given) in ``here``, print it and
    its output."""
    launcher = ("-m", "torch.distributed.run", *torchrun) if torchrun else ()
    print("$", *(("torchrun", *torchrun, "-m relgraph.cli") if torchrun else ("relgraph",)),
          *args)
    env = environment if threads is None else {**environment, "OMP_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, *launcher, "-m", "relgraph.cli", *args], cwd=here,
                          env=env, capture_output=True, text=True)
    print(done.stderr + done.stdout)
    return done


run("data", "--dataset", "glyphs", "--split", "train")

# %%
# Train, and train again after an interruption
# --------------------------------------------
# ``relgraph train`` writes a run folder: ``checkpoint.pt`` (the best model on validation),
# ``last.pt`` (everything needed to resume: weights, optimiser, scheduler, random states,
# step), ``metrics.csv``, ``curves.png`` and the ``config.yaml`` as run. First a reference run
# that nobody disturbs:
run("train", "--config", "protonet_glyphs.yaml", "--out", "runs/reference", "--no-progress")

# %%
# Now the same command, stopped from outside by SIGTERM (what a cluster scheduler or
# ``kill`` sends) a moment after its first validation. The run finishes its current step,
# saves ``last.pt`` and exits with status 128 + 15. Ctrl-C does the same, and even after
# ``kill -9`` the run resumes from its last validation.
command = [sys.executable, "-m", "relgraph.cli", "train", "--config", "protonet_glyphs.yaml",
           "--out", "runs/interrupted", "--no-progress"]
print("$ relgraph train --config protonet_glyphs.yaml --out runs/interrupted --no-progress &")
job = subprocess.Popen(command, cwd=here, env=environment, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
while not (here / "runs/interrupted/metrics.csv").exists() and job.poll() is None:
    time.sleep(0.1)
time.sleep(3.0)
job.send_signal(signal.SIGTERM)
print("$ kill -TERM", job.pid)
print(job.communicate()[0] + f"exit status {job.returncode}")
stopped_at = torch.load(here / "runs/interrupted/last.pt", weights_only=False)["step"]

# %%
# Resuming is running the same command again: it finds ``last.pt`` and continues
# (``--no-resume`` starts over).
run("train", "--config", "protonet_glyphs.yaml", "--out", "runs/interrupted", "--no-progress")

# %%
# Episode ``e`` of a sampler is a pure function of its seed and ``e``, and ``last.pt`` holds
# every random state, so the resumed run is the uninterrupted one, weight for weight:
reference = torch.load(here / "runs/reference/last.pt", weights_only=False)["model"]
resumed = torch.load(here / "runs/interrupted/last.pt", weights_only=False)["model"]
print("identical weights:", all(torch.equal(reference[k], resumed[k]) for k in reference))


def metrics(folder):
    with open(here / "runs" / folder / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


fig, axes = plt.subplots(1, 2, figsize=(9, 3))
for ax, column in zip(axes, ("train_loss", "val_acc"), strict=True):
    for folder, style in (("reference", "-"), ("interrupted", "o")):
        rows = metrics(folder)
        ax.plot([r["step"] for r in rows], [r[column] for r in rows], style,
                label=f"{folder} run" + (" (resumed)" if folder == "interrupted" else ""))
    ax.axvline(stopped_at, color="tab:red", ls="--", label=f"SIGTERM at step {stopped_at}")
    ax.set_xlabel("step")
    ax.set_ylabel(column)
axes[1].legend()
fig.suptitle("metrics.csv of both runs: the resumed run continues the same curve")
fig.tight_layout()
plt.show()

# %%
# Evaluate
# --------
# ``relgraph evaluate`` rebuilds the model from the checkpoint alone (method, backbone and
# preprocessing are stored in it) and scores it on fixed, seeded episodes of classes it never
# saw: here the glyphs test alphabets (the default split of a dataset that has one), 5-way
# 1-shot, 200 episodes. ``--json`` keeps the result with its protocol.
run("evaluate", "--checkpoint", "runs/interrupted", "--dataset", "glyphs", "--ways", "5",
    "--shots", "1", "--queries", "15", "--episodes", "200", "--json", "result.json",
    "--no-progress")
result = json.loads((here / "result.json").read_text())
print({k: result[k] for k in ("accuracy", "ci95", "episodes", "mode", "query_counts",
                              "split", "classes")})

# %%
# Several processes: ``torchrun``
# -------------------------------
# Under ``torchrun`` the same command trains with DistributedDataParallel (gloo on CPU, NCCL on
# GPUs): rank ``r`` draws distinct episodes from the one seed, gradients are averaged, and only
# rank 0 writes the run folder. Each step then uses ``world_size x episodes_per_batch``
# episodes. Two CPU processes, 10 steps (``--set`` overrides any config value):
#
# .. code-block:: console
#
#    $ torchrun --standalone --nproc_per_node=2 -m relgraph.cli train \
#        --config protonet_glyphs.yaml --out runs/ddp --set train.steps=10 ...
run("train", "--config", "protonet_glyphs.yaml", "--out", "runs/ddp", "--no-progress",
    "--set", "train.steps=10", "--set", "train.val_every=10",
    torchrun=("--standalone", "--nproc_per_node=2"), threads=1)  # one thread per process
print((here / "runs/ddp/metrics.csv").read_text())

# %%
# The real table
# --------------
# On Omniglot the same steps are wrapped in one script per protocol. From the project root,
# with the Omniglot zips in ``../shared/data/omniglot/``:
#
# .. code-block:: console
#
#    $ python experiments/omniglot_small1.py protonet
#
# trains ``experiments/configs/omniglot_small1_protonet.yaml`` into
# ``runs/omniglot_small1/protonet``, evaluates it on 1,000 episodes of the unseen alphabets at
# 5-way 1-shot, 5-way 5-shot and 20-way 1-shot (and 5-way 1-shot with random query counts),
# and writes its row of ``experiments/results/omniglot_small1.md``: 93.78 +- 0.40 %,
# 98.15 +- 0.15 % and 83.34 +- 0.29 %, after 13.0 minutes of training on a 2-core CPU. The
# script trains with ``--no-resume``, so that the time it records is one uninterrupted run;
# after an interruption, finish the run with ``relgraph train --config
# experiments/configs/omniglot_small1_protonet.yaml --out runs/omniglot_small1/protonet`` as
# above and score it with ``python experiments/omniglot_small1.py --skip-training protonet``.
# The evaluation alone is
#
# .. code-block:: console
#
#    $ relgraph evaluate --checkpoint runs/omniglot_small1/protonet --dataset omniglot \
#        --root ../shared/data/omniglot/images_background_small2.zip \
#        --alphabets "Japanese_(katakana),Sanskrit,Tagalog" --ways 5 --shots 1 --queries 15
#
# The other protocols (the Vinyals split, the Omniglot challenge) and their results files are
# listed in :doc:`/omniglot`; ``experiments/README.md`` lists every experiment with its command.
workdir.cleanup()
