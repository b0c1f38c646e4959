#!/usr/bin/python3
"""A cost model of one training step, projected to 64-1024 GPUs for a Mixtral-8x7B-shaped MoE.

  tools/scaling/project.py [--compute-tflops 600] [--nvlink-gbs 450] [--ib-gbs 50]
                           [--gpus-per-node 8] [--pp 4] [--vpp 8] [--ep 8] [--tp 1]
                           [--dp-overlap 0.8] [--match TFLOPS@GPUS] [--out DIR]

It is a model, not a measurement. Inputs are measured rates: the GPU's sustained GEMM rate
(--compute-tflops, e.g. origami's 1-GPU run or a grouped-GEMM benchmark), and the per-GPU
bandwidths within a node (NVLink) and between nodes (InfiniBand), e.g. from nccl-tests. Step time =
  compute    FLOPs per token (Megatron's formula) x tokens per GPU / compute rate
  + bubble   compute x (PP - 1) / (VPP x micro-batches)           (interleaved 1F1B)
  + EP       4 all-to-alls per MoE layer (dispatch, combine; fwd and bwd) of k x h bf16 per
             token, over NVLink while EP fits in a node, else InfiniBand; not overlapped
  + DP       gradient reduce-scatter (fp32) + parameter all-gather (bf16) over DP (dense) and
             DP / EP (experts), over InfiniBand, (1 - dp_overlap) of it exposed
TP > 1 adds 4 (all-gather + reduce-scatter, fwd and bwd) x 2 per layer of s x h bf16 over NVLink.
--match 468@64 calibrates the compute rate instead: the rate at which the weak series at 64 GPUs
gives 468 TFLOP/s/GPU (one measured end-to-end point in: attention, norms, routing and the
optimizer then count as slower compute). Weak scaling: 16 sequences per DP rank; strong: a global batch of 1024 sequences. Sequence 4096.
Writes DIR/projection.md and projection.png; prints the table.
"""
import argparse
import os

# Mixtral-8x7B (Mistral AI's config.json): h, layers, heads, kv heads, expert FFN, experts, top-k.
H, L, HEADS, KV, FFN, E, K, V, S = 4096, 32, 32, 8, 14336, 8, 2, 32000, 4096
D = H // HEADS
PEAK_TFLOPS = 989.4  # H100 SXM dense bf16
MEGATRON_MIXTRAL_TFLOPS = 468  # Megatron-Core MoE README, Mixtral 8x7B bf16, H100 (MCore v0.9)


def flops_per_token():
    """Megatron's transformer_flops: 6 x (MLP with SwiGLU f=3 + QKV/out + causal attention + logits)."""
    q, kv = HEADS * D, KV * D
    mlp = 6 * H * 3 * K * FFN * L
    attn_proj = L * 6 * (H * (q + 2 * kv) + q * H)
    core = L * 6 * q * S  # causal-halved, as Megatron counts it
    logits = 6 * H * V
    return mlp + attn_proj + core + logits


def params():
    """(dense, expert) parameter counts."""
    dense = L * (H * (HEADS * D + 2 * KV * D) + HEADS * D * H + 2 * H + H * E) + 2 * V * H + H
    expert = L * E * 3 * H * FFN
    return dense, expert


