"""Few-shot text: CLINC150 and Banking77 intents, FewRel relations.

The files are read as they are published (JSON / CSV). Every row becomes one example whose class
is its intent (or relation). A text dataset holds its texts and gives the rest of relgraph
tensors through an *encoder* chosen when it is built:

- ``encoder="minilm"`` (default): the pretrained sentence encoder all-MiniLM-L6-v2
  (:mod:`relgraph.backbones.minilm`, extra ``relgraph[text]``). Items are ``[384]`` float
  feature vectors, computed once per data file and cached on disk
  (``<cache>/text/<file stem>-<file sha256>-<encoder>.pt``, written atomically), so the
  sampler, every relational head, ``evaluate`` and the CLI work on them unchanged (use
  ``backbone: identity``-style heads built with ``build_method(name, None, embed_dim=384)``).
- ``encoder="tokens"``: token ids for an encoder trained from scratch (the ``text_cnn``
  backbone). Items are ``[max_len]`` long tensors: lower-cased word / punctuation tokens
  (``\\w+|[^\\w\\s]``), ``0`` = padding, ``1`` = out of vocabulary, truncated to the first
  ``max_len`` tokens and right-padded with ``0``. The vocabulary is built on training classes
  only (``vocab_split`` rows of the ``vocab_alphabets`` / ``vocab_classes``), or read from
  ``vocab`` (a list of tokens, or a file with one token per line, see :func:`save_vocab`).
- ``encoder="wordpiece"``: MiniLM's own WordPiece token ids (``[CLS] ... [SEP]``, ``0`` =
  padding, truncated to ``max_len`` and right-padded), for fine-tuning the pretrained encoder
  episodically (the ``minilm`` backbone, extra ``relgraph[text]``). Items are ``[max_len]``
  long tensors.

Features are computed lazily: counting a dataset (``relgraph data``) needs no encoder.

Classes are grouped into alphabets by domain: the CLINC150 domains (from ``domains.json``
beside ``data_full.json`` when it is there), ``"banking"`` for Banking77, ``"wiki"`` /
``"pubmed"`` for FewRel.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from relgraph.data.base import FewShotDataset
from relgraph.data.catalog import register_dataset
from relgraph.utils import atomic_path, cache_dir, file_sha256

__all__ = ["TextRows", "TextDataset", "read_clinc150", "read_banking77", "read_fewrel",
           "read_text_file", "TEXT_FILE_SUFFIXES", "fewrel_text", "tokenize", "build_vocab",
           "save_vocab", "load_vocab", "encode_tokens", "text_features", "ENCODERS", "PAD",
           "UNK", "wordpiece_ids"]

#: Encoders a text dataset accepts.
ENCODERS = ("minilm", "tokens", "wordpiece")
#: Token ids of padding and of out-of-vocabulary words.
PAD, UNK = 0, 1
_TOKEN = re.compile(r"\w+|[^\w\s]")


@dataclass
class TextRows:
    """The rows of one data file: texts, their labels and official splits.

    Attributes:
        path: the file read.
        texts: ``[M]`` texts in file order.
        labels: ``[M]`` intent / relation names.
        splits: ``[M]`` split of each row (``"train"``, ``"test"``, ...).
        domains: ``label -> domain`` for the labels that have one.
        lines: ``[M]`` the 1-based line of each row (filled by :func:`read_text_file`).
    """

    path: Path
    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    domains: dict[str, str] = field(default_factory=dict)
    lines: list[int] = field(default_factory=list)


# -- reading JSON with line numbers ------------------------------------------------------------
def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _json_object_of_arrays(path: Path) -> Iterator[tuple[str, Any, int]]:
    """Yield ``(key, item, line)`` for every item of every array in a JSON object
    ``{key: [item, ...], ...}``; ``line`` is the 1-based line where the item starts.

    Raises:
        ValueError: not JSON, or not an object of arrays (the message names file and line).
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text ({exc})") from exc
    dec = json.JSONDecoder()

    def expect(pos: int, chars: str, what: str) -> int:
        pos = _skip_ws(text, pos)
        if pos >= len(text) or text[pos] not in chars:
            found = repr(text[pos]) if pos < len(text) else "the end of the file"
            raise ValueError(f"{path}, line {_line(text, pos)}: expected {what}, found {found}")
        return pos

    def decode(pos: int) -> tuple[Any, int]:
        try:
            return dec.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {exc.lineno}: invalid JSON ({exc.msg})") from exc

    pos = expect(0, "{", "a JSON object '{'") + 1
    line, counted = 1, 0
    pos = _skip_ws(text, pos)
    if pos < len(text) and text[pos] == "}":
        return
    while True:
        pos = expect(pos, '"', "a key (a string)")
        key, pos = decode(pos)
        pos = expect(pos, ":", "':'") + 1
        pos = expect(pos, "[", f"a list of rows for key {key!r}") + 1
        pos = _skip_ws(text, pos)
        if pos < len(text) and text[pos] == "]":
            pos += 1
        else:
            while True:
                pos = _skip_ws(text, pos)
                line += text.count("\n", counted, pos)  # lines counted incrementally: O(size)
                counted = pos
                item, pos = decode(pos)
                yield key, item, line
                pos = expect(pos, ",]", "',' or ']' after a row")
                pos += 1
                if text[pos - 1] == "]":
                    break
        pos = expect(pos, ",}", "',' or '}'")
        pos += 1
        if text[pos - 1] == "}":
            break
    pos = _skip_ws(text, pos)
    if pos < len(text):
        raise ValueError(f"{path}, line {_line(text, pos)}: extra data after the JSON object")


