"""Fine-tuning the pretrained sentence encoder episodically on CPU (issue 20, item c).

all-MiniLM-L6-v2 becomes the trainable ``minilm`` backbone (inputs: its WordPiece ids,
``encoder="wordpiece"``) under a ProtoNet head, trained with :func:`relgraph.engine.train` on
the training classes of protocol 1 of ``experiments/text.py`` (same seeded splits,
``experiments/configs/text_splits.json``), validated on its validation classes, and tested
on the same 1,000 test episodes (seed 0) as the frozen features there: paired per-episode
differences to frozen MiniLM + ProtoNet. Small budgets on purpose (few steps, two episodes
per step); the cost is reported.

The head for fine-tuning is ProtoNet with the cosine distance and a learned scale (init 10):
on unit vectors the squared Euclidean logits span only [-4, 0], too flat a softmax to learn
from. The frozen reference is evaluated with both heads (text.md lists the Euclidean one).

Model selection uses the validation classes only: every ``--val-every`` steps the trainer
scores 200 fixed validation episodes and keeps the best checkpoint; the frozen encoder's
validation accuracy (step 0, the same episodes) is measured too, and when no fine-tuned
checkpoint beats it the report says so (the fine-tuned number is still reported).

Run (one thread):

    OMP_NUM_THREADS=1 python experiments/text_finetune.py --data ../shared/data/text
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from text import QUERIES, benchmarks, fmt, make_splits, paired, train_data  # noqa: E402

from relgraph.data import build_dataset  # noqa: E402
from relgraph.engine.config import Config  # noqa: E402
from relgraph.engine.evaluate import confidence_interval, episode_accuracies, evaluate  # noqa: E402
from relgraph.engine.trainer import VAL_SEED, build_datasets, build_model, load_model, train  # noqa: E402
from relgraph.methods import build_method  # noqa: E402
from relgraph.utils import atomic_write_text  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: WordPiece ids kept per text (FewRel sentences are longer).
MAX_LEN = {"clinc150": 32, "banking77": 48, "fewrel": 64}


def finetune_config(spec: tuple, shots: int, args: argparse.Namespace) -> Config:
    """The training config: ``minilm`` + cosine ProtoNet on the benchmark's training classes,
    validated on its validation classes (text.py's :func:`train_data`)."""
    data = train_data(spec, {"encoder": "wordpiece", "max_len": MAX_LEN[spec[0]],
                             "progress": False})
    backbone_args = {} if args.train_layers is None else {"train_layers": args.train_layers}
    return Config.from_dict({
        "method": "protonet", "method_args": {"distance": "cosine", "learn_scale": True},
        "backbone": "minilm", "backbone_args": backbone_args, "data": data,
        "train": {"ways": 5, "shots": shots, "queries": args.queries,
                  "episodes_per_batch": args.episodes_per_batch, "steps": args.steps,
                  "val_every": args.val_every, "val_episodes": args.val_episodes,
                  "lr": args.lr, "scheduler": "none", "seed": 0, "device": "cpu",
                  "patience": 0},
        "eval": {"ways": 5, "shots": shots, "queries": 10},
    })


def frozen_val(config: Config) -> dict[str, Any]:
    """Validation accuracy of the untrained (pretrained, frozen) model on the trainer's
    validation episodes: the step-0 point of the learning curve."""
    torch.manual_seed(0)
    train_ds, val_ds = build_datasets(config.data)
    model = build_model(config, train_ds.preprocessing, train_ds.num_classes).eval()
    v = config.eval
    res = evaluate(model, val_ds, v.ways, v.shots, v.queries, config.train.val_episodes,
                   seed=VAL_SEED)
    return {"val_acc": res["accuracy"], "val_ci95": res["ci95"]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "text"))
    p.add_argument("--episodes", type=int, default=1000, help="test episodes")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--val-episodes", type=int, default=200)
    p.add_argument("--episodes-per-batch", type=int, default=2)
    p.add_argument("--queries", type=int, default=5, help="queries per class in training")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument("--train-layers", type=int, default=None,
                   help="fine-tune only the top N transformer layers (default: all)")
    p.add_argument("--shots", default="1,5")
    p.add_argument("--only", help="comma-separated benchmarks (clinc150, banking77, fewrel)")
    p.add_argument("--work", default=str(ROOT / "runs" / "text_finetune"))
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "text_finetune.md"))
    p.add_argument("--note", default="", help="a line about the machine's load, for the page")
    p.add_argument("--history", default="",
                   help="other evaluations on these test classes (the page lists every one)")
    p.add_argument("--table-only", action="store_true",
                   help="rewrite the page from its JSON (with --note: replace the note)")
    args = p.parse_args(argv)
    if args.table_only:
        out = Path(args.out)
        results = json.loads(out.with_suffix(".json").read_text())
        if args.note:
            results["note"] = args.note
        if args.history:
            results["history"] = args.history
            atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
        atomic_write_text(out, report(results))
        return 0
    torch.set_num_threads(1)
    data, work, out = Path(args.data), Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 python experiments/text_finetune.py " + " ".join(
        argv if argv is not None else sys.argv[1:])
    started = time.time()
    splits = make_splits(data)
    benches = {k: v for k, v in benchmarks(data, splits).items()
               if not args.only
               or any(o.strip().lower() in k.lower() for o in args.only.split(","))}
    results: dict[str, Any] = {"command": command, "args": vars(args), "runs": {},
                               "note": args.note}
    for bench, b in benches.items():
        name, root, _, _, test_opts = b["tokens"]
        opts = {k: v for k, v in test_opts.items() if k != "alphabets"}
        test_ids = build_dataset(name, root, alphabets=test_opts.get("alphabets"),
                                 encoder="wordpiece", max_len=MAX_LEN[name], progress=False,
                                 **opts)
        assert test_ids.targets.tolist() == b["test"].targets.tolist()
        ids = test_ids.get_batch(torch.arange(len(test_ids)))
        truncated = float((ids[:, -1] != 0).float().mean())
        for shots in (int(s) for s in args.shots.split(",")):
            key = f"{bench} {shots}-shot"
            config = finetune_config(b["tokens"], shots, args)
            t0 = time.time()
            step0 = frozen_val(config)
            frozen_val_s = time.time() - t0
            accs: dict[str, torch.Tensor] = {}
            for distance in ("euclidean", "cosine"):
                head = build_method("protonet", None, embed_dim=384, distance=distance)
                accs[f"frozen {distance}"] = episode_accuracies(
                    head, b["test"], 5, shots, QUERIES, args.episodes, seed=0)
            run = work / f"minilm_{name}_{shots}shot"
            t0 = time.time()
            result = train(config, run, resume=False, progress=False)
            train_s = time.time() - t0
            model, _ = load_model(run / "checkpoint.pt")
            t0 = time.time()
            accs["fine-tuned cosine"] = episode_accuracies(model, test_ids, 5, shots, QUERIES,
                                                           args.episodes, seed=0)
            eval_s = time.time() - t0
            history = [{"step": 0, **step0}] + [
                {"step": r["step"], "val_acc": r["val_acc"], "val_ci95": r["val_ci95"],
                 "train_loss": r["train_loss"], "time_s": r["time_s"]}
                for r in result.get("history", []) if r.get("val_acc") is not None]
            best = result.get("best") or {}
            results["runs"][key] = {
                "accuracy": {h: {"text": fmt(a), "mean": 100 * float(a.mean()),
                                 "ci95": 100 * confidence_interval(a)} for h, a in accs.items()},
                "vs frozen cosine": paired(accs["fine-tuned cosine"], accs["frozen cosine"]),
                "vs frozen euclidean": paired(accs["fine-tuned cosine"],
                                              accs["frozen euclidean"]),
                "validation": history, "best": best,
                "beats frozen on validation": bool(best.get("val_acc") is not None
                                                   and best["val_acc"] > step0["val_acc"]),
                "train_s": round(train_s, 1), "frozen_val_s": round(frozen_val_s, 1),
                "test_eval_s": round(eval_s, 1), "test_texts_truncated": round(truncated, 4),
                "train_classes": b["train"].num_classes, "test_classes": b["test"].num_classes,
            }
            atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    results["seconds"] = round(time.time() - started, 1)
    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    atomic_write_text(out, report(results))
    return 0


