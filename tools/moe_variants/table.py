#!/usr/bin/env python3
"""Table and plot of the MoE-variant runs (tools/moe_variants/run.sh): per run directory under
RUNS, the last validation loss, the FFN FLOPs actually spent per token (forward, the metrics'
ffn_flops_per_token), the share
of slots on zero-computation / null experts and the median step time; the markdown table goes to
stdout and the plot (LM loss and validation loss per step) to PLOT (default RUNS/variants.png).
Usage: table.py [RUNS] [PLOT]"""
import json
import statistics
import sys
from pathlib import Path

ORDER = ["vanilla", "moepp", "adamoe", "rmoe", "gating_residual", "frozen", "residual"]


def read(run: Path):
    train, evals = [], []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        j = json.loads(line)
        (evals if "valid_lm_loss" in j else train).append(j)
    return train, evals


def main() -> int:
    runs = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/variants")
    rows, curves = [], {}
    for name in ORDER:
        run = runs / name
        if not (run / "metrics.jsonl").exists():
            continue
        train, evals = read(run)
        if not train:
            print(f"table.py: {run}/metrics.jsonl has no iterations yet; skipped", file=sys.stderr)
            continue
        key = "valid_lm_loss"
        valid = evals[-1][key] if evals else float("nan")
        flops = [j["ffn_flops_per_token"] for j in train if "ffn_flops_per_token" in j]
        ffn = statistics.mean(flops) if flops else float("nan")
        share = [statistics.mean(j["zero_compute_share"]) for j in train if "zero_compute_share" in j]
        ms = statistics.median(j["ms_per_iter"] for j in train[1:]) if len(train) > 1 else train[0]["ms_per_iter"]
        rows.append((name, train[-1]["iteration"], train[-1]["lm_loss"], valid, ffn / 1e6,
                     statistics.mean(share) if share else 0.0, ms))
        curves[name] = ([j["iteration"] for j in train], [j["lm_loss"] for j in train],
                        [j["iteration"] for j in evals], [j[key] for j in evals])
    if not rows:
        print(f"table.py: no runs under {runs}", file=sys.stderr)
        return 1
    print("| variant | steps | final LM loss | validation loss | FFN MFLOP/token (fwd) | "
          "slots on zero-comp./null | ms/step (median) |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.3f} | {r[4]:.3f} | {r[5]:.3f} | {r[6]:.0f} |")
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("table.py: matplotlib missing; no plot", file=sys.stderr)
        return 0
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for name, (it, loss, eit, ev) in curves.items():
        ax[0].plot(it, loss, label=name, lw=1)
        if eit:
            ax[1].plot(eit, ev, marker="o", label=name)
    ax[0].set(xlabel="iteration", ylabel="LM loss", title="training")
    ax[1].set(xlabel="iteration", ylabel="validation loss", title="validation")
    ax[0].legend()
    fig.tight_layout()
    plot = Path(sys.argv[2]) if len(sys.argv) > 2 else runs / "variants.png"
    fig.savefig(plot, dpi=100)
    print(f"\nplot: {plot}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
