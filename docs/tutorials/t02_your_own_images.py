"""
Your own images
===============

From a folder of your own images to a model that names new ones, with the ``relgraph``
command (the Python calls behind it are shown too). This page makes its folder from the
embedded ``glyphs`` letters so that it runs anywhere; put your images in the same layout and
the same commands train on them.

**Install** (Python 3.10 or newer). relgraph installs from its source folder (a git checkout
or an unpacked source archive); in that folder::

    python3 -m venv .venv
    .venv/bin/pip install -c constraints.txt .

``-c constraints.txt`` pins the CPU build of PyTorch that relgraph's CI uses; leave it out to
let pip choose a torch for your machine (a CUDA build, for instance). The commands below are
then ``.venv/bin/relgraph ...`` (or ``relgraph ...`` once the environment is activated with
``source .venv/bin/activate``).

**Folder layout.** One folder per class, named after the class; any file names; PNG, JPEG,
BMP, GIF, TIFF, WebP, PPM or PGM files of any size (every image is resized to
``--image-size``); files starting with a dot are skipped::

    my_images/
      train/                   many classes to learn from, a few images each
        class_a/  001.png 002.png ...
        class_b/  ...
      support/                 the classes you want to recognise: a few labelled images each
        cat/  1.png 2.png ...
        dog/  ...
      query/                   new images to name (no labels; sub-folders are fine)
        img_0001.png ...

Few-shot learning trains on *episodes* drawn from ``train/``: small tasks that imitate the
final one (name a query from one labelled example per class). The classes of ``support/``
need not be in ``train/``: the model compares images, it does not memorise classes. With the
flags below, every class in ``train/`` needs at least 6 images (``--shots`` + ``--queries``),
and ``train/`` at least 13 classes (20% of them are held out to validate on, and a training
episode has ``--ways 10`` classes).
"""

# %%
# Make a folder of images
# -----------------------
# Here ``train/`` gets 100 classes of 20 images from the ``glyphs`` training alphabets, and
# ``support/`` and ``query/`` five Greek letters, an alphabet that is not in ``train/``: 5
# labelled images each in ``support/``, 10 unlabelled ones each in ``query/``. The images are
# written as dark ink on white paper, as a scan would be. Everything goes to a temporary
# folder. (With your own images, skip this step.)
import csv
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from PIL import Image

from relgraph.data import build_dataset


