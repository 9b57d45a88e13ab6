"""
First episode to first model
============================

This tutorial goes from nothing to a trained and evaluated few-shot classifier with the Python
API, in about a minute on one CPU core:

1. load the embedded ``glyphs`` data (letters of 22 alphabets rendered from the fonts that ship
   with matplotlib: nothing to download);
2. sample *episodes*: small N-way K-shot classification tasks, and look at one;
3. train Prototypical Networks (ProtoNet) on a four-layer CNN for a few hundred episodes;
4. evaluate it on alphabets it never saw, with a 95% confidence interval;
5. plot its learning curve and its predictions on a test episode.

Install relgraph first (``pip install relgraph``, or ``pip install -e .`` in a checkout).
"""

# %%
# The data
# --------
# ``build_dataset`` builds any registered dataset by name. ``glyphs`` has fixed splits by
# alphabet: ``train`` to learn from, ``val`` to choose the model, ``test`` to report on; no
# alphabet is in two splits, so the test episodes hold letters the model has never seen. The
# first call renders the images (about 10 s) and caches them in ``~/.cache/relgraph``.
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

from relgraph.data import EpisodeSampler, build_dataset
from relgraph.engine import Config, evaluate, load_model, train
from relgraph.viz import plot_episode

torch.manual_seed(0)
for split in ("train", "val", "test"):
    print(split, build_dataset("glyphs", split=split).summary())

train_set = build_dataset("glyphs", split="train")
print("first classes:", train_set.class_names[:5])

# %%
# Episodes
# --------
# An :class:`~relgraph.data.EpisodeSampler` draws episodes of ``n_way`` classes with ``k_shot``
# labelled *support* examples and ``n_query`` *query* examples per class. Episode ``e`` depends
# only on ``(seed, e)``, so the same seed gives the same episodes on any machine. ``read``
# returns a batch of episodes as one :class:`~relgraph.data.Episode`, ordered class by class.
sampler = EpisodeSampler(train_set, n_way=5, k_shot=1, n_query=4, seed=0)
episode = sampler.read(train_set, [0, 1, 2])  # episodes 0, 1 and 2, batched
print("support       ", tuple(episode.support.shape), "(b, n_way * k_shot, c, h, w)")
print("support_labels", episode.support_labels[0].tolist())
print("query         ", tuple(episode.query.shape), "(b, n_way * n_query, c, h, w)")
print("query_labels  ", episode.query_labels[0].tolist())
print("class_ids     ", episode.class_ids[0].tolist(), "(the dataset classes behind 0..4)")

# %%
# The first episode of the batch, one row per class: its support example, then its queries.
# A model sees the support labels only; it must name the class of every query.
fig = plot_episode(episode, index=0, class_names=train_set.class_names,
                   title="a 5-way 1-shot training episode")
plt.show()

# %%
# Train ProtoNet
# --------------
# An experiment is a :class:`~relgraph.engine.Config`: the method and backbone by their
# registered names, where the episodes come from, the training episodes and the evaluation
# protocol. This is the ``relgraph demo`` recipe (20-way 1-shot training episodes, validation
# on 5-way 1-shot episodes of the ``val`` alphabets) cut from 900 to 120 steps.
# :func:`~relgraph.engine.train` keeps the best model on validation (never on test classes)
# and writes ``checkpoint.pt``, ``metrics.csv``, ``curves.png`` and ``config.yaml`` into its
# output folder: here a temporary one.
config = Config.from_dict({
    "method": "protonet",
    "backbone": "conv4",
    "data": {"dataset": "glyphs", "split": "train", "val_split": "val", "image_size": 28},
    "train": {"ways": 20, "shots": 1, "queries": 5, "steps": 120, "lr": 1e-3,
              "val_every": 30, "val_episodes": 60, "seed": 0, "device": "cpu"},
    "eval": {"ways": 5, "shots": 1, "queries": 15},
})
workdir = tempfile.TemporaryDirectory(prefix="relgraph-t01-")  # removed at the end
work = Path(workdir.name)
result = train(config, work / "run", progress=False)
best = result["best"]
print(f"best validation accuracy {best['val_acc']:.2f} +- {best['val_ci95']:.2f}% "
      f"at step {best['step']}")
