#!/usr/bin/env python3
"""The PyTorch peer of origami-bench-train: Hugging Face MixtralForCausalLM in bf16 on one GPU,
the same shapes, full training steps (forward, backward, fused AdamW), median step time.
Prints tokens/s, model TFLOP/s and MFU with the same Megatron FLOPs accounting as
src/train/flops.cpp, so the two lines compare directly.
  python3 tools/bench/torch_mixtral_bench.py --hidden 2048 --layers 16 --experts 8 --top-k 2 \
      --ffn 5632 --seq 2048 --mbs 4
"""
import argparse
import time

import torch


def flops_per_token(a):
    H, nh, nkv, T = a.hidden, a.heads, a.kv_heads, a.seq
    hd = H / nh
    fwd = 0.0
    for _ in range(a.layers):
        fwd += 2 * H * (nh + 2 * nkv) * hd + 2 * nh * hd * H
        fwd += 4 * T * nh * hd
        fwd += 2 * H * a.experts + a.top_k * 6 * H * a.ffn
    fwd += 2 * H * a.vocab
    return 3 * fwd


def main():
    p = argparse.ArgumentParser()
    for name, default in [("hidden", 2048), ("layers", 16), ("experts", 8), ("top-k", 2),
                          ("ffn", 5632), ("heads", 16), ("kv-heads", 8), ("seq", 2048),
                          ("mbs", 4), ("vocab", 32000), ("steps", 10), ("warmup", 3)]:
        p.add_argument("--" + name, type=int, default=default)
    p.add_argument("--peak-tflops", type=float, default=989.0)
    p.add_argument("--attn", default="sdpa", help="attn_implementation for transformers")
    # Origami-only options, accepted so both benchmarks take the same arguments.
    p.add_argument("--logits-chunk", type=int, default=0, help="ignored (Origami's LM head chunks)")
    a = p.parse_args()
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(vocab_size=a.vocab, hidden_size=a.hidden, intermediate_size=a.ffn,
                        num_hidden_layers=a.layers, num_attention_heads=a.heads,
                        num_key_value_heads=a.kv_heads, num_local_experts=a.experts,
                        num_experts_per_tok=a.top_k, max_position_embeddings=a.seq,
                        router_aux_loss_coef=0.01, output_router_logits=True,
                        tie_word_embeddings=False, attn_implementation=a.attn)
    torch.manual_seed(0)
    model = MixtralForCausalLM(cfg).to(device="cuda", dtype=torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    ids = torch.randint(0, a.vocab, (a.mbs, a.seq), device="cuda")

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()

    for _ in range(a.warmup):
        step()
    torch.cuda.synchronize()
    times = []
    for _ in range(a.steps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        step()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    med = times[len(times) // 2]
    tok_s = a.mbs * a.seq / (med / 1e3)
    tflops = flops_per_token(a) * tok_s / 1e12
    nparams = sum(x.numel() for x in model.parameters())
    print(f"pytorch {torch.__version__} MixtralForCausalLM bf16 ({a.attn}) | hidden {a.hidden} "
          f"layers {a.layers} experts {a.experts} top-{a.top_k} ffn {a.ffn} seq {a.seq} mbs {a.mbs}")
    print(f"params {nparams / 1e9:.3f} B | step median {med:.1f} ms (min {times[0]:.1f}) | "
          f"{tok_s:.0f} tokens/s | {tflops:.1f} TFLOP/s | MFU {100 * tflops / a.peak_tflops:.1f}% "
          f"of {a.peak_tflops:.0f} | peak memory "
          f"{torch.cuda.max_memory_allocated() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
