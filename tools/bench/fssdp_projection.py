#!/usr/bin/env python3
"""A model (not a measurement) of one MoE layer's step time under expert parallelism and under
FSSDP on a modelled cluster, at the scale of Hecate's experiments (arXiv 2502.02581: 4 nodes x 8
GPUs, 400 Gb/s between nodes, GPT-MoE with d_ffn = 2 d_model, 64 experts, top-2).

Per MoE layer, forward + backward:
  compute  = max over ranks of rows x 18 F H flops (3 GEMMs of 2 x rows x F x H each, x3 for
             the backward), at `--tflops` effective per GPU (the straggler sets the pace);
  exchange = 4 all-to-alls (dispatch, combine, both directions): each rank's remote rows cross
             the inter-node link at inter_gbps / gpus_per_node per GPU, or NVLink inside the node;
             the slowest rank (sender or receiver) sets the pace;
  FSSDP    = the t hottest experts copied to every rank (Hecate's Alg. 1 with t <= m): their rows
             stay local, the rest is EP; plus spAG + spRS of the t experts (bf16 weights out,
             fp32 gradients back), not overlapped with attention (Hecate hides them behind it:
             the 'hidden' column drops that term). t is chosen per skew to minimise the time.
Expert loads follow a Zipf law over experts (exponent --skew list; 0 = balanced), the same on
every rank. Every constant is a parameter; the output states them.
"""
import argparse


def layer_times(a, loads, t):
    """(compute, exchange, fssdp collectives) seconds for t replicated hottest experts."""
    D, E = a.nodes * a.gpus_per_node, len(loads)
    per_gpu = E // D
    rows_total = a.tokens_per_gpu * a.top_k * D  # routed rows over the cluster
    rows = [l * rows_total for l in loads]  # rows per expert (global)
    hot = sorted(range(E), key=lambda e: -rows[e])[:t]
    cold = [e for e in range(E) if e not in hot]
    # Compute: hot experts' rows split evenly (each rank computes its own), cold ones on owners.
    comp = [sum(rows[e] for e in hot) / D for _ in range(D)]
    for e in cold:
        comp[e // per_gpu] += rows[e]
    flops = 18.0 * a.ffn * a.hidden
    t_comp = max(comp) * flops / (a.tflops * 1e12)
    # Exchange: each rank sends its share of every cold expert's rows to the owner.
    row_bytes = a.hidden * 2.0  # bf16 activations
    inter_bw = a.inter_gbps * 1e9 / 8 / a.gpus_per_node  # bytes/s per GPU across nodes
    intra_bw = a.intra_gbs * 1e9
    recv_inter = [0.0] * D
    recv_intra = [0.0] * D
    send_inter = 0.0
    send_intra = 0.0
    for e in cold:
        owner = e // per_gpu
        share = rows[e] / D  # from each source rank
        same_node = a.gpus_per_node - 1
        other = D - a.gpus_per_node
        recv_intra[owner] += share * same_node * row_bytes
        recv_inter[owner] += share * other * row_bytes
        send_intra += share * row_bytes * (a.gpus_per_node - 1) / D
        send_inter += share * row_bytes * (D - a.gpus_per_node) / D
    t_a2a = max(max(ri / intra_bw + re / inter_bw for ri, re in zip(recv_intra, recv_inter)),
                send_intra / intra_bw + send_inter / inter_bw)
    t_exchange = 4.0 * t_a2a
    # FSSDP: t experts out to every rank (bf16) and their gradients back (fp32).
    expert_params = 3.0 * a.ffn * a.hidden
    coll_bytes = t * expert_params * (2.0 + 4.0)
    t_coll = coll_bytes * (D - a.gpus_per_node) / D / inter_bw + \
        coll_bytes * (a.gpus_per_node - 1) / D / intra_bw
    return t_comp, t_exchange, t_coll


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nodes", type=int, default=4)
    p.add_argument("--gpus-per-node", type=int, default=8)
    p.add_argument("--inter-gbps", type=float, default=400.0, help="Gb/s per node between nodes")
    p.add_argument("--intra-gbs", type=float, default=300.0, help="GB/s per GPU inside a node")
    p.add_argument("--tflops", type=float, default=150.0, help="effective TFLOP/s per GPU")
    p.add_argument("--hidden", type=int, default=2048)
    p.add_argument("--ffn", type=int, default=4096)
    p.add_argument("--experts", type=int, default=64)
    p.add_argument("--top-k", type=int, default=2)
    p.add_argument("--tokens-per-gpu", type=int, default=8192)
    p.add_argument("--max-replicated", type=int, default=8, help="the slot budget m")
    p.add_argument("--skew", type=float, nargs="+", default=[0.0, 0.5, 1.0, 1.5])
    a = p.parse_args()
    D = a.nodes * a.gpus_per_node
    print(f"model: {a.nodes} nodes x {a.gpus_per_node} GPUs, {a.inter_gbps:g} Gb/s between nodes, "
          f"{a.intra_gbs:g} GB/s inside, {a.tflops:g} TFLOP/s per GPU; H {a.hidden}, F {a.ffn}, "
          f"{a.experts} experts, top-{a.top_k}, {a.tokens_per_gpu} tokens per GPU; per MoE layer, "
          f"forward + backward")
    print(f"{'zipf s':>7} {'EP ms':>8} {'(comp/a2a)':>14} {'FSSDP ms':>9} {'t':>3} {'speedup':>8} "
          f"{'hidden':>7} {'straggler EP':>13}")
    for s in a.skew:
        w = [1.0 / (i + 1) ** s for i in range(a.experts)]
        loads = [x / sum(w) for x in w]
        c0, x0, _ = layer_times(a, loads, 0)
        ep = c0 + x0
        best = min(range(0, a.max_replicated + 1), key=lambda t: sum(layer_times(a, loads, t)))
        c1, x1, k1 = layer_times(a, loads, best)
        fs = c1 + x1 + k1
        mean_rows = a.tokens_per_gpu * a.top_k
        per_gpu = a.experts // D
        straggler = max(sum(loads[g * per_gpu:(g + 1) * per_gpu]) for g in range(D)) * D
        print(f"{s:>7.1f} {1e3 * ep:>8.2f} {1e3 * c0:>6.2f}/{1e3 * x0:<7.2f} {1e3 * fs:>9.2f} "
              f"{best:>3} {ep / fs:>7.2f}x {ep / (c1 + x1):>6.2f}x {straggler:>13.2f}")


if __name__ == "__main__":
    main()
