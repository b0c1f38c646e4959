#!/usr/bin/python3
"""Plot one or more training runs from their metrics JSONL, overlaid (docs/multinode.md).

  tools/plot_run.py RUN_DIR [RUN_DIR ...] [-o runs.png] [--label NAME ...]

Panels: LM loss (train, and validation as markers), learning rate, gradient norm, tokens/s, and
the expert load (max/mean per MoE layer, one line per layer, logged every
logging.expert_load_interval iterations). A restarted run logs some iterations twice: the last
line for an iteration wins. RUN_DIR may also be a metrics.jsonl file.
"""
import argparse
import json
import os
import sys


def load(path):
    f = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    if not os.path.exists(f):
        sys.exit(f"plot_run: no metrics file {f}")
    train, valid = {}, {}
    with open(f) as fh:
        for n, line in enumerate(fh, 1):
            try:
                m = json.loads(line)
            except json.JSONDecodeError as e:
                sys.exit(f"plot_run: {f}:{n}: not JSON ({e})")
            if "valid_lm_loss" in m:
                valid[m["iteration"]] = m["valid_lm_loss"]
            elif "lm_loss" in m:
                train[m["iteration"]] = m
    if not train:
        sys.exit(f"plot_run: {f} has no training iterations")
    return [train[i] for i in sorted(train)], sorted(valid.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--output", default="runs.png")
    ap.add_argument("--label", action="append", help="one per run (default: the run dir's name)")
    a = ap.parse_args()
    if a.label and len(a.label) != len(a.runs):
        ap.error(f"--label given {len(a.label)} times for {len(a.runs)} runs")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(2, 3, figsize=(15, 7.5))
    ax = ax.ravel()
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, path in enumerate(a.runs):
        train, valid = load(path)
        name = a.label[k] if a.label else os.path.basename(os.path.normpath(path))
        c = colors[k % len(colors)]
        it = [m["iteration"] for m in train]
        ax[0].plot(it, [m["lm_loss"] for m in train], color=c, label=f"{name} train")
        if valid:
            ax[0].plot([i for i, _ in valid], [v for _, v in valid], "o--", color=c, ms=4,
                       label=f"{name} valid")
        ax[1].plot(it, [m["lr"] for m in train], color=c, label=name)
        ax[2].plot(it, [m["grad_norm"] for m in train], color=c, label=name)
        ax[3].plot(it, [m["tokens_per_s"] for m in train], color=c, label=name)
        load_pts = [(m["iteration"], m["expert_load_imbalance"]) for m in train
                    if m.get("expert_load_imbalance")]
        if load_pts:
            layers = len(load_pts[0][1])
            for l in range(layers):
                ax[4].plot([i for i, _ in load_pts], [v[l] for _, v in load_pts], color=c,
                           alpha=0.35 + 0.65 * (l + 1) / layers, marker=".",
                           label=f"{name}" if l == layers - 1 else None)
        if any("dropped_fraction" in m for m in train):
            ax[5].plot(it, [m.get("dropped_fraction", 0) for m in train], color=c, label=name)
    titles = ["LM loss", "learning rate", "gradient norm", "tokens/s",
              "expert load, max/mean per MoE layer (darker = deeper)", "dropped tokens (capacity mode)"]
    for x, t in zip(ax, titles):
        x.set_title(t)
        x.set_xlabel("iteration")
        if x.has_data():
            x.legend(fontsize=7)
    ax[4].axhline(1.0, color="grey", lw=0.8)
    if not ax[5].has_data():
        ax[5].set_visible(False)
    fig.tight_layout()
    fig.savefig(a.output, dpi=100)
    print(f"wrote {a.output}")


if __name__ == "__main__":
    main()
