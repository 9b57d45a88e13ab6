"""
Inductive, transductive and semi-supervised episodes
====================================================

A few-shot accuracy means little until it says **what a query's prediction may depend on**:

- *inductive*: the support set and that query alone;
- *transductive*: the support set and the whole query set of the episode;
- *semi-supervised*: also unlabelled examples given with the episode (some of them from
  *distractor* classes that are not in the episode).

This tutorial shows the three on the same episodes of the embedded ``glyphs`` data: it trains
ProtoNet (inductive) for a few seconds, puts a TPN (transductive label propagation) on its
backbone, checks what each prediction depends on, shows why balanced query sets flatter a
transductive method, and adds unlabelled nodes. The reference page is :doc:`/transductive`.
"""

# %%
# A ProtoNet backbone and a TPN on top
# ------------------------------------
# Both are trained with the library's one training loop (:func:`relgraph.engine.train`), for
# seconds instead of minutes. TPN starts from ProtoNet's backbone (``train.init_from``, as the
# small1 configs do) with the ``k`` and ``alpha`` chosen on validation episodes for
# ``experiments/configs/omniglot_small1_tpn.yaml``.
import copy
import tempfile

import matplotlib.pyplot as plt
import torch

from relgraph.data import EpisodeSampler, build_dataset
from relgraph.engine import Config, episode_accuracies, evaluate, load_model, train
from relgraph.methods import ProtoNet, build_method

torch.manual_seed(0)
workdir = tempfile.TemporaryDirectory(prefix="relgraph-t05-")
test = build_dataset("glyphs", split="test")


def config(method, method_args, **train_args):
    return Config.from_dict({
        "method": method, "method_args": method_args, "backbone": "conv4",
        "data": {"dataset": "glyphs", "split": "train", "val_split": "val"},
        "train": {"val_episodes": 50, "device": "cpu", **train_args},
        "eval": {"ways": 5, "shots": 1, "queries": 15}})


train(config("protonet", {}, ways=20, shots=1, queries=5, steps=100, val_every=100),
      f"{workdir.name}/protonet", progress=False)
train(config("tpn", {"k": 10, "alpha": 0.7}, ways=5, shots=1, queries=15, steps=10,
             episodes_per_batch=4, val_every=10, lr=5e-4, backbone_lr_scale=0.1,
             init_from=f"{workdir.name}/protonet/checkpoint.pt"),
      f"{workdir.name}/tpn", progress=False)
protonet, _ = load_model(f"{workdir.name}/protonet/checkpoint.pt")
tpn, _ = load_model(f"{workdir.name}/tpn/checkpoint.pt")
print(protonet.extra_repr(), "|", tpn.extra_repr())

# %%
# Every method declares its mode
# ------------------------------
# ``transductive`` is an attribute of every method, and :func:`~relgraph.engine.evaluate`
# copies it into its result (``mode``). Some methods come in both modes; the heads below
# reuse ProtoNet's trained backbone, and the untrained ones serve only to show the mechanics.
backbone = protonet.backbone
models = {
    "protonet": protonet,
    "edge_gnn": build_method("edge_gnn", copy.deepcopy(backbone)),
    "dpgn (transductive=False)": build_method("dpgn", copy.deepcopy(backbone),
                                              transductive=False),
    "tpn": tpn,
    "edge_gnn_transductive": build_method("edge_gnn_transductive", copy.deepcopy(backbone)),
    "dpgn": build_method("dpgn", copy.deepcopy(backbone)),
}
for name, model in models.items():
    model.eval()  # BatchNorm on running statistics: no batch statistic links the queries
    print(f"{name:28s} transductive={model.transductive}")

# %%
# What a prediction depends on, tested
# ------------------------------------
# Take one test episode (5-way 1-shot, 15 queries per class) and look at the class
# probabilities of its first query. Then (a) replace every *other* query by a query of another
# episode, and (b) drop the other queries altogether. An inductive method must give the same
# probabilities; a transductive one may not. The library's contract tests run the same check
# on every registered method.
#
# In eval mode an image's embedding does not depend on the images embedded with it, so the
# images are embedded once and the question is what the relational step does with them:
# :meth:`~relgraph.methods.RelationalHead.forward_features` relates given embeddings (this
# is also how :func:`~relgraph.engine.evaluate` runs the relational heads).
sampler = EpisodeSampler(test, n_way=5, k_shot=1, n_query=15, seed=0)
episode, other = sampler.read(test, [0]), sampler.read(test, [1])
with torch.no_grad():
    support, query = backbone(episode.support[0])[None], backbone(episode.query[0])[None]
    other_query = backbone(other.query[0])[None]