def step(a, gpus, batch):
    tp, pp, ep = a.tp, a.pp, a.ep
    dp = gpus // (tp * pp)
    m = batch // dp  # micro-batches of one sequence per DP rank
    tokens_per_gpu = batch * S / gpus  # every GPU does an equal share of the FLOPs
    compute = flops_per_token() * tokens_per_gpu / (a.compute_tflops * 1e12)
    bubble = compute * (pp - 1) / (a.vpp * m)
    # EP: each DP rank's tokens pass its stage's L/PP MoE layers; bytes leave the GPU (ep-1)/ep.
    stage_tokens = batch * S / dp
    ep_bytes = 4 * stage_tokens * K * H * 2 * (ep - 1) / ep * (L / pp) / tp
    ep_bw = (a.nvlink_gbs if ep * tp <= a.gpus_per_node else a.ib_gbs) * 1e9
    ep_t = ep_bytes / ep_bw
    tp_t = 0.0
    if tp > 1:
        tp_bytes = 8 * stage_tokens * H * 2 * (tp - 1) / tp * (L / pp) / tp
        tp_t = tp_bytes / (a.nvlink_gbs * 1e9)
    dense, expert = params()
    edp = max(dp // ep, 1)
    grad = 0.0
    for count, group in ((dense / (tp * pp), dp), (expert / (ep * pp), edp)):
        if group > 1:
            grad += count * (4 + 2) * (group - 1) / group / (a.ib_gbs * 1e9)
    dp_t = (1 - a.dp_overlap) * grad
    total = compute + bubble + ep_t + tp_t + dp_t
    return {"gpus": gpus, "dp": dp, "batch": batch, "m": m, "compute_s": compute, "bubble_s": bubble,
            "ep_s": ep_t, "tp_s": tp_t, "dp_s": dp_t, "step_s": total,
            "tokens_per_s_per_gpu": tokens_per_gpu / total,
            "tflops_per_gpu": flops_per_token() * tokens_per_gpu / total / 1e12}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compute-tflops", type=float, default=600,
                    help="sustained bf16 GEMM TFLOP/s per GPU (default: H100 grouped GEMM at large M)")
    ap.add_argument("--nvlink-gbs", type=float, default=450, help="GB/s per GPU within a node")
    ap.add_argument("--ib-gbs", type=float, default=50, help="GB/s per GPU between nodes")
    ap.add_argument("--gpus-per-node", type=int, default=8)
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--pp", type=int, default=4)
    ap.add_argument("--vpp", type=int, default=8)
    ap.add_argument("--ep", type=int, default=8)
    ap.add_argument("--dp-overlap", type=float, default=0.8)
    ap.add_argument("--match", help="TFLOPS@GPUS: calibrate --compute-tflops to one measured point")
    ap.add_argument("--out", default="runs/scaling")
    a = ap.parse_args()
    if L % (a.pp * a.vpp):
        ap.error(f"--pp x --vpp must divide the {L} layers")
    if E % a.ep or a.ep < 1:
        ap.error(f"--ep must divide the {E} experts")
    if not 0 <= a.dp_overlap <= 1:
        ap.error("--dp-overlap is a fraction in [0, 1]")
    gpus = [64, 128, 256, 512, 1024]
    if a.match:
        try:
            want, at = (float(x) for x in a.match.split("@"))
        except ValueError:
            ap.error(f"--match: TFLOPS@GPUS, e.g. 468@64, not '{a.match}'")
        lo, hi = 1.0, 5000.0
        for _ in range(100):  # bisection on the compute rate (TFLOP/s/GPU rises with it)
            a.compute_tflops = (lo + hi) / 2
            got = step(a, int(at), 16 * (int(at) // (a.tp * a.pp)))["tflops_per_gpu"]
            lo, hi = (a.compute_tflops, hi) if got < want else (lo, a.compute_tflops)
        if abs(got - want) > 0.01 * want:
            ap.error(f"--match: no compute rate gives {want:g} TFLOP/s at {at:g} GPUs (communication alone is too slow)")
    rows = []
    for series in ("weak", "strong"):
        for n in gpus:
            dp = n // (a.tp * a.pp)
            if dp < 1 or dp % a.ep and a.ep > dp:
                continue
            batch = 16 * dp if series == "weak" else 1024
            if batch % dp:
                continue
            r = step(a, n, batch)
            r["series"] = series
            rows.append(r)
    for series in ("weak", "strong"):
        pts = [r for r in rows if r["series"] == series]
        for r in pts:
            if series == "weak":
                r["efficiency"] = r["tokens_per_s_per_gpu"] / pts[0]["tokens_per_s_per_gpu"]
            else:
                r["efficiency"] = pts[0]["step_s"] * pts[0]["gpus"] / (r["step_s"] * r["gpus"])
    head = (f"Projection (a cost model, not a measurement) for a Mixtral-8x7B-shaped MoE "
            f"(h {H}, {L} layers, {E} experts top-{K}, seq {S}), bf16, "
            f"TP{a.tp} PP{a.pp} VPP{a.vpp} EP{a.ep}, {a.gpus_per_node} GPUs/node; inputs: "
            f"{a.compute_tflops:.0f} TFLOP/s sustained compute{' (calibrated: --match ' + a.match + ')' if a.match else ''}, {a.nvlink_gbs:g} GB/s NVLink, "
            f"{a.ib_gbs:g} GB/s IB per GPU, {100 * a.dp_overlap:.0f}% of the DP reduction overlapped. "
            f"{flops_per_token() / 1e9:.1f} GFLOP/token (Megatron's count). Megatron-Core reports "
            f"{MEGATRON_MIXTRAL_TFLOPS} TFLOP/s/GPU for Mixtral 8x7B on H100.")
    lines = [head, "", "| series | GPUs | DP | global batch | step s | compute | bubble | EP a2a | "
             "DP exposed | tokens/s/GPU | TFLOP/s/GPU | MFU | efficiency |", "|" + "---|" * 13]
    for r in rows:
        lines.append(
            f"| {r['series']} | {r['gpus']} | {r['dp']} | {r['batch']} | {r['step_s']:.2f} | "
            f"{r['compute_s']:.2f} | {r['bubble_s']:.2f} | {r['ep_s']:.2f} | {r['dp_s']:.2f} | "
            f"{r['tokens_per_s_per_gpu']:.0f} | {r['tflops_per_gpu']:.0f} | "
            f"{100 * r['tflops_per_gpu'] / PEAK_TFLOPS:.0f}% | {r['efficiency']:.2f} |")
    text = "\n".join(lines)
    print(text)
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "projection.md"), "w").write(text + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4))
    for series, style in (("weak", "o-"), ("strong", "s--")):
        pts = [r for r in rows if r["series"] == series]
        ax.plot([r["gpus"] for r in pts], [r["tflops_per_gpu"] for r in pts], style,
                label=f"model: {series} scaling")
    ax.axhline(MEGATRON_MIXTRAL_TFLOPS, color="grey", ls=":", label="Megatron-Core Mixtral 8x7B (published)")
    ax.set_xscale("log", base=2)
    ax.set_xticks(gpus, [str(g) for g in gpus])
    ax.set(xlabel="GPUs", ylabel="TFLOP/s per GPU", ylim=(0, max(a.compute_tflops, 500) * 1.1),
           title="Projected Mixtral-8x7B-shaped step (a cost model)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(a.out, "projection.png"), dpi=110)
    print(f"wrote {a.out}/projection.md, projection.png")


if __name__ == "__main__":
    main()
