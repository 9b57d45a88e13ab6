"""Everyday use: classify new images, feature rows or texts from a few labelled ones per class."""

from __future__ import annotations

import csv
import io
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from relgraph.data import Episode, ImageFolderDataset, build_dataset, resize_images
from relgraph.data.base import base_class_names, ink_polarity
from relgraph.data.catalog import DATASETS
from relgraph.data.folder import is_ignored
from relgraph.data.io import decode_image, is_image_file
from relgraph.methods import FewShotMethod
from relgraph.registry import accepted_keywords
from relgraph.utils import atomic_write_text

__all__ = ["predict_folder", "predict_features", "predict_texts", "text_encoder_of",
           "dataset_for_checkpoint", "write_predictions", "polarity_mismatch",
           "seen_in_training"]

#: Datasets whose checkpoints read texts (:mod:`relgraph.data.text`).
TEXT_DATASETS = ("clinc150", "banking77", "fewrel")


def polarity_mismatch(preprocessing: dict[str, Any], images: torch.Tensor) -> str | None:
    """A sentence saying how ``images`` differ in polarity from a checkpoint's training
    images, or ``None`` when they match (or the checkpoint recorded no polarity).

    Args:
        preprocessing: the checkpoint's ``preprocessing`` (``polarity``, ``mean_intensity``).
        images: ``[m, c, h, w]`` in ``[0, 1]``, read as the checkpoint says.
    """
    expected = preprocessing.get("polarity")
    if expected is None or images.numel() == 0:
        return None
    got = ink_polarity(images)
    if got["polarity"] == expected:
        return None
    return (f"the images are {got['polarity']} (mean intensity {got['mean_intensity']:.2f}) "
            f"but the model was trained on {expected} images (mean "
            f"{float(preprocessing.get('mean_intensity', float('nan'))):.2f})")


def dataset_for_checkpoint(name: str, roots: list[str], preprocessing: dict[str, Any],
                           alphabets: list[str] | None = None, split: str | None = None,
                           **options: Any):
    """Build dataset ``name`` so that its images match what a checkpoint was trained on
    (image size; channels and inversion for image folders; the vocabulary and length of text
    token ids). No training augmentation.
    ``options`` are more dataset options (they win over the checkpoint's)."""
    kwargs: dict[str, Any] = {}
    if split:
        kwargs["split"] = split
    if name != "tensors" and preprocessing.get("image_size"):
        kwargs["image_size"] = int(preprocessing["image_size"])
    if name == "folder":
        kwargs["channels"] = int(preprocessing.get("channels", 3))
        kwargs["invert"] = bool(preprocessing.get("invert", False))
    if preprocessing.get("encoder") == "tokens" and "vocab" in preprocessing:
        # text read as token ids: the training vocabulary and length, so ids mean the same words
        kwargs.update(encoder="tokens", vocab=list(preprocessing["vocab"]),
                      max_len=int(preprocessing["max_len"]))
    if preprocessing.get("encoder") == "wordpiece":  # a fine-tuned MiniLM: its ids and length
        kwargs.update(encoder="wordpiece", max_len=int(preprocessing["max_len"]))
    DATASETS.check_keywords(name, options, "--option", reserved=("roots", "alphabets"))
    accepted = accepted_keywords(DATASETS.get(name))
    foreign = sorted(k for k in kwargs if accepted is not None and k not in accepted)
    if foreign:
        raise ValueError(f"this model was trained on {preprocessing.get('dataset', 'other')} "
                         f"inputs ({', '.join(foreign)}), which the {name!r} dataset does not "
                         "read; evaluate it on data of the kind it was trained on")
    return build_dataset(name, roots, alphabets=alphabets, **{**kwargs, **options})


def seen_in_training(checkpoint: dict[str, Any], dataset: Any) -> list[str]:
    """The classes of ``dataset`` that the checkpoint's model trained on (rotations ignored):
    a few-shot score on them measures memory, not learning from a few examples.

    Empty for a checkpoint that did not record its training classes (written before
    2026-12-06) and for disjoint classes.

    Args:
        checkpoint: a loaded ``checkpoint.pt`` (its ``"train_classes"``).
        dataset: the :class:`~relgraph.data.FewShotDataset` to be scored.
    """
    trained = set(checkpoint.get("train_classes") or ())
    return [n for n in base_class_names(dataset.class_names) if n in trained]


def _query_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise ValueError(f"query folder {folder} does not exist or is not a folder")
    files = sorted(p for p in folder.rglob("*")
                   if p.is_file() and is_image_file(p.name) and not is_ignored(p.name))
    if not files:
        raise ValueError(f"no images found in query folder {folder}")
    return files