labels = episode.support_labels
query_sets = {"replaced": torch.cat([query[:, :1], other_query[:, 1:]], 1),
              "alone": query[:, :1]}

# The check runs in float64: in float32 a matrix product's rounding (about 1e-6) depends on
# how many queries it multiplies at once and on the thread count, which would blur the line
# between "unchanged" and "moved a little".
support, query = support.double(), query.double()
query_sets = {k: q.double() for k, q in query_sets.items()}
changes = {}
with torch.no_grad():
    for name, model in models.items():
        model = copy.deepcopy(model).double()
        first = model.forward_features(support, labels, query, 5)[:, 0].softmax(-1)
        changes[name] = max(
            float((model.forward_features(support, labels, q, 5)[:, 0].softmax(-1) - first)
                  .abs().max()) for q in query_sets.values())
        print(f"{name:28s} largest change of query 0's probabilities: {changes[name]:.1e}")
        assert (changes[name] > 1e-10) == model.transductive, name

fig, ax = plt.subplots(figsize=(7, 3))
names = list(changes)
ax.barh(names, [max(c, 1e-17) for c in changes.values()],
        color=["tab:red" if models[n].transductive else "tab:blue" for n in names])
ax.axvline(1e-10, color="gray", ls="--")
ax.invert_yaxis()
ax.set_xscale("log")
ax.set_xlim(1e-17, 1)
ax.set_xlabel("largest change of query 0's class probabilities (float64; 0 drawn at 1e-17)")
ax.set_title("same episode, other queries replaced or dropped")
fig.tight_layout()
plt.show()

# %%
# The inductive heads (blue) give the same probabilities up to float64 rounding (about
# 1e-16) or exactly; the transductive ones (red) move. TPN moves most: its label propagation
# runs through the queries. The untrained transductive edge-labeling GNN and DPGN move little,
# because their untrained edge networks barely tell nodes apart; training decides how much
# a trained one leans on the other queries.
#
# Balanced query sets flatter a transductive method
# -------------------------------------------------
# The usual protocol gives every class the same number of queries (15). A method that sees
# the whole query set can lean on that balance, e.g. by letting each class claim a similar
# share of the queries; when the counts differ, the same habit pushes queries of a large
# class into smaller ones (Veilleux et al., NeurIPS 2021, measured this for many
# transductive methods). Real test sets are rarely balanced, so relgraph also evaluates on
# *random query counts*: the same episodes, keeping 1 to 15 queries of each class, seeded
# per episode (:meth:`~relgraph.data.EpisodeSampler.random_query_counts`).
print("queries kept per class in episodes 0-2:",
      [sampler.random_query_counts(e).tolist() for e in range(3)])

results = {}
for name, model in (("protonet", protonet), ("tpn", tpn)):
    for random_queries in (False, True):
        res = evaluate(model, test, ways=5, shots=1, queries=15, episodes=300,
                       random_queries=random_queries)
        results[name, random_queries] = res
        print(f"{name:9s} {'random' if random_queries else 'balanced':8s} queries: "
              f"{res['accuracy']:.2f} +- {res['ci95']:.2f}% ({res['mode']})")

fig, ax = plt.subplots(figsize=(6, 3))
for i, name in enumerate(("protonet", "tpn")):
    for j, random_queries in enumerate((False, True)):
        res = results[name, random_queries]
        ax.bar(i + 0.38 * j, res["accuracy"], 0.36, yerr=res["ci95"], capsize=3,
               color="tab:orange" if random_queries else "tab:green",
               label=("random" if random_queries else "balanced") + " query counts"
               if i == 0 else None)
