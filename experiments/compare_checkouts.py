"""Compare the methods of this checkout with another relgraph checkout on tiny episodes.

Runs the same script under both checkouts (each in its own process, the other one's code on
``PYTHONPATH``): every listed method is built with the same seed, trained for a few Adam steps
on fixed random image episodes (loss, logits and gradients recorded at every step), then
evaluated; the other checkout's initial weights are loaded into this one's model (old
parameter names are renamed on load), so both start from the same point. Prints, per method,
the largest absolute difference of losses, eval logits and final weights.

Used to check that a refactoring keeps every method's numbers::

    git worktree add /tmp/old <commit>
    python experiments/compare_checkouts.py /tmp/old
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = ["protonet", "matching", "matching_fce", "relation", "gnn", "gnn_transductive",
           "edge_gnn", "edge_gnn_transductive", "pyg", "gnn+metric", "edge_gnn+metric",
           "protonet+vae", "edge_gnn+gan", "relation+vae"]
EXTRA = {"gnn+metric": {"metric_readout": True, "distance_bias": True},
         "edge_gnn+metric": {"edge_init": "metric"},
         "protonet+vae": {"augment": {"hallucinator": "vae", "per_class": 2, "hidden": 16}},
         "edge_gnn+gan": {"augment": {"hallucinator": "gan", "per_class": 2, "hidden": 16,
                                      "critic": True, "weight": 0.5}},
         "relation+vae": {"augment": {"hallucinator": "vae", "per_class": 2, "hidden": 16}}}
STEPS = 3


def run(out: str, init: str | None) -> None:
    """Train and evaluate every method under the code on ``sys.path``; save to ``out``."""
    import torch

    from relgraph.backbones import build_backbone
    from relgraph.data import Episode
    from relgraph.methods import build_method

    torch.use_deterministic_algorithms(True)
    inits = torch.load(init) if init else {}
    results = {}
    for name in METHODS:
        method = name.split("+")[0]
        torch.manual_seed(0)
        backbone = build_backbone("conv4", in_channels=1, image_size=16, hidden=8,
                                  out_channels=8)
        model = build_method(method, backbone, num_classes=4, **EXTRA.get(name, {}))
        if name in inits:
            model.load_state_dict(inits[name])
        start = {k: v.clone() for k, v in model.state_dict().items()}
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        g = torch.Generator().manual_seed(1)
        losses, grads = [], []
        for _ in range(STEPS):
            n, k, q, b = 4, 2, 3, 2
            centers = torch.rand(b, n, 1, 1, 16, 16, generator=g)
            sup = (centers + 0.2 * torch.randn(b, n, k, 1, 16, 16, generator=g))
            qry = (centers + 0.2 * torch.randn(b, n, q, 1, 16, 16, generator=g))
            lab = torch.arange(n)
            ep = Episode(sup.reshape(b, n * k, 1, 16, 16), lab.repeat_interleave(k).expand(b, -1),
                         qry.reshape(b, n * q, 1, 16, 16), lab.repeat_interleave(q).expand(b, -1),
                         lab.expand(b, -1), n_way=n, k_shot=k)
            model.train()
            loss, _ = model.loss(ep)
            opt.zero_grad()
            loss.backward()
            grads.append(torch.cat([p.grad.flatten() for p in model.parameters()
                                    if p.grad is not None]))
            opt.step()
            losses.append(float(loss.detach()))
        model.eval()
        with torch.no_grad():
            logits = model(ep)
        results[name] = {"start": start, "losses": torch.tensor(losses), "grads": grads,
                         "logits": logits,
                         "weights": torch.cat([p.detach().flatten()
                                               for p in model.parameters()])}
    torch.save(results, out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("other", help="path of the other relgraph checkout")
    parser.add_argument("--run", help=argparse.SUPPRESS)
    parser.add_argument("--init", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        run(args.run, args.init)
        return 0
    here = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        other_out, this_out, init = (str(Path(tmp) / f) for f in ("a.pt", "b.pt", "init.pt"))
        env = dict(os.environ, OMP_NUM_THREADS="1")
        script = str(Path(__file__).resolve())
        subprocess.run([sys.executable, script, args.other, "--run", other_out],
                       env=dict(env, PYTHONPATH=str(Path(args.other).resolve())), check=True)
        import torch

        other = torch.load(other_out, weights_only=False)
        torch.save({k: v["start"] for k, v in other.items()}, init)
        subprocess.run([sys.executable, script, args.other, "--run", this_out, "--init", init],
                       env=dict(env, PYTHONPATH=str(here)), check=True)
        this = torch.load(this_out, weights_only=False)
    print(f"{'method':24s} {'loss':>9s} {'grads':>9s} {'logits':>9s} {'weights':>9s}")
    worst = 0.0
    for name in METHODS:
        a, b = other[name], this[name]
        diffs = [float((a["losses"] - b["losses"]).abs().max()),
                 max(float((x - y).abs().max()) for x, y in zip(a["grads"], b["grads"],
                                                                 strict=True)),
                 float((a["logits"] - b["logits"]).abs().max()),
                 float((a["weights"] - b["weights"]).abs().max())]
        worst = max(worst, *diffs)
        print(f"{name:24s} " + " ".join(f"{d:9.2e}" for d in diffs))
    print(f"largest difference: {worst:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