def _find_file(roots: Sequence[str], names: Sequence[str], dataset: str) -> Path:
    """The first of ``names`` inside the single root folder (or the root file itself)."""
    if len(roots) != 1:
        raise ValueError(f"the {dataset} dataset needs exactly one --root (its folder or file), "
                         f"got {len(roots)}")
    root = Path(roots[0])
    if root.is_file():
        return root
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found ({dataset}: give the folder holding "
                                f"{' or '.join(names)})")
    for name in names:
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(f"{root} holds none of {', '.join(names)} ({dataset})")


# -- the three readers -------------------------------------------------------------------------
def read_clinc150(path: str | Path, include_oos: bool = False) -> TextRows:
    """Read CLINC150's ``data_full.json``: ``{"train": [[text, intent], ...], "val": ...,
    "test": ..., "oos_train": ..., ...}``.

    The ``oos_*`` rows (out of scope) are kept only with ``include_oos``, as class ``"oos"``
    of split ``train`` / ``val`` / ``test`` and domain ``"oos"``. Domains come from
    ``domains.json`` beside the file (``{domain: [intent, ...]}``) when it exists.

    Raises:
        ValueError: a malformed row (the message names the file and line).
    """
    path = Path(path)
    rows = TextRows(path)
    for key, item, line in _json_object_of_arrays(path):
        oos = key.startswith("oos_")
        split = key[4:] if oos else key
        if not (isinstance(item, list) and len(item) == 2
                and all(isinstance(v, str) for v in item)):
            raise ValueError(f"{path}, line {line}: a {key!r} row must be [text, intent] "
                             f"(two strings), got {str(item)[:80]}")
        if not item[0].strip() or not item[1].strip():
            raise ValueError(f"{path}, line {line}: empty text or intent in {item!r}")
        if oos and not include_oos:
            continue
        rows.texts.append(item[0])
        rows.labels.append(item[1])
        rows.splits.append(split)
    domains_file = path.parent / "domains.json"
    if domains_file.is_file():
        try:
            domains = json.loads(domains_file.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{domains_file}: invalid JSON ({exc})") from exc
        if not isinstance(domains, dict) or not all(isinstance(v, list)
                                                    for v in domains.values()):
            raise ValueError(f"{domains_file} must map each domain to a list of intents")
        rows.domains = {intent: domain for domain, intents in domains.items()
                        for intent in intents}
        if include_oos:
            rows.domains["oos"] = "oos"
    return rows


def read_banking77(paths: dict[str, Path]) -> TextRows:
    """Read Banking77's CSV files (``text,category`` with a header), one per split.

    Raises:
        ValueError: a missing header or a malformed row (file and line named).
    """
    rows = TextRows(next(iter(paths.values())))
    for split, path in paths.items():
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            try:
                header = next(reader, None)
            except csv.Error as exc:
                raise ValueError(f"{path}, line 1: {exc}") from exc
            if header is None or [h.strip() for h in header] != ["text", "category"]:
                raise ValueError(f"{path}, line 1: expected the header 'text,category', "
                                 f"got {header!r}")
            try:
                for record in reader:
                    line = reader.line_num
                    if not record:
                        continue
                    if len(record) != 2:
                        raise ValueError(f"{path}, line {line}: expected 2 fields (text,category), "
                                         f"got {len(record)}: {record!r}"[:300])
                    text, category = record
                    if not text.strip() or not category.strip():
                        raise ValueError(f"{path}, line {line}: empty text or category")
                    rows.texts.append(text)
                    rows.labels.append(category.strip())
                    rows.splits.append(split)
            except csv.Error as exc:
                raise ValueError(f"{path}, line {reader.line_num}: {exc}") from exc
    rows.domains = {label: "banking" for label in rows.labels}
    return rows


def fewrel_text(tokens: Sequence[str], head: str, tail: str) -> str:
    """How a FewRel instance is written as one text: ``"<head> [SEP] <tail> [SEP] <sentence>"``
    (entities first, so that truncation never cuts them; ``[SEP]`` is a token of the BERT
    vocabulary)."""
    return f"{head} [SEP] {tail} [SEP] {' '.join(tokens)}"


def read_fewrel(path: str | Path) -> TextRows:
    """Read a FewRel file ``{relation: [{"tokens": [...], "h": [name, id, [[pos]]], "t": ...},
    ...]}``; the split (and domain) is the file's stem without ``val_`` (``wiki``,
    ``pubmed``). Texts are written by :func:`fewrel_text`.

    Raises:
        ValueError: a malformed instance (file and line named).
    """
    path = Path(path)
    split = path.stem
    domain = split.removeprefix("val_").removeprefix("train_")
    rows = TextRows(path)
    for relation, item, line in _json_object_of_arrays(path):
        ok = (isinstance(item, dict) and isinstance(item.get("tokens"), list)
              and item["tokens"] and all(isinstance(t, str) for t in item["tokens"]))
        for key in ("h", "t"):
            ent = item.get(key) if isinstance(item, dict) else None
            ok = ok and isinstance(ent, list) and len(ent) >= 1 and isinstance(ent[0], str)
        if not ok:
            raise ValueError(f"{path}, line {line}: a FewRel instance of {relation!r} must be "
                             "{\"tokens\": [str, ...], \"h\": [name, id, positions], \"t\": "
                             f"[...]}}, got {str(item)[:80]}")
        rows.texts.append(fewrel_text(item["tokens"], item["h"][0], item["t"][0]))
        rows.labels.append(relation)
        rows.splits.append(split)
    rows.domains = {label: domain for label in rows.labels}
    return rows


# -- a user's own files: labelled examples and new texts ------------------------------------------
#: File types :func:`read_text_file` reads.
TEXT_FILE_SUFFIXES = (".tsv", ".txt", ".csv", ".jsonl")


def _text_row(rows: TextRows, text: str, label: str, line: int, labelled: bool,
              where: str) -> None:
    if not text.strip():
        raise ValueError(f"{where}: empty text")
    if labelled and not label.strip():
        raise ValueError(f"{where}: empty label")
    rows.texts.append(text)
    rows.labels.append(label.strip())
    rows.splits.append(rows.path.stem)
    rows.lines.append(line)


def read_text_file(path: str | Path, labelled: bool = True) -> TextRows:
    """Read a user's file of texts: labelled examples (``labelled=True``) or texts to classify.

    ==========  ===========================================  =================================
    suffix      labelled                                     unlabelled
    ==========  ===========================================  =================================
    ``.tsv``    ``label<TAB>text`` per line                  the same (labels kept, not needed)
    ``.txt``    ``label<TAB>text`` per line                  one text per line
    ``.csv``    a header with the columns ``label`` and      a ``text`` column (``label``
                ``text`` (others ignored)                    optional)
    ``.jsonl``  one object ``{"label": ..., "text": ...}``   ``{"text": ...}`` (``"label"``
                per line (other keys ignored)                optional)
    ==========  ===========================================  =================================

    Blank lines are skipped; a ``.tsv`` / ``.txt`` first line ``label<TAB>text`` is a header.
    The text of a ``label<TAB>text`` line is everything after the first tab. Rows keep their
    file order; ``lines`` holds the line of each (for a ``.csv`` row, the line it ends on).
    Texts without a label get the label ``""``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: an unknown suffix, a missing tab, column or key, an empty label or text,
            invalid JSON, or no text at all; the message names the file and the line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (or not a file)")
    suffix = path.suffix.lower()
    if suffix not in TEXT_FILE_SUFFIXES:
        raise ValueError(f"{path}: unknown text file type {path.suffix!r}; expected .tsv or .txt "
                         "(label<TAB>text per line" + ("" if labelled else "; .txt: one text per "
                         "line") + "), .csv (columns label, text) or .jsonl ({\"label\", "
                         "\"text\"} per line)")
    try:
        content = path.read_text(encoding="utf-8-sig")  # a byte-order mark is dropped
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path}: not UTF-8 text (byte {exc.start})") from exc
    rows = TextRows(path)
    if suffix == ".csv":
        _read_text_csv(rows, content, labelled)
    else:
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}, line {number}"
            if suffix == ".jsonl":
                _read_text_json(rows, line, number, labelled, where)
            elif suffix == ".txt" and not labelled:
                _text_row(rows, line, "", number, False, where)
            else:
                if "\t" not in line:
                    raise ValueError(f"{where}: expected label<TAB>text, found no tab in "
                                     f"{line[:60]!r}")
                label, text = line.split("\t", 1)
                if not rows.texts and label.strip() == "label" and text.strip() == "text":
                    continue  # a header
                _text_row(rows, text, label, number, labelled, where)
    if not rows.texts:
        raise ValueError(f"{path}: no texts in the file")
    return rows


def _read_text_json(rows: TextRows, line: str, number: int, labelled: bool, where: str) -> None:
    try:
        item = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg})") from exc
    needed = ("label", "text") if labelled else ("text",)
    if not isinstance(item, dict) or any(not isinstance(item.get(k), str) for k in needed):
        what = f"keys {sorted(item)}" if isinstance(item, dict) else type(item).__name__
        raise ValueError(f"{where}: expected an object with the string"
                         f"{'s' if labelled else ''} {' and '.join(map(repr, needed))}, got "
                         f"{what}")
    label = item.get("label", "")
    if not isinstance(label, str):
        raise ValueError(f"{where}: 'label' must be a string, got {type(label).__name__}")
    _text_row(rows, item["text"], label, number, labelled, where)


def _read_text_csv(rows: TextRows, content: str, labelled: bool) -> None:
    path = rows.path
    reader = csv.reader(io.StringIO(content, newline=""))
    try:
        header = next(reader, None)
        while header is not None and not any(h.strip() for h in header):
            header = next(reader, None)  # blank lines before the header
        needed = ("label", "text") if labelled else ("text",)
        columns = [h.strip() for h in header or []]
        if any(c not in columns for c in needed):
            raise ValueError(f"{path}, line {reader.line_num}: expected a header with the "
                             f"column{'s' if labelled else ''} {' and '.join(map(repr, needed))}"
                             f", got {columns}")
        t = columns.index("text")
        lab = columns.index("label") if "label" in columns else None
        for record in reader:
            where = f"{path}, line {reader.line_num}"
            if not any(v.strip() for v in record):
                continue
            if len(record) != len(columns):
                raise ValueError(f"{where}: expected {len(columns)} fields ({','.join(columns)})"
                                 f", got {len(record)}")
            _text_row(rows, record[t], record[lab] if lab is not None else "",
                      reader.line_num, labelled, where)
    except csv.Error as exc:
        raise ValueError(f"{path}, line {reader.line_num}: {exc}") from exc


# -- tokens ------------------------------------------------------------------------------------
def tokenize(text: str) -> list[str]:
    """Lower-cased word and punctuation tokens (``\\w+|[^\\w\\s]``)."""
    return _TOKEN.findall(text.lower())


def build_vocab(texts: Sequence[str], max_size: int = 20000, min_count: int = 1) -> list[str]:
    """The most frequent tokens of ``texts`` (ties in alphabetical order), at most ``max_size``
    of those seen ``min_count`` times or more. Token ``i`` of the list gets id ``i + 2``
    (``0`` = padding, ``1`` = out of vocabulary)."""
    counts = Counter(tok for text in texts for tok in tokenize(text))
    words = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return words[:max_size]


def save_vocab(vocab: Sequence[str], path: str | Path) -> None:
    """Write a vocabulary, one token per line, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{w}\n" for w in vocab), encoding="utf-8")


def load_vocab(vocab: str | Path | Sequence[str]) -> list[str]:
    """A vocabulary given as a list of tokens or a file with one token per line."""
    if isinstance(vocab, (str, Path)):
        path = Path(vocab)
        if not path.is_file():
            raise FileNotFoundError(f"vocabulary file {path} not found")
        return [w for w in path.read_text(encoding="utf-8").split("\n") if w]
    return list(vocab)


def encode_tokens(texts: Sequence[str], vocab: Sequence[str], max_len: int) -> Tensor:
    """Token ids ``[M, max_len]`` long: the first ``max_len`` tokens of each text, right-padded
    with :data:`PAD`; unknown tokens are :data:`UNK`."""
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, got {max_len}")
    index = {w: i + 2 for i, w in enumerate(vocab)}
    out = torch.full((len(texts), max_len), PAD, dtype=torch.long)
    for row, text in enumerate(texts):
        ids = [index.get(tok, UNK) for tok in tokenize(text)[:max_len]]
        if ids:
            out[row, :len(ids)] = torch.tensor(ids)
    return out


def wordpiece_ids(texts: Sequence[str], max_len: int) -> Tensor:
    """all-MiniLM-L6-v2's WordPiece ids ``[M, max_len]`` long of ``texts``: ``[CLS]`` tokens
    ``[SEP]``, truncated to ``max_len`` ids and right-padded with ``0`` (the tokenizer's
    ``[PAD]``), as the ``minilm`` backbone reads them.

    Raises:
        ImportError: the ``relgraph[text]`` extra is missing (the message says what to install).
        ValueError: ``max_len`` < 3 (no room for a token between ``[CLS]`` and ``[SEP]``).
    """
    if max_len < 3:
        raise ValueError(f"max_len must be >= 3 for WordPiece ids ([CLS] text [SEP]), got "
                         f"{max_len}")
    from relgraph.backbones.minilm import minilm_tokenizer

    tokenizer = minilm_tokenizer()
    if not texts:
        return torch.zeros(0, max_len, dtype=torch.long)
    ids = tokenizer(list(texts), padding="max_length", truncation=True, max_length=max_len,
                    return_tensors="pt")["input_ids"]
    return ids.long()


# -- pretrained features, cached ---------------------------------------------------------------
def text_features(texts: Sequence[str], source: Path, encoder: str = "minilm",
                  cache: str | Path | None = None, progress: bool = True,
                  batch_size: int = 64) -> Tensor:
    """Features ``[M, d]`` of all ``texts`` of the data file ``source``, cached on disk.

    The cache file is keyed by the sha256 of ``source``, the encoder (with its weights' hash)
    and the number of texts; it is written atomically, so an interrupted run leaves no partial
    cache. A cache file that does not match is recomputed.

    Args:
        texts: every text of ``source`` (in a fixed order).
        source: the data file the texts come from.
        encoder: ``"minilm"``.
        cache: the cache folder; default ``<relgraph cache>/text``.
        progress: show a progress bar while encoding.
        batch_size: texts per encoder call.
    """
    if encoder != "minilm":
        raise ValueError(f"text_features: unknown encoder {encoder!r}; expected 'minilm'")
    from relgraph.backbones.minilm import MINILM_ID, MiniLMEncoder

    folder = Path(cache) if cache is not None else cache_dir() / "text"
    digest = hashlib.sha256()
    digest.update(file_sha256(source).encode())
    digest.update("\0".join(texts).encode("utf-8"))
    key = f"{source.stem}-{digest.hexdigest()[:16]}-{MINILM_ID}.pt"
    path = folder / key
    if path.is_file():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            feats = saved["features"]
            if isinstance(feats, Tensor) and feats.shape[0] == len(texts):
                return feats
        except Exception:  # noqa: BLE001  a damaged cache file is recomputed
            pass
    model = MiniLMEncoder()
    feats = model.encode(list(texts), batch_size=batch_size, progress=progress,
                         desc=f"encode {source.name}")
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save({"features": feats, "source": str(source), "encoder": MINILM_ID}, tmp)
    return feats


# -- the dataset -------------------------------------------------------------------------------
class TextDataset(FewShotDataset):
    """Texts with their intents / relations, as pretrained features or token ids.

    Args:
        rows: every row of the data file (as a reader returns them).
        split: keep the rows of these splits (``None``: all).
        encoder: ``"minilm"`` (features ``[384]``), ``"tokens"`` (ids ``[max_len]`` of the
            dataset's own vocabulary) or ``"wordpiece"`` (MiniLM's ids ``[max_len]``).
        name: the dataset's registered name (recorded in ``preprocessing``).
        cache: folder of the feature cache (default ``<relgraph cache>/text``).
        max_len: tokens kept per text (``encoder="tokens"`` or ``"wordpiece"``).
        vocab: a vocabulary (list or file) for ``encoder="tokens"``; default: built from the
            rows of ``vocab_split`` whose class is in ``vocab_alphabets`` / ``vocab_classes``.
        vocab_split: the split the vocabulary is built on (default ``"train"`` when the file
            has it, else all rows).
        vocab_alphabets, vocab_classes: the training classes the vocabulary is built on
            (default: the ``classes`` kept, else all); give the training domains (this
            dataset's alphabets: ``class_alphabets``, else the domains) or intents so that no
            word of a test class leaks into the encoder.
        max_vocab: the most frequent tokens kept.
        progress: a progress bar while computing features (once per file).
        classes: keep only these classes (names; default all), e.g. the training intents.
        class_alphabets: ``class name -> alphabet``, replacing the domains (e.g. to mark
            training and validation intents for ``data.val_alphabets``).

    Attributes:
        texts (list[str]): ``[N]`` the texts of the dataset's rows.
    """

    def __init__(self, rows: TextRows, split: str | Sequence[str] | None = None,
                 encoder: str = "minilm", name: str = "text", cache: str | Path | None = None,
                 max_len: int = 32, vocab: str | Path | Sequence[str] | None = None,
                 vocab_split: str | None = None, vocab_alphabets: Sequence[str] | None = None,
                 vocab_classes: Sequence[str] | None = None, max_vocab: int = 20000,
                 progress: bool = True, classes: Sequence[str] | None = None,
                 class_alphabets: dict[str, str] | None = None) -> None:
        if encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {', '.join(ENCODERS)}, got {encoder!r}")
        available = list(dict.fromkeys(rows.splits))
        if split is not None:
            wanted = [split] if isinstance(split, str) else list(split)
            missing = [s for s in wanted if s not in available]
            if missing:
                raise ValueError(f"{rows.path}: unknown split {missing[0]!r}; this file has "
                                 f"{', '.join(available)}")
            keep = [i for i, s in enumerate(rows.splits) if s in set(wanted)]
        else:
            keep = list(range(len(rows.texts)))
        if classes is not None:
            unknown = sorted(set(classes) - set(rows.labels))
            if unknown:
                raise ValueError(f"{rows.path}: unknown class(es) {unknown[:5]}")
            wanted_classes = set(classes)
            keep = [i for i in keep if rows.labels[i] in wanted_classes]
        labels = [rows.labels[i] for i in keep]
        names = sorted(set(labels))
        index = {n: c for c, n in enumerate(names)}
        groups = rows.domains
        if class_alphabets is not None:
            missing = [n for n in names if n not in class_alphabets]
            if missing:
                raise ValueError(f"class_alphabets has no entry for class(es) {missing[:5]}")
            groups = class_alphabets
        super().__init__([index[lab] for lab in labels], names,
                         [groups.get(n, "") for n in names],
                         {"dataset": name, "inputs": "features" if encoder == "minilm"
                          else "tokens", "encoder": encoder})
        self.rows = rows
        self.row_ids = torch.tensor(keep, dtype=torch.long)
        self.texts = [rows.texts[i] for i in keep]
        self.encoder = encoder
        self.cache = cache
        self.progress = progress
        self._inputs: Tensor | None = None
        if encoder == "tokens":
            if vocab is None:
                # the alphabets are this dataset's (class_alphabets, else the domains), and
                # classes left out by ``classes`` give no word (unless vocab_classes names them)
                if vocab_classes is None and classes is not None:
                    vocab_classes = list(classes)
                vocab = self._build_vocab(vocab_split, vocab_alphabets, vocab_classes,
                                          max_vocab, groups)
            self.vocab = load_vocab(vocab)
            self.max_len = int(max_len)
            # the vocabulary travels in checkpoints, so evaluation reads texts with the same ids
            self.preprocessing.update(
                vocab_size=len(self.vocab) + 2, max_len=self.max_len,
                vocab_sha256=hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()[:16],
                tokenizer="lower-case \\w+|[^\\w\\s], 0=pad 1=unk, truncate then right-pad",
                vocab=list(self.vocab))
        elif encoder == "wordpiece":
            from relgraph.backbones.minilm import MINILM_ID

            self.max_len = int(max_len)
            if self.max_len < 3:
                raise ValueError(f"max_len must be >= 3 for WordPiece ids, got {max_len}")
            self.preprocessing.update(max_len=self.max_len, tokenizer=MINILM_ID)
        else:
            self.preprocessing.update(feature_shape=[384])

    def _build_vocab(self, vocab_split: str | None, alphabets: Sequence[str] | None,
                     classes: Sequence[str] | None, size: int,
                     groups: dict[str, str]) -> list[str]:
        """The vocabulary of the rows of ``vocab_split`` whose class is in ``classes`` and
        whose alphabet (``groups``: class -> alphabet) is in ``alphabets``."""
        rows = self.rows
        if vocab_split is None and "train" in rows.splits:
            vocab_split = "train"
        allowed_alphabets = set(alphabets) if alphabets is not None else None
        if allowed_alphabets is not None:
            unknown = sorted(allowed_alphabets - set(groups.values()))
            if unknown:
                raise ValueError(f"vocab_alphabets: unknown alphabet(s) {unknown[:5]}; this "
                                 f"dataset's are {sorted(set(groups.values()))[:10]}")
        allowed_classes = set(classes) if classes is not None else None
        if allowed_classes is not None:
            unknown = sorted(allowed_classes - set(rows.labels))
            if unknown:
                raise ValueError(f"vocab_classes: unknown class(es) {unknown[:5]}")
        texts = []
        for text, label, split in zip(rows.texts, rows.labels, rows.splits, strict=True):
            if vocab_split is not None and split != vocab_split:
                continue
            if allowed_alphabets is not None and groups.get(label, "") \
                    not in allowed_alphabets:
                continue
            if allowed_classes is not None and label not in allowed_classes:
                continue
            texts.append(text)
        if not texts:
            raise ValueError("no text to build the vocabulary from (check vocab_split, "
                             "vocab_alphabets, vocab_classes)")
        return build_vocab(texts, size)

    def inputs(self) -> Tensor:
        """All items ``[N, 384]`` float (features) or ``[N, max_len]`` long (token ids);
        computed (or read from the cache) on first use."""
        if self._inputs is None:
            if self.encoder == "tokens":
                self._inputs = encode_tokens(self.texts, self.vocab, self.max_len)
            elif self.encoder == "wordpiece":
                self._inputs = wordpiece_ids(self.texts, self.max_len)
            else:
                feats = text_features(self.rows.texts, self.rows.path, cache=self.cache,
                                      progress=self.progress)
                self._inputs = feats[self.row_ids].float()
        return self._inputs

    def load(self, index: int) -> Tensor:
        return self.inputs()[int(index)]

    def get_batch(self, indices: Tensor) -> Tensor:
        return self.inputs()[indices.reshape(-1)]


@register_dataset("clinc150")
def _clinc150(roots: list[str], split: str | None = None, include_oos: bool = False,
              encoder: str = "minilm", cache: str | None = None, max_len: int = 32,
              vocab: str | list[str] | None = None, vocab_split: str | None = None,
              vocab_alphabets: list[str] | None = None, vocab_classes: list[str] | None = None,
              max_vocab: int = 20000, progress: bool = True,
              classes: list[str] | None = None, class_alphabets: dict[str, str] | None = None
              ) -> TextDataset:
    """CLINC150 (Larson et al. 2019) from ``data_full.json``: 150 intents in 10 domains, 100
    train / 20 val / 30 test utterances each; ``split`` = ``train`` / ``val`` / ``test``
    (default all three); ``include_oos`` adds the out-of-scope rows as class ``oos``."""
    path = _find_file(roots, ["data_full.json"], "clinc150")
    return TextDataset(read_clinc150(path, include_oos), split, encoder, "clinc150", cache,
                       max_len, vocab, vocab_split, vocab_alphabets, vocab_classes, max_vocab,
                       progress, classes,
                       class_alphabets)


@register_dataset("banking77")
def _banking77(roots: list[str], split: str | None = None, encoder: str = "minilm",
               cache: str | None = None, max_len: int = 32,
               vocab: str | list[str] | None = None, vocab_split: str | None = None,
               vocab_alphabets: list[str] | None = None,
               vocab_classes: list[str] | None = None, max_vocab: int = 20000,
               progress: bool = True, classes: list[str] | None = None,
               class_alphabets: dict[str, str] | None = None) -> TextDataset:
    """Banking77 (Casanueva et al. 2020) from ``train.csv`` and ``test.csv``: 77 intents,
    10,003 + 3,080 queries; ``split`` = ``train`` / ``test`` (default both).

    The features cache is keyed by ``train.csv`` and both files' texts."""
    if len(roots) != 1:
        raise ValueError(f"the banking77 dataset needs exactly one --root (the folder holding "
                         f"train.csv and test.csv), got {len(roots)}")
    root = Path(roots[0])
    if not root.is_dir():
        raise FileNotFoundError(f"{root} not found (banking77: the folder holding train.csv "
                                "and test.csv)")
    paths = {s: root / f"{s}.csv" for s in ("train", "test") if (root / f"{s}.csv").is_file()}
    if not paths:
        raise FileNotFoundError(f"{root} holds neither train.csv nor test.csv (banking77)")
    return TextDataset(read_banking77(paths), split, encoder, "banking77", cache, max_len,
                       vocab, vocab_split, vocab_alphabets, vocab_classes, max_vocab, progress,
                       classes, class_alphabets)


@register_dataset("fewrel")
def _fewrel(roots: list[str], split: str = "val_wiki", encoder: str = "minilm",
            cache: str | None = None, max_len: int = 64,
            vocab: str | list[str] | None = None, vocab_split: str | None = None,
            vocab_alphabets: list[str] | None = None, vocab_classes: list[str] | None = None,
            max_vocab: int = 20000, progress: bool = True,
            classes: list[str] | None = None, class_alphabets: dict[str, str] | None = None
            ) -> TextDataset:
    """FewRel (Han et al. 2018; Gao et al. 2019 for PubMed): relations as classes, from the
    file ``<split>.json`` in the root folder (``val_wiki``: 16 relations x 700,
    ``val_pubmed``: 10 x 100), or the file given as root."""
    if len(roots) == 1 and Path(roots[0]).is_file():
        path = Path(roots[0])
    else:
        path = _find_file(roots, [f"{split}.json"], "fewrel")
    return TextDataset(read_fewrel(path), None, encoder, "fewrel", cache, max_len, vocab,
                       vocab_split, vocab_alphabets, vocab_classes, max_vocab, progress,
                       classes, class_alphabets)