@torch.no_grad()
def predict_folder(model: FewShotMethod, preprocessing: dict[str, Any],
                   support: str | os.PathLike[str], query: str | os.PathLike[str],
                   device: str | torch.device = "cpu", invert: bool | None = None
                   ) -> list[dict[str, Any]]:
    """Classify every image under ``query`` using the labelled images ``support/<class>/*``.

    Images are read exactly as the model's training data was (size, channels, inversion,
    from the checkpoint's ``preprocessing``). Inductive methods score each query on its own.

    Args:
        invert: ``True`` inverts the images (``1 - pixel``) after that, ``False`` keeps them;
            ``None`` (default) inverts them when their polarity (mean intensity above or below
            0.5) is the opposite of the one the checkpoint recorded, with a warning.

    Returns:
        One dict per query image: ``{"file", "prediction", "confidence"}`` plus one
        ``p(<class>)`` probability per class.
    """
    size = preprocessing.get("image_size")
    channels = int(preprocessing.get("channels", 3))
    as_trained = bool(preprocessing.get("invert", False))  # the inversion of the training data
    sup = ImageFolderDataset(support, image_size=size, channels=channels, invert=as_trained)
    files = _query_files(Path(query))
    images = torch.stack([
        resize_images(decode_image(f, str(f), channels, as_trained).unsqueeze(0), size)[0]
        for f in files]).float().div_(255.0)
    support_images = sup.get_batch(torch.arange(len(sup)))
    flip = bool(invert)
    if invert is None:
        differs = polarity_mismatch(preprocessing, torch.cat([support_images, images]))
        if differs:
            flip = True
            warnings.warn(f"{differs}: inverting them (pass invert=False to keep them as "
                          "they are)", stacklevel=2)
    if flip:
        support_images, images = 1.0 - support_images, 1.0 - images
    return _prediction_rows(model, sup, support_images, images, [str(f) for f in files],
                            device)


@torch.no_grad()
def predict_features(model: FewShotMethod, preprocessing: dict[str, Any],
                     support: str | os.PathLike[str], query: str | os.PathLike[str],
                     support_labels: str | os.PathLike[str] | None = None,
                     device: str | torch.device = "cpu") -> list[dict[str, Any]]:
    """Classify the rows of the features file ``query`` from the labelled rows of ``support``.

    Both are features files as the ``features`` dataset reads them
    (:mod:`relgraph.data.features`); the query file's labels, if any, are not used.

    Args:
        support_labels: labels file for an ``.npy`` support file.

    Returns:
        One dict per query row: ``{"file", "prediction", "confidence"}`` (``file`` is
        ``name[row]``) plus one ``p(<class>)`` probability per class.

    Raises:
        ValueError: the features do not have the size the checkpoint was trained on.
    """
    from relgraph.data.features import FeaturesDataset, read_features

    sup = FeaturesDataset(support, labels=support_labels)
    q = read_features(query)
    expected = preprocessing.get("feature_shape")
    for name, width in ((support, sup.get_batch(torch.arange(1)).shape[1:].numel()),
                        (query, q["features"].shape[1])):
        if expected is not None and int(width) != int(torch.tensor(expected).prod()):
            raise ValueError(f"{name}: {width} features per row, but the model was trained on "
                             f"{list(expected)}")
    return _prediction_rows(model, sup, sup.get_batch(torch.arange(len(sup))),
                            torch.from_numpy(q["features"]), list(q["ids"]), device)


def text_encoder_of(preprocessing: dict[str, Any]) -> str | None:
    """How a checkpoint's training texts were encoded: ``"minilm"`` (sentence features),
    ``"tokens"`` (token ids) or ``"wordpiece"`` (MiniLM's ids, a fine-tuned MiniLM); ``None``
    for a checkpoint not trained on texts."""
    from relgraph.data.text import ENCODERS

    encoder = preprocessing.get("encoder")
    if encoder in ENCODERS:
        return str(encoder)
    if preprocessing.get("dataset") in TEXT_DATASETS:
        return "tokens" if preprocessing.get("inputs") == "tokens" else "minilm"
    return None


def _encode_texts(rows: Any, encoder: str, preprocessing: dict[str, Any],
                  progress: bool) -> torch.Tensor:
    """The texts of ``rows`` as the checkpoint's training texts were encoded."""
    from relgraph.data.text import encode_tokens, text_features, wordpiece_ids

    if encoder == "tokens":
        return encode_tokens(rows.texts, preprocessing["vocab"], int(preprocessing["max_len"]))
    if encoder == "wordpiece":
        return wordpiece_ids(rows.texts, int(preprocessing["max_len"]))
    return text_features(rows.texts, rows.path, progress=progress).float()


