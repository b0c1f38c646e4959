#!/usr/bin/python3
"""Draw pipeline schedule timelines from the schedule tables (docs/parallelism.md).

Reads JSON timelines written by src/pipeline/schedule_sim.h's timeline_json() -- the pipeline
test PipelineDryRun.TimelineJsonForTheDocsFigure writes PP4 m8 under 1f1b and PP4 v2 m8 under
interleaving to <build>/pipeline_timelines/ -- and draws one panel per timeline, one row per
pipeline rank: forwards blue, backwards green, the later chunk lighter, each box labelled with
its micro-batch; idle time is blank. All panels share one time axis, so equal work lines up.
Prints the measured and theoretical bubble of each.

usage: tools/plot_pipeline_schedule.py OUT.png TIMELINE.json [TIMELINE.json ...]
e.g.   build/tests/origami-pipeline-tests --gtest_filter='*TimelineJson*' &&
       tools/plot_pipeline_schedule.py docs/figures/pipeline_schedules.png \
           build/pipeline_timelines/pp4_m8_1f1b.json \
           build/pipeline_timelines/pp4_v2_m8_interleaved.json
"""
import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgb  # noqa: E402

BASE = {"forward": "#3b6fb6", "backward": "#3f9a4a"}


def shade(op, chunk, chunks):
    """The op's colour, mixed towards white for later chunks."""
    r, g, b = to_rgb(BASE[op])
    t = 0.55 * chunk / max(chunks - 1, 1)
    return (r + (1 - r) * t, g + (1 - g) * t, b + (1 - b) * t)


def title(t):
    shape = f"PP{t['pp']}" + (f" v{t['v']}" if t["v"] > 1 else "") + f" m{t['m']}"
    worst = max(r["bubble"]["of_compute"] for r in t["ranks"])
    return (f"{t['kind']}, {shape} (chunk F={t['costs']['forward']}, B={t['costs']['backward']}): "
            f"bubble {worst:.3f} of compute, theory (p-1)/(v m) = {t['theory']['of_compute']:.3f}")


def draw(ax, t, x_max):
    for rank, r in enumerate(t["ranks"]):
        for a in r["actions"]:
            if a["op"] not in BASE:
                continue
            width = a["end"] - a["start"]
            ax.barh(rank, width, left=a["start"], height=0.8,
                    color=shade(a["op"], a["chunk"], t["v"]), edgecolor="white", linewidth=0.6)
            ax.text(a["start"] + width / 2, rank, str(a["mb"]), ha="center", va="center",
                    fontsize=7, color="black" if a["chunk"] else "white")
    ax.set_yticks(range(t["pp"]), [f"rank {i}" for i in range(t["pp"])])
    ax.set_ylim(t["pp"] - 0.5, -0.5)
    ax.set_xlim(0, x_max)
    ax.set_title(title(t), fontsize=9, loc="left")


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    timelines = []
    for path in argv[2:]:
        with open(path) as f:
            timelines.append(json.load(f))
    x_max = max(t["makespan"] for t in timelines)
    fig, axes = plt.subplots(len(timelines), 1, figsize=(12, 1.0 + 0.45 * sum(
        t["pp"] for t in timelines) + 0.5 * len(timelines)), squeeze=False)
    for ax, t in zip(axes[:, 0], timelines):
        draw(ax, t, x_max)
        print(f"{title(t)}; step {t['makespan']} time units, "
              f"idle per rank {[r['idle'] for r in t['ranks']]}")
    axes[-1, 0].set_xlabel("time (units of one chunk's forward)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=shade(op, 0, 2)) for op in BASE]
    handles += [plt.Rectangle((0, 0), 1, 1, color=shade(op, 1, 2)) for op in BASE]
    fig.legend(handles, ["F chunk 0", "B chunk 0", "F chunk 1", "B chunk 1"], ncol=4,
               loc="lower center", fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(argv[1], dpi=130)


if __name__ == "__main__":
    main(sys.argv)
