#!/usr/bin/env python3
"""Summarise expert-specialisation reports (logging.expert_report_interval) of one or more runs.

For each run and MoE layer: the mean over datasets of KL(f_dataset || f_mean) in nats (how much
each dataset's expert-selection distribution departs from the average one: 0 = no domain
specialisation), and the mean over datasets of max_e f / mean_e f (how concentrated a dataset's
routing is). Reads the last report line of each <run>/expert_report.json. Standard library only.

usage: tools/expert_specialisation.py RUN_DIR [RUN_DIR ...]
"""
import json
import math
import sys


def summarise(run_dir):
    with open(f"{run_dir}/expert_report.json") as f:
        report = json.loads(f.read().strip().splitlines()[-1])
    datasets = report["datasets"]
    layers = len(next(iter(datasets.values()))["layers"])
    rows = []
    for l in range(layers):
        dists = [d["layers"][l] for d in datasets.values()]
        experts = len(dists[0])
        mean = [sum(d[e] for d in dists) / len(dists) for e in range(experts)]
        kl = sum(sum(p * math.log(p / q) for p, q in zip(d, mean) if p > 0) for d in dists) / len(dists)
        peak = sum(max(d) * experts for d in dists) / len(dists)
        rows.append((l, kl, peak))
    return report["iteration"], len(datasets), rows


def main():
    for run in sys.argv[1:]:
        it, n, rows = summarise(run)
        print(f"{run} (iteration {it}, {n} datasets)")
        for l, kl, peak in rows:
            print(f"  layer {l}: mean KL(dataset || mean) {kl:.4f} nats, mean max/mean load {peak:.2f}")


if __name__ == "__main__":
    main()