def report(results: dict[str, Any]) -> str:
    """The markdown page of ``results``."""
    a = results["args"]
    layers = "all 6 transformer layers and the embeddings" if a["train_layers"] is None \
        else f"the top {a['train_layers']} of 6 transformer layers (embeddings and the rest frozen)"
    lines = [
        "# Fine-tuning MiniLM episodically on CPU (measured)", "",
        "Written by `experiments/text_finetune.py`; every number comes from one run of", "",
        f"    {results['command']}", "",
        f"(1 CPU thread; total {results['seconds']} s). {results.get('note', '')} Raw "
        "numbers: `experiments/results/text_finetune.json`.", "",
        "Protocol 1 of `results/text.md` (same seeded class splits, the same 1,000 test "
        "episodes of 5-way with 15 queries per class, seed 0): all-MiniLM-L6-v2 as the "
        f"trainable `minilm` backbone on WordPiece ids, {layers} trained with "
        f"`relgraph.engine.train`: ProtoNet head with cosine distance and a learned scale "
        f"(init 10), Adam lr {a['lr']:g}, {a['steps']} steps of {a['episodes_per_batch']} "
        f"episodes (5-way, the tested shot, {a['queries']} queries per class), no schedule; "
        f"validation every {a['val_every']} steps on {a['val_episodes']} fixed episodes of "
        "the validation classes (5-way, 10 queries), best checkpoint kept. Step 0 is the "
        "frozen encoder on the same validation episodes. *vs frozen* is the mean paired "
        "per-episode difference on the test episodes ± 95% CI.", "",
        "| benchmark | frozen + protonet (euclidean) | frozen + protonet (cosine) | fine-tuned "
        "| vs frozen cosine | vs frozen euclidean | validation: step 0 -> best (step) | "
        "train s | test eval s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in results["runs"].items():
        acc, best, val0 = r["accuracy"], r["best"], r["validation"][0]
        lines.append(
            f"| {key} | {acc['frozen euclidean']['text']} | {acc['frozen cosine']['text']} | "
            f"{acc['fine-tuned cosine']['text']} | {r['vs frozen cosine']} | "
            f"{r['vs frozen euclidean']} | {val0['val_acc']:.2f} -> "
            f"{best.get('val_acc', float('nan')):.2f} ({best.get('step', '?')}) | "
            f"{r['train_s']} | {r['test_eval_s']} |")
    lines += ["", "Validation curves (accuracy % on the validation episodes, step: value):", ""]
    for key, r in results["runs"].items():
        curve = ", ".join(f"{h['step']}: {h['val_acc']:.2f}" for h in r["validation"])
        verdict = "beats" if r["beats frozen on validation"] else "does NOT beat"
        lines.append(f"- {key}: {curve} (the best fine-tuned checkpoint {verdict} the frozen "
                     "encoder on validation)")
    if results.get("history"):
        lines += ["", "History (every evaluation on these test classes): " + results["history"]]
    lines += ["", "Training seconds include the trainer's validations (each re-embeds the "
              "validation classes' texts with the current encoder). Test texts longer than "
              "the WordPiece limit (clinc150 32, banking77 48, fewrel 64 ids) are truncated; "
              "the frozen features use up to 256: " + ", ".join(
                  f"{k.split()[0]} {100 * r['test_texts_truncated']:.1f} % truncated"
                  for k, r in results["runs"].items() if k.endswith(" 1-shot")) + ".", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