print(sorted(p.name for p in (work / "run").iterdir()))

# %%
# The learning curve
# ------------------
# ``result["history"]`` holds one row per validation (the same rows as ``metrics.csv``): the
# mean training loss and accuracy since the last validation, and the validation accuracy with
# its 95% confidence interval.
history = result["history"]
steps = [row["step"] for row in history]
fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
left.plot(steps, [row["train_loss"] for row in history], marker="o")
left.set(xlabel="step", ylabel="training loss", title="loss (20-way training episodes)")
acc = torch.tensor([row["val_acc"] for row in history])
ci = torch.tensor([row["val_ci95"] for row in history])
right.plot(steps, [row["train_acc"] for row in history], marker="o", label="training (20-way)")
right.plot(steps, acc, marker="o", label="validation (5-way)")
right.fill_between(steps, acc - ci, acc + ci, alpha=0.25, color="tab:orange")
right.set(xlabel="step", ylabel="accuracy (%)", title="accuracy")
right.legend()
fig.tight_layout()
plt.show()

# %%
# Evaluate on unseen alphabets
# ----------------------------
# :func:`~relgraph.engine.load_model` rebuilds the best model from its checkpoint alone (in
# eval mode). :func:`~relgraph.engine.evaluate` scores it on fixed, seeded test episodes and
# returns the mean accuracy with the half-width of its 95% confidence interval. The episodes
# depend on ``seed`` only, so another model evaluated with the same seed sees the very same
# episodes (a paired comparison).
model, checkpoint = load_model(work / "run" / "checkpoint.pt")
test_set = build_dataset("glyphs", split="test")
for shots in (1, 5):
    res = evaluate(model, test_set, ways=5, shots=shots, queries=15, episodes=200, seed=0)
    print(f"test 5-way {shots}-shot: {res['accuracy']:.2f} +- {res['ci95']:.2f}% "
          f"({res['episodes']} episodes, {res['mode']})")

# %%
# Predictions on one test episode
# -------------------------------
# The model maps a batch of episodes to query logits ``[b, n_way * n_query, n_way]``. Queries
# framed in green are right, red wrong.
test_sampler = EpisodeSampler(test_set, n_way=5, k_shot=1, n_query=5, seed=1)
test_episode = test_sampler.read(test_set, [0])
with torch.no_grad():
    logits = model(test_episode)
predictions = logits.argmax(-1)
print("logits", tuple(logits.shape), "accuracy",
      f"{(predictions == test_episode.query_labels).float().mean().item():.0%}")
fig = plot_episode(test_episode, class_names=test_set.class_names, predictions=predictions,
                   title="a test episode (green: right, red: wrong)")
plt.show()

# %%
# What the full run gives
# -----------------------
# ``relgraph demo`` trains the same recipe for 900 steps (about 2.5 minutes on a CPU) and
# evaluates on 1,000 test episodes; its report (``metrics.json``, ``curves.png``,
# ``episode.png``) goes to ``relgraph-demo/``. The same command line drives any method::
#
#     relgraph train --method protonet --dataset glyphs --split train \
#         --set data.val_split=val --steps 900 --out runs/protonet
#     relgraph evaluate --checkpoint runs/protonet --dataset glyphs --ways 5 --shots 1
#
# On real data, the Omniglot protocols and every method's numbers are in the results files
# of the repository: ``experiments/results/omniglot_small1.md`` (all methods trained on the
# small background set, evaluated on unseen alphabets) and ``experiments/results/omniglot.md``
# (the standard protocol next to the papers' numbers).
workdir.cleanup()