@torch.no_grad()
def predict_texts(model: FewShotMethod, preprocessing: dict[str, Any],
                  support: str | os.PathLike[str], query: str | os.PathLike[str],
                  device: str | torch.device = "cpu", progress: bool = False
                  ) -> list[dict[str, Any]]:
    """Classify the texts of the file ``query`` from the labelled texts of ``support``.

    Files as :func:`relgraph.data.text.read_text_file` reads them: ``support`` is ``.tsv`` /
    ``.txt`` (``label<TAB>text`` per line), ``.csv`` (columns ``label``, ``text``) or
    ``.jsonl`` (``{"label", "text"}``); ``query`` is ``.txt`` (one text per line) or ``.csv`` /
    ``.jsonl`` / ``.tsv`` (their labels, if any, are kept in a ``label`` column, not used).
    Texts are encoded as the model's training texts were (from the checkpoint's
    ``preprocessing``): MiniLM sentence features (extra ``relgraph[text]``; cached on disk
    like a dataset's, keyed by the file's contents), token ids with the training vocabulary
    and length, or MiniLM's WordPiece ids (a fine-tuned ``minilm`` backbone). All supports
    form one episode, whatever the number of classes.

    Args:
        progress: a progress bar while the MiniLM features are computed.

    Returns:
        One dict per query text: ``{"file", "text", ["label",] "prediction", "confidence"}``
        (``file`` is ``<query file>:<line>``) plus one ``p(<class>)`` probability per class.

    Raises:
        ValueError: the checkpoint was not trained on texts, or a malformed file (the message
            names the file and line).
        ImportError: MiniLM features without the ``relgraph[text]`` extra.
    """
    from relgraph.data.text import TextDataset, read_text_file

    encoder = text_encoder_of(preprocessing)
    if encoder is None:
        raise ValueError(f"the checkpoint was trained on {preprocessing.get('dataset', '?')!r} "
                         f"({preprocessing.get('inputs', 'images')}), not on texts: texts are "
                         "classified by a model trained on a text dataset (clinc150, banking77, "
                         "fewrel)")
    if encoder == "tokens" and not ("vocab" in preprocessing and "max_len" in preprocessing):
        raise ValueError("the checkpoint was trained on token ids but records no vocabulary "
                         "(preprocessing 'vocab' and 'max_len')")
    if encoder == "wordpiece" and "max_len" not in preprocessing:
        raise ValueError("the checkpoint was trained on WordPiece ids but records no length "
                         "(preprocessing 'max_len'): retrain it with this relgraph version")
    sup_rows = read_text_file(support, labelled=True)
    q_rows = read_text_file(query, labelled=False)
    options: dict[str, Any] = {"encoder": encoder, "progress": progress}
    if encoder == "tokens":
        options.update(vocab=list(preprocessing["vocab"]), max_len=int(preprocessing["max_len"]))
    if encoder == "wordpiece":
        options.update(max_len=int(preprocessing["max_len"]))
    sup = TextDataset(sup_rows, name="support", **options)
    support_x = sup.inputs()
    query_x = _encode_texts(q_rows, encoder, preprocessing, progress)
    expected = preprocessing.get("feature_shape")
    if encoder == "minilm" and expected is not None and [support_x.shape[1]] != list(expected):
        raise ValueError(f"the model was trained on features {list(expected)}, but MiniLM gives "
                         f"[{support_x.shape[1]}]")
    names = [f"{q_rows.path}:{line}" for line in q_rows.lines]
    rows = _prediction_rows(model, sup, support_x, query_x, names, device)
    labelled = any(q_rows.labels)
    out = []
    for row, text, label in zip(rows, q_rows.texts, q_rows.labels, strict=True):
        front = {"file": row.pop("file"), "text": text}
        if labelled:
            front["label"] = label
        out.append({**front, **row})
    return out


#: Queries per episode for inductive methods, at least (memory stays bounded for any number of
#: queries); as many as the supports when there are more of them, since a graph head relates
#: the supports again in every episode.
QUERY_CHUNK = 1024


def _prediction_rows(model: FewShotMethod, sup: Any, support: torch.Tensor,
                     query: torch.Tensor, names: list[str], device: str | torch.device
                     ) -> list[dict[str, Any]]:
    """Classify ``query`` with episodes whose supports are all of ``sup``: one row per
    query, ``{"file": name, "prediction", "confidence", "p(<class>)"...}``.

    An inductive method classifies the queries :data:`QUERY_CHUNK` (or as many as the
    supports) at a time: the same predictions, since a query's depends only on the supports
    and itself, and a graph head's memory stays bounded. A transductive one sees all of them in
    one episode.

    Shapes:
        ``support [s, *x]`` (the examples of ``sup`` in its order), ``query [q, *x]``.
    """
    order = torch.argsort(sup.targets, stable=True)  # supports grouped by class
    model.eval()
    chunk = len(names) if model.transductive else max(QUERY_CHUNK, len(order))
    probs = []
    for start in range(0, len(names), max(1, chunk)):
        part = query[start:start + chunk]
        episode = Episode(
            support=support[order].unsqueeze(0),
            support_labels=sup.targets[order].unsqueeze(0),
            query=part.unsqueeze(0),
            query_labels=torch.zeros(1, len(part), dtype=torch.long),  # unknown
            class_ids=torch.arange(sup.num_classes).unsqueeze(0),
            n_way=sup.num_classes,
            k_shot=int(sup.class_counts().min()),
        ).to(device)
        probs.append(model(episode).float().softmax(-1)[0].cpu())
    rows = []
    for name, p in zip(names, torch.cat(probs), strict=True):
        best = int(p.argmax())
        row: dict[str, Any] = {"file": name, "prediction": sup.class_names[best],
                               "confidence": round(float(p[best]), 6)}
        row.update({f"p({c})": round(float(p[i]), 6) for i, c in enumerate(sup.class_names)})
        rows.append(row)
    return rows


def write_predictions(rows: list[dict[str, Any]], path: str | os.PathLike[str]) -> None:
    """Write prediction rows to a CSV file atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buf.getvalue())
