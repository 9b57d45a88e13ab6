"""Few-shot text on real data: episodic unseen classes and the practitioner's setting.

Writes ``experiments/results/text.md`` (and ``text.json``) atomically. Run (one thread):

    OMP_NUM_THREADS=1 python experiments/text.py --data ../shared/data/text

Protocol 1 (episodic, unseen classes), on all-MiniLM-L6-v2 features (``relgraph[text]``):
CLINC150 intents split by domain (5 train / 2 validation / 3 test domains), Banking77 split by
intent (47 / 10 / 20), FewRel val_wiki relations for training and val_pubmed as a cross-domain
test. The split is seeded and written down in ``experiments/configs/text_splits.json`` (read back
when it exists). Test episodes are drawn from the test classes' official test rows (CLINC150,
Banking77) or all of val_pubmed: 5-way 1-shot and 5-shot, 15 queries per class, 1,000 episodes,
seed 0, the same episodes for every head (paired differences to ProtoNet, 95% CI). Heads with
parameters (gnn, edge_gnn, tpn) are trained on the training classes' features for ``--steps``
steps at the shot they are tested on; protonet and matching have none. The transfer baseline is
``baseline`` (logistic regression fitted on each episode's support features, 100 steps). The
from-scratch encoder is ``text_cnn`` + protonet trained with ``relgraph.engine.train`` on token
ids (vocabulary from the training classes' training rows), validated on the validation classes.

Protocol 2 (the practitioner's setting, Casanueva et al. 2020): all intents at once, 77-way
Banking77 and 150-way CLINC150, 5 or 10 labelled examples per intent drawn from the official
train set (3 seeded draws), scored on the official test set: nearest class mean (ProtoNet) and
logistic regression on the MiniLM features.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import torch

from relgraph.data import EpisodeSampler, FewShotDataset, build_dataset
from relgraph.data.text import build_vocab, save_vocab
from relgraph.engine.config import Config
from relgraph.engine.evaluate import confidence_interval, episode_accuracies
from relgraph.engine.trainer import load_model, train
from relgraph.meta import centre_normalise, fit_linear_head, linear_head_logits
from relgraph.methods import build_method
from relgraph.utils import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
SPLITS = ROOT / "experiments" / "configs" / "text_splits.json"
HEADS = ("protonet", "matching", "gnn", "edge_gnn", "tpn", "baseline")
TRAINED = ("gnn", "edge_gnn", "tpn")
SHOTS = (1, 5)
QUERIES = 15
DIM = 384


# -- splits ------------------------------------------------------------------------------------
def make_splits(data: Path, seed: int = 0) -> dict[str, Any]:
    """The seeded class splits, written to :data:`SPLITS` the first time, then read back."""
    if SPLITS.is_file():
        return json.loads(SPLITS.read_text())
    g = torch.Generator().manual_seed(seed)
    domains = sorted(json.loads((data / "clinc150" / "domains.json").read_text()))
    d = [domains[i] for i in torch.randperm(len(domains), generator=g).tolist()]
    intents = sorted(build_dataset("banking77", data / "banking77", split="train").class_names)
    b = [intents[i] for i in torch.randperm(len(intents), generator=g).tolist()]
    splits = {
        "seed": seed,
        "note": "written by experiments/text.py (torch.randperm with this seed over the sorted "
                "names); kept fixed in the repository",
        "clinc150_domains": {"train": sorted(d[:5]), "val": sorted(d[5:7]), "test": sorted(d[7:])},
        "banking77_intents": {"train": sorted(b[:47]), "val": sorted(b[47:57]),
                              "test": sorted(b[57:])},
        "fewrel": {"train": "val_wiki", "test": "val_pubmed"},
    }
    atomic_write_text(SPLITS, json.dumps(splits, indent=1) + "\n")
    return splits


def benchmarks(data: Path, splits: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """For each benchmark: MiniLM-feature train / test datasets and the dataset options of the
    token datasets (train, val, test) for the from-scratch encoder."""
    cd, bi = splits["clinc150_domains"], splits["banking77_intents"]
    c, b, f = data / "clinc150", data / "banking77", data / "fewrel"
    return {
        "CLINC150 (domains)": {
            "train": build_dataset("clinc150", c, split="train", alphabets=cd["train"]),
            "test": build_dataset("clinc150", c, split="test", alphabets=cd["test"]),
            "tokens": ("clinc150", c, {"split": "train", "alphabets": cd["train"]},
                       {"split": "val", "alphabets": cd["val"]},
                       {"split": "test", "alphabets": cd["test"]}),
        },
        "Banking77 (intents)": {
            "train": build_dataset("banking77", b, split="train", classes=bi["train"]),
            "test": build_dataset("banking77", b, split="test", classes=bi["test"]),
            "tokens": ("banking77", b, {"split": "train", "classes": bi["train"]},
                       {"split": "train", "classes": bi["val"]},
                       {"split": "test", "classes": bi["test"]}),
        },
        "FewRel wiki -> pubmed": {
            "train": build_dataset("fewrel", f, split="val_wiki"),
            "test": build_dataset("fewrel", f, split="val_pubmed"),
            "tokens": ("fewrel", f, {"split": "val_wiki"}, None, {"split": "val_pubmed"}),
        },
    }


# -- heads on features ---------------------------------------------------------------------------
def build_head(name: str, n_train_classes: int) -> torch.nn.Module:
    if name == "baseline":
        identity = torch.nn.Identity()
        identity.out_dim = DIM  # type: ignore[attr-defined]
        return build_method("baseline", identity, num_classes=n_train_classes)
    if name == "edge_gnn":
        return build_method(name, None, in_dim=DIM)
    return build_method(name, None, embed_dim=DIM)


def train_head(model: torch.nn.Module, ds: FewShotDataset, shots: int, steps: int,
               seed: int = 0) -> float:
    """A few hundred episodic steps (4 episodes of 5-way, ``shots`` shots, 10 queries) on
    the training classes' features, Adam 1e-3; returns the seconds taken."""
    started = time.time()
    sampler = EpisodeSampler(ds, 5, shots, 10, episodes_per_batch=4, num_batches=steps,
                             seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for step in range(steps):
        ep = sampler.episode_batch(ds, step)
        graph = model.build_graph(ep.support, ep.support_labels, ep.query, ep.n_way)
        loss, _ = model.relate_loss(graph, ep.query_labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return time.time() - started


def fmt(accs: torch.Tensor) -> str:
    return f"{100 * float(accs.mean()):.2f} ± {100 * confidence_interval(accs):.2f}"


def paired(a: torch.Tensor, b: torch.Tensor) -> str:
    d = a - b
    return f"{100 * float(d.mean()):+.2f} ± {100 * confidence_interval(d):.2f}"


def train_data(spec: tuple, options: dict[str, Any]) -> dict[str, Any]:
    """The ``data`` section of a config training on benchmark ``spec``'s training classes and
    validating on its validation classes; ``options`` are the dataset options (the encoder...),
    completed here with the class selection where the benchmark needs one."""
    name, root, train_opts, val_opts, _ = spec
    options = dict(options)
    data: dict[str, Any] = {"dataset": name, "roots": [str(root)], "image_size": None,
                            "split": train_opts["split"], "options": options}
    if "alphabets" in train_opts:  # CLINC150: validation domains
        data["alphabets"] = train_opts["alphabets"] + val_opts["alphabets"]
        data["val_alphabets"] = val_opts["alphabets"]
    elif "classes" in train_opts:  # Banking77: validation intents, marked as an alphabet
        options["classes"] = train_opts["classes"] + val_opts["classes"]
        options["class_alphabets"] = {**{c: "train" for c in train_opts["classes"]},
                                      **{c: "val" for c in val_opts["classes"]}}
        data["val_alphabets"] = ["val"]
    else:  # FewRel: 5 of the 16 val_wiki relations (relgraph's fixed seed) validate
        data["val_fraction"] = 0.32
    return data


# -- the from-scratch encoder ----------------------------------------------------------------------
def train_text_cnn(spec: tuple, train_classes: list[str], work: Path, steps: int,
                   shots: int, val_episodes: int = 200) -> tuple[Any, str, dict[str, Any] | None]:
    """Train text_cnn + protonet on token ids with :func:`relgraph.engine.train`.

    The vocabulary is built from the training classes' training rows only and written to a
    file that the test dataset reads too. Returns ``(model, vocabulary file, best validation)``.
    """
    name, root, train_opts, _, _ = spec
    vocab_texts = build_dataset(name, root, split=train_opts["split"], classes=train_classes,
                                progress=False).texts
    vocab_file = work / f"vocab_{name}.txt"
    save_vocab(build_vocab(vocab_texts), vocab_file)
    data = train_data(spec, {"encoder": "tokens", "vocab": str(vocab_file), "progress": False})
    config = Config.from_dict({
        "method": "protonet", "backbone": "text_cnn", "data": data,
        "train": {"ways": 5, "shots": shots, "queries": 10, "episodes_per_batch": 4,
                  "steps": steps, "val_every": max(1, steps // 3), "val_episodes": val_episodes,
                  "lr": 1e-3, "scheduler": "none", "seed": 0, "device": "cpu"},
        "eval": {"ways": 5, "shots": shots, "queries": 10},
    })
    out = work / f"text_cnn_{name}_{shots}shot"
    result = train(config, out, resume=False, progress=False)
    model, _ = load_model(out / "checkpoint.pt")
    return model, str(vocab_file), result.get("best")


# -- protocol 2 ------------------------------------------------------------------------------------
#: (steps, step size) of the logistic regression, chosen per draw on held-out training rows.
LOGISTIC_GRID = ((300, 1.0), (1000, 1.0), (300, 10.0), (1000, 10.0))


def logistic(xs: torch.Tensor, ys: torch.Tensor, xq: torch.Tensor, ways: int, steps: int,
             lr: float) -> torch.Tensor:
    """Multinomial logistic regression on centred, L2-normalised features: query logits."""
    s, q = centre_normalise(xs[None], xq[None])
    w, b = fit_linear_head(s, ys[None], ways, steps, lr)
    with torch.no_grad():
        return linear_head_logits(q, w, b, False, 10.0)[0]


def practitioner(data: Path, draws: int = 3) -> list[dict[str, Any]]:
    rows = []
    for name, root in (("banking77", data / "banking77"), ("clinc150", data / "clinc150")):
        tr = build_dataset(name, root, split="train")
        te = build_dataset(name, root, split="test")
        assert tr.class_names == te.class_names
        xq, yq = te.inputs(), te.targets
        for shots in (5, 10):
            for head in ("protonet (nearest class mean)", "logistic regression"):
                accs, secs, chosen = [], 0.0, []
                for draw in range(draws):
                    g = torch.Generator().manual_seed(1000 * shots + draw)
                    perms = [c[torch.randperm(len(c), generator=g)] for c in tr.class_indices()]
                    idx = torch.cat([p[:shots] for p in perms])
                    held = torch.cat([p[shots:shots + 20] for p in perms])  # for the grid
                    xs, ys = tr.inputs()[idx], tr.targets[idx]
                    t0 = time.time()
                    if head.startswith("protonet"):
                        model = build_method("protonet", None, embed_dim=DIM).eval()
                        with torch.no_grad():
                            logits = model.forward_features(xs[None], ys[None], xq[None],
                                                            tr.num_classes)[0]
                    else:
                        xh, yh = tr.inputs()[held], tr.targets[held]
                        scores = [float((logistic(xs, ys, xh, tr.num_classes, st, lr)
                                         .argmax(-1) == yh).float().mean())
                                  for st, lr in LOGISTIC_GRID]
                        st, lr = LOGISTIC_GRID[max(range(len(scores)), key=scores.__getitem__)]
                        chosen.append(f"{st} steps, lr {lr:g}")
                        logits = logistic(xs, ys, xq, tr.num_classes, st, lr)
                    secs += time.time() - t0
                    accs.append(100 * float((logits.argmax(-1) == yq).float().mean()))
                mean = sum(accs) / len(accs)
                std = math.sqrt(sum((a - mean) ** 2 for a in accs) / max(1, len(accs) - 1))
                rows.append({"dataset": name, "ways": tr.num_classes, "shots": shots,
                             "head": head, "accuracy": mean, "std": std, "draws": accs,
                             "test_queries": len(yq), "seconds": round(secs, 1),
                             "chosen": chosen})
    return rows


# -- main ------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "text"))
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--steps", type=int, default=300, help="training steps of gnn/edge_gnn/tpn")
    p.add_argument("--cnn-steps", type=int, default=600, help="training steps of text_cnn")
    p.add_argument("--work", default=str(ROOT / "runs" / "text"))
    p.add_argument("--out", default=str(ROOT / "experiments" / "results" / "text.md"))
    p.add_argument("--only", help="comma-separated benchmarks to run (debugging)")
    p.add_argument("--no-practitioner", action="store_true", help="skip protocol 2 (debugging)")
    p.add_argument("--table-only", action="store_true",
                   help="rewrite the page from its JSON (the run's own options), nothing run")
    p.add_argument("--why", help="why the page's test evaluations are run again (required "
                                 "when --out's JSON exists; its results go to the history)")
    args = p.parse_args(argv)
    if args.table_only:
        out = Path(args.out)
        results = json.loads(out.with_suffix(".json").read_text())
        for res in results["episodic"].values():  # JSON keys are strings
            res["shots"] = {int(k): v for k, v in res["shots"].items()}
        run_args = p.parse_args(shlex.split(results["command"])[3:])  # after "... text.py"
        atomic_write_text(out, report(results, run_args))
        return 0
    torch.set_num_threads(1)
    data, work, out = Path(args.data), Path(args.work), Path(args.out)
    previous = json.loads(out.with_suffix(".json").read_text()) \
        if out.with_suffix(".json").is_file() else None
    if previous is not None and not args.why:
        sys.exit(f"{out.with_suffix('.json')} already holds test results; running again "
                 "replaces them: say why with --why TEXT (they stay in its history), or "
                 "write elsewhere with --out")
    work.mkdir(parents=True, exist_ok=True)
    command = "OMP_NUM_THREADS=1 python experiments/text.py " + shlex.join(argv or sys.argv[1:])
    started = time.time()
    splits = make_splits(data)
    t0 = time.time()
    benches = {k: v for k, v in benchmarks(data, splits).items()
               if not args.only or any(o.strip() in k for o in args.only.split(","))}
    for b in benches.values():  # features from the cache (computed once per file otherwise)
        for ds in (b["train"], b["test"]):
            ds.get_batch(torch.arange(1))
    feature_secs = time.time() - t0
    results: dict[str, Any] = {"command": command, "episodic": {}, "splits": splits}
    for bench, b in benches.items():
        res: dict[str, Any] = {"train_classes": b["train"].num_classes,
                               "test_classes": b["test"].num_classes, "shots": {}}
        for shots in SHOTS:
            accs: dict[str, torch.Tensor] = {}
            secs: dict[str, float] = {}
            for head in HEADS:
                torch.manual_seed(0)
                model = build_head(head, b["train"].num_classes)
                secs[head] = train_head(model, b["train"], shots, args.steps) \
                    if head in TRAINED else 0.0
                t1 = time.time()
                accs[head] = episode_accuracies(model, b["test"], 5, shots, QUERIES,
                                                args.episodes, seed=0)
                secs[head + ":eval"] = time.time() - t1
            t1 = time.time()
            cnn, vocab, best = train_text_cnn(b["tokens"], b["train"].class_names, work,
                                              args.cnn_steps, shots, min(200, args.episodes))
            secs["text_cnn + protonet"] = time.time() - t1
            name, root, _, _, test_opts = b["tokens"]
            opts = {k: v for k, v in test_opts.items() if k != "alphabets"}
            test_tokens = build_dataset(name, root, alphabets=test_opts.get("alphabets"),
                                        encoder="tokens", vocab=vocab, progress=False,
                                        **opts)
            assert test_tokens.targets.tolist() == b["test"].targets.tolist()
            t1 = time.time()
            accs["text_cnn + protonet"] = episode_accuracies(cnn, test_tokens, 5, shots, QUERIES,
                                                             args.episodes, seed=0)
            secs["text_cnn + protonet:eval"] = time.time() - t1
            res["shots"][shots] = {
                h: {"accuracy": 100 * float(a.mean()), "ci95": 100 * confidence_interval(a),
                    "vs_protonet": paired(a, accs["protonet"]), "text": fmt(a),
                    "train_s": round(secs.get(h, 0.0), 1),
                    "eval_s": round(secs.get(h + ":eval", 0.0), 1)}
                for h, a in accs.items()}
            res["shots"][shots]["text_cnn + protonet"]["best_val"] = best
        results["episodic"][bench] = res
    results["practitioner"] = [] if args.no_practitioner else practitioner(data)
    results["seconds"] = {"total": round(time.time() - started, 1),
                          "features (cached or computed)": round(feature_secs, 1)}
    if previous is not None:  # the replaced run's test results, with the reason
        results["history"] = [*previous.pop("history", []), {**previous, "why": args.why}]
    atomic_write_text(out.with_suffix(".json"), json.dumps(results, indent=1) + "\n")
    atomic_write_text(out, report(results, args))
    return 0


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    s = results["splits"]
    lines = [
        "# Few-shot text: intents and relations (measured)",
        "",
        "Written by `experiments/text.py`; every number below comes from one run of",
        "",
        f"    {results['command']}   (from the project root)",
        "",
        f"(1 CPU thread; total {results['seconds']['total']} s, of which "
        f"{results['seconds']['features (cached or computed)']} s reading / computing MiniLM "
        "features; the MiniLM features of a data file are computed once and cached, see "
        "`docs/text.rst`). Raw numbers: `experiments/results/text.json`.",
        "",
        "## Protocol 1: episodic, unseen classes",
        "",
        f"5-way, {QUERIES} queries per class, {args.episodes} test episodes (seed 0, the same "
        "episodes for every head), accuracy % ± 95% CI; *vs protonet* is the mean paired "
        "per-episode difference to ProtoNet on the same episodes ± its 95% CI.",
        "",
        "Splits (seeded, `experiments/configs/text_splits.json`): CLINC150 train domains "
        f"{', '.join(s['clinc150_domains']['train'])}; validation "
        f"{', '.join(s['clinc150_domains']['val'])}; test "
        f"{', '.join(s['clinc150_domains']['test'])}"
        " (test episodes from the official test rows, 30 per intent). Banking77: 47 / 10 / 20 "
        "intents (train rows / train rows / official test rows). FewRel: the 16 val_wiki "
        "relations for training, the 10 val_pubmed relations (biomedical) as a cross-domain test.",
        "",
        "Heads on all-MiniLM-L6-v2 features (frozen, 384-d, unit norm): protonet and matching "
        f"have no parameters; gnn, edge_gnn, tpn were trained for {args.steps} steps (4 episodes "
        "of 5-way, the tested shot, 10 queries, Adam 1e-3) on the training classes' features; "
        "baseline = logistic regression fitted on each episode's support features (100 "
        "full-batch steps, Chen et al. 2019's linear probe). text_cnn + protonet: the "
        "from-scratch encoder (word embeddings + 1-d convolutions over token ids, vocabulary "
        f"from the training classes only), trained with `relgraph.engine.train` for "
        f"{args.cnn_steps} steps (4 episodes of 5-way, the tested shot, 10 queries, Adam 1e-3), "
        "keeping the best validation checkpoint (validation: the CLINC150 / Banking77 "
        "validation domains / intents; for FewRel 5 of the 16 val_wiki relations, so it "
        "trains on 11).",
        "",
    ]
    for bench, res in results["episodic"].items():
        lines += [f"### {bench} ({res['train_classes']} training classes, "
                  f"{res['test_classes']} test classes)", "",
                  "| head | 1-shot | vs protonet | 5-shot | vs protonet | train s (1/5-shot) |",
                  "|---|---|---|---|---|---|"]
        for h in res["shots"][1]:
            r1, r5 = res["shots"][1][h], res["shots"][5][h]
            vs1 = "—" if h == "protonet" else r1["vs_protonet"]
            vs5 = "—" if h == "protonet" else r5["vs_protonet"]
            lines.append(f"| {h} | {r1['text']} | {vs1} | {r5['text']} | {vs5} | "
                         f"{r1['train_s']} / {r5['train_s']} |")
        lines.append("")
    lines += [
        "## Protocol 2: the practitioner's setting (all intents at once)",
        "",
        "Casanueva et al. (2020): every intent with a few labelled examples from the official "
        "train set (here 3 seeded draws), scored on the whole official test set. Heads on "
        "MiniLM features: nearest class mean (ProtoNet) and multinomial logistic regression "
        "(features centred on the support mean and L2-normalised, full-batch gradient descent, "
        "`relgraph.meta.fit_linear_head`; its steps and step size chosen per draw from "
        f"{list(LOGISTIC_GRID)} by accuracy on up to 20 held-out *training* rows per intent, "
        "never on the test set). Mean ± std over the draws; seconds = fitting and scoring, "
        "all draws (the logistic head's grid included).",
        "",
        "| dataset | ways | shots | head | accuracy % | draws | chosen (logistic) | test queries "
        "| seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results["practitioner"]:
        lines.append(f"| {r['dataset']} | {r['ways']} | {r['shots']} | {r['head']} | "
                     f"{r['accuracy']:.2f} ± {r['std']:.2f} | "
                     f"{', '.join(f'{a:.2f}' for a in r['draws'])} | "
                     f"{'; '.join(r['chosen']) or '—'} | {r['test_queries']} | {r['seconds']} |")
    lines += [
        "",
        "Anchors (Casanueva et al. 2020, *Efficient Intent Detection with Dual Sentence "
        "Encoders*, Banking77 10 examples per intent): USE+ConveRT 85.19 % (the paper's "
        "Table 3, as quoted by later work; checked against those quotations, not the paper "
        "itself); BERT fine-tuned about 83 % as quoted in issue 20 (not verified). Compare with "
        "the 10-shot Banking77 rows above only as a rough reference (different encoder, our "
        "own seeded draws of the 10 examples).",
        "",
        "Fine-tuning MiniLM itself episodically (the `minilm` backbone on WordPiece ids, few "
        "steps on one CPU thread), on the same splits and test episodes as protocol 1: "
        "`results/text_finetune.md` (`experiments/text_finetune.py`).",
        "",
    ]
    for past in results.get("history", []):  # runs this page replaced, each with its reason
        lines += [f"Replaced run: `{past.get('command', '?')}` (its results are in text.json's "
                  f"history); why run again: {past.get('why', 'not recorded')}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