ax.set_xticks([0.19, 1.19], ["ProtoNet (inductive)", "TPN (transductive)"])
ax.set_ylim(80, 100)
ax.set_ylabel("accuracy (%), 300 test episodes")
ax.legend(loc="lower right")
fig.tight_layout()
plt.show()

# %%
# ProtoNet scores the same either way (only the number of queries per episode changes). On the
# small1 Omniglot protocol (``experiments/results/omniglot_small1.md``, 1,000 episodes), TPN's
# 5-way 1-shot accuracy is 97.18 +- 0.25 % with balanced query sets and 93.13 +- 0.46 % with
# random query counts, where ProtoNet scores 93.78 +- 0.40 and 93.71 +- 0.48: its +3.40 point
# lead over ProtoNet (paired) becomes -0.58. Report transductive methods both ways.
#
# Semi-supervised episodes
# ------------------------
# ``EpisodeSampler(n_unlabelled=U, n_distractors=D)`` adds ``U`` unlabelled examples of each
# episode class and ``U`` of each of ``D`` distractor classes. The supports and queries stay
# those of the episode without them, so every comparison below is paired on the same episodes.
# The hidden labels (``unlabelled_labels``, -1 for distractors) are for analysis only.
semi = EpisodeSampler(test, n_way=5, k_shot=1, n_query=5, n_unlabelled=4, n_distractors=2,
                      seed=0).read(test, [0])
print(semi)
titles = [f"support {k}" for k in range(5)] + [
    f"u {int(y)}" if y >= 0 else "distractor" for y in semi.unlabelled_labels[0]]
fig, axes = plt.subplots(3, 11, figsize=(9, 3))
for ax, image, title in zip(axes.flat, [*semi.support[0], *semi.unlabelled[0]], titles,
                            strict=True):
    ax.imshow(image[0], cmap="gray")
    ax.set_title(title, fontsize=7)
for ax in axes.flat:
    ax.axis("off")
fig.suptitle("5 supports, then 20 unlabelled examples of the episode's classes and 8 of "
             "2 distractor classes (hidden labels shown)", fontsize=9)
plt.show()

# %%
# ProtoNet ignores unlabelled nodes unless asked: ``unlabelled="soft_kmeans"`` refines its
# prototypes by one soft k-means step over them (Ren et al., 2018); it reads supports and
# unlabelled nodes, never queries, so it stays inductive. TPN propagates labels through them
# like through queries. Below, the same trained weights, on 200 episodes with 5 queries per
# class, paired against the same model without unlabelled examples.
soft_kmeans = ProtoNet(backbone, unlabelled="soft_kmeans").eval()
cells = [(0, 0), (10, 0), (10, 3)]
rows = {"protonet": protonet, "protonet + soft k-means": soft_kmeans, "tpn": tpn}
fig, ax = plt.subplots(figsize=(6, 3))
for name, model in rows.items():
    accs = [episode_accuracies(model, test, 5, 1, 5, 200, unlabelled=u, distractors=d)
            for u, d in cells]
    means = [100 * float(a.mean()) for a in accs]
    print(f"{name:24s}", "  ".join(
        f"U={u:2d} D={d}: {m:.2f} ({100 * float((a - accs[0]).mean()):+.2f} paired)"
        for (u, d), m, a in zip(cells, means, accs, strict=True)))
    ax.plot(range(len(cells)), means, "o-", label=name)
ax.set_xticks(range(len(cells)), [f"U={u}, D={d}" for u, d in cells])
ax.set_ylabel("accuracy (%), 200 episodes")
ax.legend()
fig.tight_layout()
plt.show()

# %%
# The measured version of this table, on unseen Omniglot alphabets with 1,000 episodes, is
# ``experiments/results/semi_supervised.md``: there, at 5-way 1-shot, soft k-means adds
# +3.04 +- 0.30 points with U=5 and +0.88 +- 0.31 with U=5 and 3 distractor classes, and TPN
# +5.60 +- 0.41 and +5.46 +- 0.40. Distractors hurt the soft k-means refinement most, since
# it pulls every unlabelled example into some class.
#
# From the command line the same protocols are ``relgraph evaluate ... --random-queries`` and
# ``relgraph evaluate ... --unlabeled 4 --distractors 2`` (see :doc:`/transductive`).
workdir.cleanup()
