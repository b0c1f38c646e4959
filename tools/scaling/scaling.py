#!/usr/bin/python3
"""Weak- and strong-scaling series of origami-train over node counts (docs/multinode.md).

  tools/scaling/scaling.py [--nodes 1,2,3] [--ranks-per-node 2] [--steps 6] [--shape 1gbit]
                           [--hostfile FILE | --slurm] [--out DIR] [--build DIR]

Each point is one launch/train.sh --hostfile run of the default model: TP = ranks per node
(inside a node), DP = nodes, EP = gcd(experts, ranks). Weak: 2 micro-batches of 4 per DP rank
(global batch grows with the nodes); strong: a fixed global batch of 24. Without --hostfile or
--slurm the nodes are a local namespace cluster (tools/cluster, root), optionally with every
node's link shaped (--shape, tbf). Writes DIR/scaling.md, scaling.csv, weak.png and strong.png:
tokens/s per rank and in total (median of iterations >= 3), scaling efficiency, share of step
time in collectives (rank 0, waiting included) and peak memory per rank (rank 0).
  weak efficiency(N)   = tokens/s per rank(N) / tokens/s per rank(first point)
  strong efficiency(N) = T(first) * N_first / (T(N) * N)   at the same global batch
"""
import argparse
import csv
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLUSTER = [os.path.join(ROOT, "tools/cluster/cluster"), "--name", "scaling"]
EXPERTS = 8  # configs/default.yaml


def sh(cmd, **kw):
    return subprocess.run(cmd, check=True, text=True, capture_output=True, **kw).stdout


def hostfile_for(args, nodes, out):
    """A hostfile of `nodes` hosts with ranks-per-node slots: real hosts, Slurm, or the cluster."""
    if args.slurm:
        names = sh(["scontrol", "show", "hostnames", os.environ["SLURM_JOB_NODELIST"]]).split()
    elif args.hostfile:
        names = [l.split()[0] for l in open(args.hostfile) if l.strip() and not l.startswith("#")]
    else:
        sh(CLUSTER + ["up", str(nodes), "--slots", str(args.ranks_per_node)])
        if args.shape:
            for i in range(nodes):
                sh(CLUSTER + ["shape", str(i), args.shape])
        names = [l.split()[0] for l in open(sh(CLUSTER + ["hostfile"]).strip())]
    if len(names) < nodes:
        sys.exit(f"scaling: {nodes} nodes asked for, only {len(names)} hosts available")
    path = os.path.join(out, f"hosts.{nodes}")
    with open(path, "w") as f:
        for n in names[:nodes]:
            f.write(f"{n} slots={args.ranks_per_node}\n")
    return path


