"""Write the variant configs of a validation sweep (deltas on the committed configs).

Each variant is a committed config with a few keys changed. The sweeps choose recipes on
validation data only (held-out training characters or background alphabets); the test
alphabets are never touched here.

Usage (from the project root)::

    python experiments/sweeps/variants.py small1 OUT_DIR      # GNN / edge_gnn read-outs
    python experiments/sweeps/variants.py challenge OUT_DIR   # Omniglot-challenge recipes
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
PAPER_GNN = {"metric_readout": False}
PAPER_EDGE = {"edge_init": "uniform"}
STRONG = {"rotate": 20, "scale": 0.2, "shear": 20, "translate": 0.15}
GNN_STEPS = 1500  # the gnn sweep's length (the committed config was cut to 500 steps after it)

# name: (base config, method_args delta, data delta, train delta, backbone_args)
SWEEPS: dict[str, dict[str, tuple]] = {
    "small1": {
        # round 1
        "gnn_base": ("omniglot_small1_gnn", PAPER_GNN, {}, {"backbone_lr_scale": 1.0}, None),
        "gnn_mr": ("omniglot_small1_gnn", {}, {}, {"backbone_lr_scale": 1.0}, None),
        "gnn_mr_bb01": ("omniglot_small1_gnn", {}, {}, {}, None),
        "gnn_mr_bb0": ("omniglot_small1_gnn", {}, {}, {"backbone_lr_scale": 0.0}, None),
        "gnn_mr_dist": ("omniglot_small1_gnn", {"distance_bias": True}, {},
                        {"backbone_lr_scale": 1.0}, None),
        "gnn_mr_w20": ("omniglot_small1_gnn", {}, {},
                       {"backbone_lr_scale": 1.0, "ways": 20, "episodes_per_batch": 3}, None),
        "gnn_mr_lr2": ("omniglot_small1_gnn", {}, {},
                       {"backbone_lr_scale": 1.0, "lr": 0.0002}, None),
        # round 2
        "gnn_mr_bb01_s1": ("omniglot_small1_gnn", {}, {}, {"seed": 1}, None),
        "gnn_mr_bb003": ("omniglot_small1_gnn", {}, {}, {"backbone_lr_scale": 0.03}, None),
        "gnn_mr_bb01_w20": ("omniglot_small1_gnn", {}, {},
                            {"ways": 20, "episodes_per_batch": 3}, None),
        "gnn_mr_lr1e3_bb005": ("omniglot_small1_gnn", {}, {},
                               {"backbone_lr_scale": 0.05, "lr": 0.001}, None),
        "eg_base": ("omniglot_small1_edge_gnn", PAPER_EDGE, {}, {}, None),
        "eg_metric": ("omniglot_small1_edge_gnn", {}, {}, {}, None),
        "eg_metric_bb01": ("omniglot_small1_edge_gnn", {}, {}, {"backbone_lr_scale": 0.1}, None),
        "eg_metric_bb0": ("omniglot_small1_edge_gnn", {}, {}, {"backbone_lr_scale": 0.0}, None),
    },
    "challenge": {
        "F1_base": ("omniglot_challenge_full", {}, {}, {}, None),
        "F2_px42": ("omniglot_challenge_full", {}, {"image_size": 42},
                    {"steps": 7000, "val_every": 500}, None),
        "F3_h96": ("omniglot_challenge_full", {}, {}, {"steps": 8000, "val_every": 500},
                   {"hidden": 96}),
        "F4_w60": ("omniglot_challenge_full", {}, {}, {"ways": 60, "steps": 11000}, None),
        "F5_strong": ("omniglot_challenge_full", {}, {"augment": STRONG}, {}, None),
        "F6_px42_strong": ("omniglot_challenge_full", {}, {"image_size": 42, "augment": STRONG},
                           {"steps": 7000, "val_every": 500}, None),
        "M1_base": ("omniglot_challenge_minimal", {}, {}, {}, None),
        "M2_px42": ("omniglot_challenge_minimal", {}, {"image_size": 42}, {"steps": 4500}, None),
        "M3_strong": ("omniglot_challenge_minimal", {}, {"augment": STRONG}, {}, None),
    },
}


def write_variants(sweep: str, out: Path) -> list[Path]:
    """Write the configs of ``sweep`` into ``out``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, (base, method_args, data, train, backbone_args) in SWEEPS[sweep].items():
        config = yaml.safe_load((CONFIGS / f"{base}.yaml").read_text())
        config.setdefault("method_args", {}).update(method_args)
        config["data"].update(data)
        if base == "omniglot_small1_gnn":
            config["train"]["steps"] = GNN_STEPS
        config["train"].update(train)
        if backbone_args:
            config["backbone_args"] = backbone_args
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", choices=sorted(SWEEPS))
    parser.add_argument("out", type=Path)
    args = parser.parse_args()
    for path in write_variants(args.sweep, args.out):
        print(path)


if __name__ == "__main__":
    main()
