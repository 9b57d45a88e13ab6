"""
Meta-learning and transfer next to ProtoNet
===========================================

relgraph trains three families of few-shot methods with the same sampler, engine and
evaluation episodes (:doc:`/families`):

- **metric and graph methods** (``protonet``, ``matching``, ``gnn``, ...) learn an embedding by
  episodic training; a new episode costs one forward pass;
- **gradient-based meta-learning** (``maml``, ``fomaml``, ``reptile``, ``mtl``) learns an
  initialisation that adapts to each episode by a few gradient steps on its supports;
- **transfer** (``baseline``, ``baseline_pp``, ``finetune``) pre-trains the backbone as an
  ordinary classifier over all training classes, then fits a new head on each episode
  (``finetune`` also updates the backbone).

They differ less in accuracy than in *where the work happens*. This tutorial measures what each
costs per training step and per evaluated episode, compares the test-time procedures on one
backbone, and ends with the measured Omniglot table and when to use which.
"""

# %%
# What a step and an episode cost
# -------------------------------
# :func:`relgraph.bench.benchmark` (the ``relgraph bench`` command) times a training step
# (loss, backward, optimiser step) and an evaluation pass of a method on one 5-way 1-shot
# episode with 15 queries per class, with the same Conv4 for every method. The
# meta-learners use the inner-loop settings of their small1 configs; the transfer methods'
# training step is a pre-training mini-batch over all training classes.
import copy
import tempfile
import time

import matplotlib.pyplot as plt
import torch

from relgraph.bench import benchmark
from relgraph.data import build_dataset
from relgraph.engine import Config, episode_accuracies, load_model, train
from relgraph.methods import build_method

torch.manual_seed(0)
workdir = tempfile.TemporaryDirectory(prefix="relgraph-t06-")
train_set, test = build_dataset("glyphs", split="train"), build_dataset("glyphs", split="test")
classes = train_set.num_classes

methods = {
    "protonet": {},
    "maml": {"inner_steps": 2, "eval_inner_steps": 10, "eval_inner_lr": 0.1},
    "fomaml": {"inner_steps": 3, "eval_inner_steps": 10, "eval_inner_lr": 0.1},
    "reptile": {"inner_steps": 5, "eval_inner_steps": 10, "inner_lr": 0.1,
                "train_on_queries": True},
    "baseline": {"num_classes": classes},
    "baseline_pp": {"num_classes": classes},
    "finetune": {"num_classes": classes, "finetune_steps": 5, "finetune_lr": 0.01},
}
cost = {}
for name, args in methods.items():
    r = benchmark(name, ways=5, shots=1, queries=15, steps=2, warmup=1, memory=False,
                  method_args=args)
    cost[name] = r["train_ms"], r["eval_ms"]
    print(f"{name:12s} training step {r['train_ms']:7.0f} ms   evaluated episode "
          f"{r['eval_ms']:6.0f} ms")

