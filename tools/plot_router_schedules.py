#!/usr/bin/python3
"""Plot runs with different gating schedules side by side (docs/moe.md).

Reads <run>/metrics.jsonl of each run (origami-train's per-iteration JSON lines) and draws
  left:  training LM loss per logged iteration (validation loss as markers, when present);
  right: mean experts per token (averaged over MoE layers) and, for dense-to-sparse runs, the
         Gumbel-softmax temperature on a second axis.
Runs without a schedule log no experts per token; their right-hand curve is the constant top_k
read from <run>/config.yaml. Prints a summary line per run (final and mean-of-last-5 loss).

usage: tools/plot_router_schedules.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]
"""
import json
import re
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def read_run(run_dir):
    train, valid = [], []
    with open(f"{run_dir}/metrics.jsonl") as f:
        for line in f:
            m = json.loads(line)
            (valid if "valid_lm_loss" in m else train).append(m)
    top_k = 2
    try:
        with open(f"{run_dir}/config.yaml") as f:
            found = re.search(r"^  top_k: (\d+)$", f.read(), re.M)
            top_k = int(found.group(1)) if found else top_k
    except OSError:
        pass
    return train, valid, top_k


def main(argv):
    if len(argv) < 3 or any("=" not in a for a in argv[2:]):
        print(__doc__, file=sys.stderr)
        return 2
    out = argv[1]
    fig, (ax_loss, ax_exp) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_tau = None
    for i, spec in enumerate(argv[2:]):
        label, run_dir = spec.split("=", 1)
        train, valid, top_k = read_run(run_dir)
        color = f"C{i}"
        its = [m["iteration"] for m in train]
        loss = [m["lm_loss"] for m in train]
        ax_loss.plot(its, loss, color=color, label=f"{label} (train)", lw=1.2)
        if valid:
            ax_loss.plot([m["iteration"] for m in valid], [m["valid_lm_loss"] for m in valid],
                         "o", color=color, ms=5, label=f"{label} (valid)")
        per_token = [sum(m["experts_per_token"]) / len(m["experts_per_token"])
                     if m.get("experts_per_token") else float(top_k) for m in train]
        ax_exp.plot(its, per_token, color=color, label=f"{label}: experts / token", lw=1.5)
        taus = [(m["iteration"], m["router_temperature"]) for m in train
                if m.get("router_temperature") is not None]
        if taus:
            ax_tau = ax_tau or ax_exp.twinx()
            ax_tau.plot(*zip(*taus), color=color, ls="--", lw=1, label=f"{label}: temperature")
        last = loss[-5:]
        print(f"{label}: {run_dir}: {len(train)} logged iterations up to {its[-1]}, final lm loss "
              f"{loss[-1]:.4f}, mean of last 5 logged {sum(last) / len(last):.4f}"
              + (f", final valid {valid[-1]['valid_lm_loss']:.4f}" if valid else "")
              + f", experts/token first {per_token[0]:.2f} last {per_token[-1]:.2f}")
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("LM loss")
    ax_loss.set_title("Loss")
    ax_loss.grid(alpha=0.3)
    ax_loss.legend(fontsize=8)
    ax_exp.set_xlabel("iteration")
    ax_exp.set_ylabel("mean experts per token (over MoE layers)")
    ax_exp.set_title("Experts per token and temperature")
    ax_exp.grid(alpha=0.3)
    handles, labels = ax_exp.get_legend_handles_labels()
    if ax_tau:
        ax_tau.set_ylabel("Gumbel-softmax temperature")
        h2, l2 = ax_tau.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    ax_exp.legend(handles, labels, fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
