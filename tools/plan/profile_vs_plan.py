#!/usr/bin/env python3
"""Where does origami-plan's prediction for one run go wrong? (docs/planning.md, not part of CI.)

Takes a run made with logging.profile=true (its config.yaml and profile.jsonl), asks origami-plan
for the same config and cluster, finds the run's layout in the ranking, and prints, for the last
profiled step, the model's compute by kind (cost_model.h's kComputeKinds) next to the ops the
ranks timed, then communication and the step:

  launch/train.sh configs/default.yaml -n 8 -- --set logging.profile=true --set logging.dir=/tmp/r
  tools/plan/profile_vs_plan.py /tmp/r --cluster /tmp/cal.yaml

On a cluster file with compute.shared_cores (ranks sharing cores), the planner's compute is a
rank's CPU time stretched by ranks per core, so the ops' CPU time is stretched the same way here.
Measured figures are the mean and the largest over the ranks.
"""
import argparse, csv, json, os, subprocess, sys, tempfile

import yaml

here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Which compute kind each ProfilingBackend op belongs to (kComputeKinds in src/plan/cost_model.h;
# the kinds themselves are read from the CSV's <kind>_ms columns).
def kind_of(op):
    if op == "gemm":
        return "gemm"
    if op.startswith("gemm_batched"):
        return "experts"
    for prefix in ("attention", "swiglu", "cross_entropy"):
        if op.startswith(prefix):
            return prefix
    if op in ("adamw", "fill", "sum_squares", "scale"):
        return "optimizer"
    return "elementwise"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir")
    ap.add_argument("--cluster", required=True, help="the cluster file the plan should use")
    ap.add_argument("--imbalance", type=float, default=1.0, help="passed to origami-plan")
    ap.add_argument("--build", default=os.environ.get("ORIGAMI_BUILD_DIR", "build"))
    args = ap.parse_args()

    for f in ("config.yaml", "profile.jsonl"):
        if not os.path.exists(os.path.join(args.run_dir, f)):
            sys.exit(f"{args.run_dir}: no {f} (train with --set logging.profile=true)")
    cfg = yaml.safe_load(open(os.path.join(args.run_dir, "config.yaml")))
    lines = open(os.path.join(args.run_dir, "profile.jsonl")).read().splitlines()
    if not lines:
        sys.exit(f"{args.run_dir}/profile.jsonl is empty: no logged step was profiled")
    step = json.loads(lines[-1])
    ranks = step["ranks"]
    world = len(ranks)
    cluster = yaml.safe_load(open(args.cluster))
    shared = int(cluster.get("compute", {}).get("shared_cores", 0) or 0)
    on_node = min(world, int(cluster["ranks_per_node"]))
    stretch = on_node / shared if shared and on_node > shared else 1.0
    clock = "cpu_ms" if stretch > 1 else "ms"

    par, tr = cfg["parallel"], cfg["training"]
    want = {"tp": par["tensor"], "cp": par["context"], "pp": par["pipeline"],
            "v": par.get("virtual_pipeline", 1) if par["pipeline"] > 1 else 1,
            "ep": par["expert"], "etp": par["expert_tensor"],
            "zero": int(bool(cfg["optimizer"].get("distributed", False))),
            "recompute": tr.get("recompute", "none"), "micro_batch_size": tr["micro_batch_size"]}
    with tempfile.TemporaryDirectory() as tmp:
        plan_csv = os.path.join(tmp, "plan.csv")
        subprocess.run([os.path.join(here, args.build, "src/origami-plan"),
                        os.path.join(args.run_dir, "config.yaml"), "--world", str(world),
                        "--cluster", args.cluster, "--imbalance", str(args.imbalance),
                        "--csv", plan_csv, "--overlay", os.path.join(tmp, "x.overlay"), "--top", "0"],
                       check=True, stdout=subprocess.DEVNULL)
        reader = csv.DictReader(open(plan_csv))
        rows = [r for r in reader if all(str(r[k]) == str(v) for k, v in want.items())]
    totals = ("step_ms", "compute_ms", "comm_ms", "bubble_ms")
    kinds = [c[:-3] for c in reader.fieldnames if c.endswith("_ms") and c not in totals]
    if not rows:
        sys.exit(f"origami-plan did not rank the run's layout {want}")
    row = rows[0]

    measured = {k: [] for k in kinds}
    for r in ranks:
        per = dict.fromkeys(kinds, 0.0)
        for op, t in r["ops"].items():
            per[kind_of(op)] += stretch * t[clock]
        for k in kinds:
            measured[k].append(per[k])
    print(f"{args.run_dir}: plan rank {row['rank']}, iteration {step['iteration']}, {world} ranks"
          + (f", op CPU time x {stretch:g} (ranks per core)" if stretch > 1 else ", op wall time"))
    print(f"{'':16s} {'measured mean':>14s} {'max':>9s} {'predicted':>10s} {'ratio':>6s}")

    def line(name, values, predicted):
        mean = sum(values) / len(values)
        ratio = f"{mean / predicted:6.2f}" if predicted > 0 else "     -"
        print(f"{name:16s} {mean:14.1f} {max(values):9.1f} {predicted:10.1f} {ratio}")

    for k in kinds:
        line(k, measured[k], float(row[k + "_ms"]))
    line("compute", [sum(measured[k][i] for k in kinds) for i in range(world)], float(row["compute_ms"]))
    line("communication", [r["comm_ms"] for r in ranks], float(row["comm_ms"]))
    line("step", [r["step_ms"] for r in ranks], float(row["step_ms"]))
    if stretch > 1:
        busy = sum(r["cpu_ms"] for r in ranks) / (max(r["step_ms"] for r in ranks) * shared)
        print(f"cores busy {100 * busy:.0f}% of the step (every rank's CPU time over "
              f"{shared} cores x the step)")


if __name__ == "__main__":
    main()