fig, axes = plt.subplots(1, 2, figsize=(9, 3), sharey=True)
colors = ["tab:blue", *["tab:red"] * 3, *["tab:green"] * 3]
for ax, i, what in zip(axes, (0, 1), ("training step", "evaluated episode"), strict=True):
    bars = ax.barh(list(cost), [c[i] for c in cost.values()], color=colors)
    ax.bar_label(bars, fmt="%.0f", padding=2, fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(right=4 * max(c[i] for c in cost.values()))
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel(f"ms per {what} (1 thread)")
axes[0].invert_yaxis()
fig.suptitle("metric (blue), meta-learning (red), transfer (green): one 5-way 1-shot episode")
fig.tight_layout()
plt.show()

# %%
# The pattern is the point, not the milliseconds (they depend on the machine and its load):
#
# - ProtoNet's test episode is one forward pass, and :func:`~relgraph.engine.evaluate` goes
#   further: it embeds every distinct image once and relates all episodes on the cached
#   features (10,000 Omniglot episodes in 2.8 s on 2 threads,
#   ``experiments/results/bench_eval_cache.md``).
# - MAML and its relatives run their inner loop at test time too (10 steps here), on every
#   episode: an evaluated episode costs about as much as a training step. In training,
#   second-order MAML differentiates through its inner loop (2 steps here), first-order MAML
#   does not (3 steps), and Reptile takes 5 steps on the supports and queries together.
# - The transfer methods train as ordinary classifiers (cheap steps) but fit a head per test
#   episode (logistic regression on frozen features); ``finetune`` also takes gradient steps
#   through the backbone, which makes it the most expensive of them to evaluate.
#
# Same backbone, three test-time procedures
# -----------------------------------------
# The transfer heads need only a backbone, so they can be compared on exactly the same one:
# train ProtoNet for a few seconds, then score its backbone on the same 100 test episodes with
# ProtoNet's class means, with Baseline's per-episode logistic regression, and with
# fine-tuning (5 gradient steps through the backbone per episode).
config = Config.from_dict({
    "method": "protonet", "backbone": "conv4",
    "data": {"dataset": "glyphs", "split": "train", "val_split": "val"},
    "train": {"ways": 20, "shots": 1, "queries": 5, "steps": 60, "val_every": 60,
              "val_episodes": 50, "device": "cpu"}})
train(config, f"{workdir.name}/protonet", progress=False)
protonet, _ = load_model(f"{workdir.name}/protonet/checkpoint.pt")
heads = {"protonet": protonet}
for name in ("baseline", "finetune"):
    heads[name] = build_method(name, copy.deepcopy(protonet.backbone), **methods[name]).eval()

accuracy = {}
for name, model in heads.items():
    started = time.perf_counter()
    accuracy[name] = episode_accuracies(model, test, 5, 1, 15, episodes=100)
    ms = 1000 * (time.perf_counter() - started) / 100
    diff = 100 * (accuracy[name] - accuracy["protonet"])
    paired = (f", minus protonet (paired) {diff.mean():+.2f} +- "
              f"{1.96 * diff.std(unbiased=False) / 10:.2f}" if name != "protonet" else "")
    print(f"{name:9s} {ms:4.0f} ms per episode, accuracy {100 * accuracy[name].mean():.2f}%"
          + paired)

# %%
# On a backbone trained for a minute, the test-time procedure matters little for accuracy and
# a lot for cost. Meta-learners cannot be compared this way: what MAML and Reptile learn *is*
# the initialisation their inner loop starts from, so they need their own meta-training run
# (``relgraph train --method maml ...``; see the configs in ``experiments/configs/``).
#
# The measured table
# ------------------
# The full comparison is the small1 Omniglot protocol (``experiments/results/omniglot_small1.md``,
# rendered in :doc:`/families`): every method trained on the minimal background set, evaluated
# on three unseen alphabets, 1,000 episodes, 5-way 1-shot. The numbers below are copied from
# that file (accuracy %, training minutes on the 2-core CPU; ``finetune`` and ``mtl`` start
# from the ``baseline`` run, whose 19.2 min come on top of their own).
small1 = {  # method: (family, 5-way 1-shot accuracy, training minutes)
    "protonet": ("metric", 93.78, 13.0), "maml": ("meta", 91.32, 21.8),
    "fomaml": ("meta", 90.81, 19.6), "reptile": ("meta", 87.48, 23.0),
    "mtl": ("meta", 92.92, 17.3), "baseline": ("transfer", 92.82, 19.2),
    "baseline_pp": ("transfer", 89.39, 10.6), "finetune": ("transfer", 92.73, 8.1),
}
family_color = {"metric": "tab:blue", "meta": "tab:red", "transfer": "tab:green"}
fig, ax = plt.subplots(figsize=(6, 3.5))
for name, (family, acc, minutes) in small1.items():
    ax.scatter(minutes, acc, color=family_color[family])
    ax.annotate(name, (minutes, acc), textcoords="offset points", xytext=(4, 3), fontsize=8)
ax.set_xlabel("training time (min, 2-core CPU)")
ax.set_ylabel("5-way 1-shot accuracy (%)")
ax.set_title("small1 Omniglot protocol, unseen alphabets")
fig.tight_layout()
plt.show()

# %%
# When to use which
# -----------------
# - **Many episodes to classify, a fixed embedding is fine**: ProtoNet first. It is the fastest
#   to train and to evaluate and, on this table, the most accurate at 5-way 1-shot.
# - **The test domain differs from the base classes** and a few gradient steps per episode are
#   affordable: MAML (or the cheaper first-order MAML) or fine-tuning adapt the backbone itself.
#   Every test episode then runs backward passes, as measured above. Choose the test-time
#   inner steps on validation episodes (``python experiments/meta_eval_sweep.py RUN``).
# - **A strong pre-trained backbone exists**: the transfer baselines need no episodic
#   training, only a classifier over the base classes (or none, as above).
workdir.cleanup()
