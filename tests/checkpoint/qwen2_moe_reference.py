#!/usr/bin/env python3
"""Golden reference: Qwen2-MoE's forward pass (transformers' modeling_qwen2_moe.py) re-implemented
in PyTorch (fp32) straight from an exported Hugging Face directory (config.json + safetensors),
compared with the logits Origami computed for the same tokens. No transformers needed: the
safetensors files (one, or shards with model.safetensors.index.json) are parsed here.

usage: qwen2_moe_reference.py HF_DIR TOKENS(comma-separated) ORIGAMI_LOGITS.bin
exit 0 when max |difference| <= 1e-5 x max |logit| (+1e-6), else 1.
"""
import json
import os
import struct
import sys

import numpy as np
import torch
import torch.nn.functional as F


def load_safetensors_file(path, out):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        buf = f.read()
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", f"{name}: export with --dtype F32 for the golden test"
        b, e = t["data_offsets"]
        data = np.frombuffer(buf[b:e], dtype="<f4").reshape(t["shape"])
        out[name] = torch.from_numpy(data.copy())


def load_weights(hf_dir):
    out = {}
    index = os.path.join(hf_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        for shard in sorted(set(json.load(open(index))["weight_map"].values())):
            load_safetensors_file(os.path.join(hf_dir, shard), out)
    else:
        load_safetensors_file(os.path.join(hf_dir, "model.safetensors"), out)
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def mlp(w, prefix, h):
    gate, up, down = (w[f"{prefix}{p}_proj.weight"] for p in ("gate", "up", "down"))
    return (F.silu(h @ gate.T) * (h @ up.T)) @ down.T


def linear(w, name, h):
    y = h @ w[name + ".weight"].T
    return y + w[name + ".bias"] if name + ".bias" in w else y


def sparse_moe(cfg, w, p, h):
    # Qwen2MoeSparseMoeBlock: softmax in fp32, top-k, renormalise only with norm_topk_prob, then
    # the shared expert scaled by sigmoid(shared_expert_gate . x).
    probs = torch.softmax(h @ w[p + "mlp.gate.weight"].T, dim=-1, dtype=torch.float)
    top_w, top_i = torch.topk(probs, cfg["num_experts_per_tok"], dim=-1)
    if cfg.get("norm_topk_prob", False):
        top_w = top_w / top_w.sum(-1, keepdim=True)
    out = torch.zeros_like(h)
    for e in range(cfg["num_experts"]):
        out += mlp(w, p + f"mlp.experts.{e}.", h) * (top_w * (top_i == e)).sum(-1, keepdim=True)
    shared = mlp(w, p + "mlp.shared_expert.", h)
    return out + torch.sigmoid(h @ w[p + "mlp.shared_expert_gate.weight"].T) * shared


def forward(cfg, w, tokens):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads") or nh
    hd, eps = cfg.get("head_dim") or H // nh, cfg["rms_norm_eps"]
    step, mlp_only = cfg.get("decoder_sparse_step", 1), cfg.get("mlp_only_layers") or []
    T = len(tokens)
    x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
    inv_freq = 1.0 / (cfg["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.float64) / hd))
    ang = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq)
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = emb.cos().float(), emb.sin().float()
    mask = torch.full((T, T), float("-inf")).triu(1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms_norm(x, w[p + "input_layernorm.weight"], eps)
        q = linear(w, p + "self_attn.q_proj", h).view(T, nh, hd).transpose(0, 1)
        kk = linear(w, p + "self_attn.k_proj", h).view(T, nkv, hd).transpose(0, 1)
        v = linear(w, p + "self_attn.v_proj", h).view(T, nkv, hd).transpose(0, 1)
        q, kk = q * cos + rotate_half(q) * sin, kk * cos + rotate_half(kk) * sin
        kk, v = kk.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ kk.transpose(1, 2) / hd**0.5 + mask, dim=-1) @ v
        x = x + att.transpose(0, 1).reshape(T, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        is_moe = l not in mlp_only and cfg["num_experts"] > 0 and (l + 1) % step == 0
        x = x + (sparse_moe(cfg, w, p, h) if is_moe else mlp(w, p + "mlp.", h))
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return x @ head.T


def main():
    hf_dir, tokens, logits_path = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
    cfg = json.load(open(f"{hf_dir}/config.json"))
    w = load_weights(hf_dir)
    with torch.no_grad():
        ref = forward(cfg, w, tokens)
    ours = torch.from_numpy(np.fromfile(logits_path, dtype="<f4").reshape(ref.shape))
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = diff <= 1e-5 * scale + 1e-6
    print(f"logits {tuple(ref.shape)}: max |Origami - PyTorch| = {diff:.3g} "
          f"(max |logit| {scale:.3g}): {'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