def save_png(image: torch.Tensor, path: Path) -> None:
    """Save a ``[1, h, w]`` image in ``[0, 1]`` (bright ink) as dark ink on white paper."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = (255 * (1 - image[0])).round().to(torch.uint8).numpy()
    Image.fromarray(pixels).save(path)


def folder_name(class_name: str) -> str:
    """``"Greek/GREEK SMALL LETTER PSI"`` -> ``"greek_small_letter_psi"``."""
    return class_name.split("/")[-1].lower().replace(" ", "_")


workdir = tempfile.TemporaryDirectory(prefix="relgraph-t02-")  # removed at the end
work = Path(workdir.name)
root = work / "my_images"
rng = random.Random(0)

glyphs_train = build_dataset("glyphs", split="train")
for c in rng.sample(range(glyphs_train.num_classes), 100):
    index = glyphs_train.class_indices()[c]
    for i, image in enumerate(glyphs_train.get_batch(index)):
        save_png(image, root / "train" / folder_name(glyphs_train.class_names[c]) / f"{i:03d}.png")

glyphs_test = build_dataset("glyphs", split="test")
greek = [c for c, name in enumerate(glyphs_test.class_names) if name.startswith("Greek/")]
truth = {}  # query file -> its class, kept aside to score the predictions
queries = []
for c in rng.sample(greek, 5):
    name = folder_name(glyphs_test.class_names[c])
    images = glyphs_test.get_batch(glyphs_test.class_indices()[c])
    for i, image in enumerate(images[:5]):
        save_png(image, root / "support" / name / f"{i}.png")
    queries += [(image, name) for image in images[5:15]]
rng.shuffle(queries)
for i, (image, name) in enumerate(queries):
    save_png(image, root / "query" / f"img_{i:04d}.png")
    truth[f"img_{i:04d}.png"] = name

for part in ("train", "support", "query"):
    files = [p for p in (root / part).rglob("*.png")]
    classes = sorted({p.parent.name for p in files}) if part != "query" else []
    print(f"{part:8s} {len(files):5d} images" + (f", {len(classes)} classes" if classes else ""))
print("support classes:", sorted(p.name for p in (root / "support").iterdir()))

# %%
# Check the dataset
# -----------------
# ``relgraph data`` reads the folder as the ``folder`` dataset and counts it; a bad file or an
# empty class folder stops it with a message naming the path. ``--image-size 28`` resizes
# every image to 28 x 28 and ``--option channels=1`` reads them as grayscale (the default is
# RGB, ``channels=3``, at ``--image-size 84``: the usual choice for photos). The shell command
# is the first line of each block below; this page runs it through ``python -m relgraph.cli``,
# which is the same program::
#
#     relgraph data --dataset folder --root my_images/train --image-size 28 --option channels=1


def relgraph(*args: str) -> str:
    """Run ``relgraph ARGS...`` (as ``python -m relgraph.cli``) and return what it printed."""
    print("$ relgraph " + " ".join(args))
    done = subprocess.run([sys.executable, "-m", "relgraph.cli", *args], cwd=work,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"relgraph {args[0]} failed:\n{done.stderr}")
    return done.stdout


print(relgraph("data", "--dataset", "folder", "--root", "my_images/train",
               "--image-size", "28", "--option", "channels=1"))

# %%
# In Python the same dataset is one call, and any dataset of relgraph works the same way:
train_folder = build_dataset("folder", [str(root / "train")], image_size=28, channels=1)
print(train_folder.summary(), train_folder.class_names[:3])

# %%
# Train
# -----
# ProtoNet on a Conv4 backbone, 10-way 1-shot training episodes with 5 queries per class,
# 150 steps (a few seconds here; use more steps on real data, e.g. ``--steps 2000``). 20% of
# the classes of ``train/`` are held out (a fixed, seeded choice) to validate on every
# ``--val-every`` steps, and the best model on validation is kept in ``runs/mine``.
# To fine-tune a model trained elsewhere instead of starting from random weights, add
# ``--set train.init_from=PATH/checkpoint.pt`` (same backbone and image size). In a shell,
# from the folder that holds ``my_images/``::
#
#     relgraph train --dataset folder --root my_images/train --image-size 28 \
#         --option channels=1 --method protonet --backbone conv4 \
#         --ways 10 --shots 1 --queries 5 --steps 150 --val-every 50 --out runs/mine
print(relgraph("train", "--dataset", "folder", "--root", "my_images/train",
               "--image-size", "28", "--option", "channels=1",
               "--method", "protonet", "--backbone", "conv4",
               "--ways", "10", "--shots", "1", "--queries", "5",
               "--steps", "150", "--val-every", "50", "--device", "cpu",
               "--out", "runs/mine", "--no-progress"))
print(sorted(p.name for p in (work / "runs" / "mine").iterdir()))

# %%
# Predict new images
# ------------------
# ``relgraph predict`` reads the labelled images of ``support/<class>/`` and names every image
# under ``query/``, one episode with all support images; it prints one line per image and
# writes every class's probability to a CSV file. The images are read as the model's training
# images were (size, channels), from the checkpoint::
#
#     relgraph predict --checkpoint runs/mine --support my_images/support \
#         --query my_images/query --out predictions.csv
printed = relgraph("predict", "--checkpoint", "runs/mine", "--support", "my_images/support",
                   "--query", "my_images/query", "--out", "predictions.csv", "--device", "cpu")
print("\n".join(printed.splitlines()[:8] + ["..."] + printed.splitlines()[-1:]))

with open(work / "predictions.csv", newline="") as f:
    rows = list(csv.DictReader(f))
print("columns:", list(rows[0]))

# %%
# The same in Python: :func:`~relgraph.engine.load_model` and
# :func:`~relgraph.predict.predict_folder` return the same rows as dicts.
from relgraph.engine import load_model  # noqa: E402
from relgraph.predict import predict_folder  # noqa: E402

model, checkpoint = load_model(work / "runs" / "mine" / "checkpoint.pt")
same = predict_folder(model, checkpoint["preprocessing"], root / "support", root / "query")
print(same[0])
assert [r["prediction"] for r in same] == [r["prediction"] for r in rows]

# %%
# How good is it?
# ---------------
# We kept the true class of every query aside, so we can score the predictions: the accuracy
# and the confusion matrix (rows: the true class, columns: the predicted one).
classes = sorted(p.name for p in (root / "support").iterdir())
confusion = np.zeros((len(classes), len(classes)), dtype=int)
for row in rows:
    name = Path(row["file"]).name
    confusion[classes.index(truth[name]), classes.index(row["prediction"])] += 1
accuracy = np.trace(confusion) / confusion.sum()
print(f"accuracy on {confusion.sum()} new images: {accuracy:.0%}")

short = [c.replace("greek_", "").replace("_letter", "") for c in classes]
fig, ax = plt.subplots(figsize=(5.2, 4.4))
ax.imshow(confusion, cmap="Blues")
for i in range(len(classes)):
    for j in range(len(classes)):
        ax.text(j, i, confusion[i, j], ha="center", va="center",
                color="white" if confusion[i, j] > confusion.max() / 2 else "black")
ax.set_xticks(range(len(classes)), short, rotation=35, ha="right")
ax.set_yticks(range(len(classes)), short)
ax.set(xlabel="predicted", ylabel="true", title=f"confusion matrix: {accuracy:.0%} correct")
fig.tight_layout()
plt.show()

# %%
# The support images of each class (left, blue) and the first queries predicted as that class
# (right; green frame: right, red: wrong, with the true class below a wrong one).
def show(ax, path: Path, colour: str, label: str = "") -> None:  # noqa: ANN001
    ax.imshow(Image.open(path), cmap="gray", vmin=0, vmax=255)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel(label, fontsize=6)
    for spine in ax.spines.values():
        spine.set_edgecolor(colour)
        spine.set_linewidth(2.5)


per_row = 6
fig, axes = plt.subplots(len(classes), 5 + per_row, figsize=(11, 1.15 * len(classes) + 0.5),
                         squeeze=False)
for k, name in enumerate(classes):
    for s, path in enumerate(sorted((root / "support" / name).iterdir())):
        show(axes[k, s], path, "tab:blue")
    axes[k, 0].set_ylabel(short[k], rotation=0, ha="right", va="center", fontsize=8)
    predicted = [r for r in rows if r["prediction"] == name][:per_row]
    for j in range(per_row):
        ax = axes[k, 5 + j]
        if j >= len(predicted):
            ax.set_axis_off()
            continue
        file = Path(predicted[j]["file"])
        right = truth[file.name] == name
        show(ax, work / file if not file.is_absolute() else file,
             "tab:green" if right else "tab:red",
             f"{float(predicted[j]['confidence']):.0%}" + ("" if right else
                                                            f"\n({short[classes.index(truth[file.name])]})"))
fig.tight_layout(rect=(0, 0, 1, 0.95))
for column, text in ((0, "support"), (5, "queries predicted as this class (confidence)")):
    box = axes[0, column].get_position()
    fig.text(box.x0, box.y1 + 0.015, text, fontsize=9)
plt.show()

# %%
# What the full run gives
# -----------------------
# Trained for 150 steps on 100 classes, the model above is a quick sketch. With more classes
# and steps it gets much better: ProtoNet on Omniglot's small background set (136 characters
# of 5 alphabets, images of the same kind as these) reaches 93.78% on 5-way 1-shot episodes
# of alphabets it never saw (``experiments/results/omniglot_small1.md``, 1,000 episodes, with
# the other methods next to it). For photos, train at ``--image-size 84`` with 3 channels
# (the defaults) and a bigger backbone (``--backbone resnet12``); the natural-image
# benchmarks are described in the documentation's "Natural images" page.
workdir.cleanup()
