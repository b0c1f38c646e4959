#!/usr/bin/env python3
"""Golden reference: Mixtral's forward pass re-implemented in PyTorch (fp32) straight from an
exported Hugging Face directory (config.json + model.safetensors), compared with the logits
Origami computed for the same tokens. No transformers needed: the safetensors file is parsed
here (8-byte header length, JSON header, raw little-endian data).

usage: mixtral_reference.py HF_DIR TOKENS(comma-separated) ORIGAMI_LOGITS.bin
exit 0 when max |difference| <= 1e-5 x max |logit| (+1e-6), else 1.
"""
import json
import struct
import sys

import numpy as np
import torch


def load_safetensors(path):
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
        buf = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", f"{name}: export with --dtype F32 for the golden test"
        b, e = t["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(buf[b:e], dtype="<f4").reshape(t["shape"]).copy())
    return out


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def forward(cfg, w, tokens):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd, E, k, eps = H // nh, cfg["num_local_experts"], cfg["num_experts_per_tok"], cfg["rms_norm_eps"]
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
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        kk = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q, kk = q * cos + rotate_half(q) * sin, kk * cos + rotate_half(kk) * sin
        kk, v = kk.repeat_interleave(nh // nkv, 0), v.repeat_interleave(nh // nkv, 0)
        att = torch.softmax(q @ kk.transpose(1, 2) / hd**0.5 + mask, dim=-1) @ v
        x = x + att.transpose(0, 1).reshape(T, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        probs = torch.softmax(h @ w[p + "block_sparse_moe.gate.weight"].T, dim=-1)
        top_w, top_i = torch.topk(probs, k, dim=-1)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        out = torch.zeros_like(h)
        for e in range(E):
            q_ = p + f"block_sparse_moe.experts.{e}."
            y = (torch.nn.functional.silu(h @ w[q_ + "w1.weight"].T) * (h @ w[q_ + "w3.weight"].T)) @ w[q_ + "w2.weight"].T
            out += y * (top_w * (top_i == e)).sum(-1, keepdim=True)
        x = x + out
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["lm_head.weight"] if "lm_head.weight" in w else w["model.embed_tokens.weight"]
    return x @ head.T


def main():
    hf_dir, tokens, logits_path = sys.argv[1], [int(t) for t in sys.argv[2].split(",")], sys.argv[3]
    cfg = json.load(open(f"{hf_dir}/config.json"))
    w = load_safetensors(f"{hf_dir}/model.safetensors")
    with torch.no_grad():
        ref = forward(cfg, w, tokens)
    ours = torch.from_numpy(np.fromfile(logits_path, dtype="<f4").reshape(ref.shape))
    diff = (ours - ref).abs().max().item()
    scale = ref.abs().max().item()
    ok = diff <= 1e-5 * scale + 1e-6
    print(f"logits {tuple(ref.shape)}: max |Origami - PyTorch| = {diff:.3g} (max |logit| {scale:.3g}): "
          f"{'ok' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