def run_point(args, series, nodes, out):
    rpn = args.ranks_per_node
    ranks = nodes * rpn
    dp = nodes
    gbs = 8 * dp if series == "weak" else 24
    if gbs % (4 * dp):
        sys.exit(f"scaling: global batch {gbs} does not split over DP {dp} x micro-batch 4")
    ep = math.gcd(EXPERTS, ranks)
    run_dir = os.path.join(out, f"{series}-{nodes}n")
    sets = {"training.train_steps": args.steps, "training.eval_interval": 0, "logging.interval": 1,
            "logging.expert_load_interval": 0, "training.global_batch_size": gbs,
            "training.micro_batch_size": 4, "parallel.tensor": rpn, "parallel.expert": ep,
            "parallel.sequence_parallel": "true" if rpn > 1 else "false", "logging.dir": run_dir}
    cmd = [os.path.join(ROOT, "launch/train.sh"), os.path.join(ROOT, "configs/default.yaml"),
           "-n", str(ranks), "--hostfile", hostfile_for(args, nodes, out), "--"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    if not (args.hostfile or args.slurm):
        cmd = CLUSTER + ["run"] + cmd
    env = dict(os.environ, OMP_NUM_THREADS="1", ORIGAMI_TRAIN=os.path.join(args.build, "src/origami-train"))
    if os.path.exists(os.path.join(run_dir, "metrics.jsonl")):
        os.remove(os.path.join(run_dir, "metrics.jsonl"))
    t0 = time.time()
    p = subprocess.run(cmd, text=True, capture_output=True, env=env, cwd=ROOT, timeout=600)
    log = p.stdout + p.stderr
    open(run_dir + ".log", "w").write(log)
    if p.returncode != 0:
        sys.exit(f"scaling: {series} {nodes} nodes failed (exit {p.returncode}); see {run_dir}.log")
    rows = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl"))]
    tps = statistics.median(r["tokens_per_s"] for r in rows if r.get("iteration", 0) >= 3)
    comm = re.search(r"time in collectives on this rank: .* \(([0-9.]+)%", log)
    peak = re.findall(r"after iteration \d+: peak ([0-9.]+) (KiB|MiB|GiB)", log)
    unit = {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}
    return {"series": series, "nodes": nodes, "ranks": ranks,
            "layout": f"TP{rpn} DP{dp} EP{ep}", "global_batch": gbs,
            "tokens_per_s": tps, "tokens_per_s_per_rank": tps / ranks,
            "comm_share": float(comm.group(1)) / 100 if comm else float("nan"),
            "peak_mib": max(float(v) * unit[u] for v, u in peak) if peak else float("nan"),
            "wall_s": time.time() - t0}


def add_efficiency(points):
    for series in ("weak", "strong"):
        pts = [p for p in points if p["series"] == series]
        if not pts:
            continue
        base = pts[0]
        for p in pts:
            if series == "weak":
                p["efficiency"] = p["tokens_per_s_per_rank"] / base["tokens_per_s_per_rank"]
            else:  # same global batch: T(first) * N_first / (T(N) * N) with T = 1 / tokens/s
                p["efficiency"] = (p["tokens_per_s"] / base["tokens_per_s"]) * base["ranks"] / p["ranks"]


def table(points, args):
    lines = ["| series | nodes | ranks | layout | global batch | tokens/s | tokens/s/rank | "
             "efficiency | comm share | peak MiB/rank |", "|" + "---|" * 10]
    for p in points:
        lines.append(f"| {p['series']} | {p['nodes']} | {p['ranks']} | {p['layout']} | "
                     f"{p['global_batch']} | {p['tokens_per_s']:.0f} | {p['tokens_per_s_per_rank']:.0f} | "
                     f"{p['efficiency']:.2f} | {100 * p['comm_share']:.0f}% | {p['peak_mib']:.1f} |")
    where = ("Slurm allocation" if args.slurm else f"hostfile {args.hostfile}" if args.hostfile
             else f"local namespace cluster ({os.cpu_count()} cores shared by all nodes"
                  + (f", links shaped to {args.shape}" if args.shape else "") + ")")
    return "\n".join([f"Scaling of the default model, {args.steps} steps per point, {where}; "
                      f"{time.strftime('%Y-%m-%d')}", ""] + lines)


def plots(points, out):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    for series in ("weak", "strong"):
        pts = [p for p in points if p["series"] == series]
        if not pts:
            continue
        fig, ax = plt.subplots(1, 3, figsize=(13, 3.6))
        n = [p["nodes"] for p in pts]
        ax[0].plot(n, [p["tokens_per_s"] for p in pts], "o-", label="total")
        ax[0].plot(n, [p["tokens_per_s_per_rank"] for p in pts], "s--", label="per rank")
        ax[0].set(xlabel="nodes", ylabel="tokens/s", title=f"{series} scaling: throughput")
        ax[0].legend()
        ax[1].plot(n, [p["efficiency"] for p in pts], "o-")
        ax[1].axhline(1.0, color="grey", lw=0.8)
        ax[1].set(xlabel="nodes", ylabel="efficiency", ylim=(0, 1.2), title="scaling efficiency")
        ax[2].bar(n, [100 * p["comm_share"] for p in pts])
        ax[2].set(xlabel="nodes", ylabel="% of step time", title="time in collectives (rank 0)")
        for a in ax:
            a.set_xticks(n)
        fig.tight_layout()
        fig.savefig(os.path.join(out, f"{series}.png"), dpi=110)
        plt.close(fig)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--nodes", default="1,2,3")
    ap.add_argument("--ranks-per-node", type=int, default=2)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--series", default="weak,strong")
    ap.add_argument("--shape", help="tbf rate for every node's link (local cluster only)")
    ap.add_argument("--hostfile", help="real hosts, one per line (first N used per point)")
    ap.add_argument("--slurm", action="store_true", help="hosts of the Slurm allocation")
    ap.add_argument("--out", default="runs/scaling")
    ap.add_argument("--build", default=os.path.join(ROOT, os.environ.get("ORIGAMI_BUILD_DIR", "build")))
    args = ap.parse_args()
    if args.steps < 3:
        ap.error("--steps must be >= 3 (iterations 1-2 are warm-up)")
    nodes = [int(x) for x in args.nodes.split(",")]
    if any(n < 1 for n in nodes):
        ap.error("--nodes: positive node counts, e.g. 1,2,3")
    args.build = os.path.abspath(args.build)
    os.makedirs(args.out, exist_ok=True)
    points = []
    try:
        for series in args.series.split(","):
            if series not in ("weak", "strong"):
                ap.error(f"--series: weak and/or strong, not '{series}'")
            for n in nodes:
                points.append(run_point(args, series, n, args.out))
                print(f"  {series} {n} nodes: {points[-1]['tokens_per_s']:.0f} tokens/s", flush=True)
    finally:
        if not (args.hostfile or args.slurm):
            subprocess.run(CLUSTER + ["down"], capture_output=True)
    add_efficiency(points)
    text = table(points, args)
    print(text)
    open(os.path.join(args.out, "scaling.md"), "w").write(text + "\n")
    with open(os.path.join(args.out, "scaling.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(points[0]))
        w.writeheader()
        w.writerows(points)
    plots(points, args.out)
    pngs = ", ".join(f"{x}.png" for x in ("weak", "strong") if any(p["series"] == x for p in points))
    print(f"wrote {args.out}/scaling.md, scaling.csv, {pngs}")


if __name__ == "__main__":
    main()
