// The conversions both Hugging Face namings share: attention and embedding tensors, box
// copies between global tensors, and the directory writer / config reader.
#include "checkpoint/hf_tensor_map.h"

#include <filesystem>
#include <fstream>

namespace origami {

namespace fs = std::filesystem;

namespace hf {

void attention_to_hf(TensorSource& src, HostTensorMap& hf, const std::string& o,
                     const std::string& h, const LlamaShapes& s) {
  hf[h + "input_layernorm.weight"] = src.take(o + "attention_norm.weight", {s.H});
  hf[h + "self_attn.q_proj.weight"] = src.take(o + "attention.q.weight", {s.q_rows, s.H});
  hf[h + "self_attn.k_proj.weight"] = src.take(o + "attention.k.weight", {s.kv_rows, s.H});
  hf[h + "self_attn.v_proj.weight"] = src.take(o + "attention.v.weight", {s.kv_rows, s.H});
  hf[h + "self_attn.o_proj.weight"] = src.take(o + "attention.proj.weight", {s.H, s.q_rows});
  hf[h + "post_attention_layernorm.weight"] = src.take(o + "ffn_norm.weight", {s.H});
}

void attention_from_hf(TensorSource& src, HostTensorMap& out, const std::string& o,
                       const std::string& h, const LlamaShapes& s) {
  out[o + "attention_norm.weight"] = src.take(h + "input_layernorm.weight", {s.H});
  out[o + "attention.q.weight"] = src.take(h + "self_attn.q_proj.weight", {s.q_rows, s.H});
  out[o + "attention.k.weight"] = src.take(h + "self_attn.k_proj.weight", {s.kv_rows, s.H});
  out[o + "attention.v.weight"] = src.take(h + "self_attn.v_proj.weight", {s.kv_rows, s.H});
  out[o + "attention.proj.weight"] = src.take(h + "self_attn.o_proj.weight", {s.H, s.q_rows});
  out[o + "ffn_norm.weight"] = src.take(h + "post_attention_layernorm.weight", {s.H});
  // Old checkpoints carry the RoPE frequency buffer; it is derived from rope_theta, not learnt.
  const std::string inv_freq = h + "self_attn.rotary_emb.inv_freq";
  if (src.has(inv_freq)) src.skip(inv_freq);
}

void ends_to_hf(TensorSource& src, HostTensorMap& hf, const LlamaShapes& s) {
  hf["model.embed_tokens.weight"] = src.take("embedding.weight", {s.V, s.H});
  hf["model.norm.weight"] = src.take("final_norm.weight", {s.H});
  // Tied: transformers re-ties lm_head to embed_tokens on load, so the file omits it.
  if (!s.tied) hf["lm_head.weight"] = src.take("lm_head.weight", {s.V, s.H});
}

void ends_from_hf(TensorSource& src, HostTensorMap& out, const LlamaShapes& s, const char* fn) {
  out["embedding.weight"] = src.take("model.embed_tokens.weight", {s.V, s.H});
  out["final_norm.weight"] = src.take("model.norm.weight", {s.H});
  if (!s.tied) {
    out["lm_head.weight"] = src.take("lm_head.weight", {s.V, s.H});
  } else if (src.has("lm_head.weight")) {
    // Some tied checkpoints still store the head; accept it only if it really is the embedding.
    const HostTensor& head = src.take("lm_head.weight", {s.V, s.H});
    check(head == out["embedding.weight"],
          "{}: model.tie_embeddings is true but 'lm_head.weight' differs from "
          "'model.embed_tokens.weight'; load with tie_embeddings false",
          fn);
  }
}

void refuse_moe_variants(const Config& cfg, const char* fn) {
  const auto& moe = cfg.moe;
  const auto& zc = moe.zero_compute_experts;
  const std::pair<const char*, bool> variants[] = {
      {"moe.zero_compute_experts (MoE++)", zc.total() > 0},
      {"moe.null_experts (AdaMoE)", moe.null_experts > 0},
      {"moe.residual (residual MoE)", moe.residual},
      {"moe.router.gating_residual (MoE++)", moe.router.gating_residual},
      {"moe.router.kind: recurrent (RMoE)", moe.router.kind != "linear"},
      {"moe.num_experts_per_layer (pyramid MoE)", !moe.num_experts_per_layer.empty()},
  };
  for (const auto& [key, on] : variants)
    check(!on, "{}: the Hugging Face MoE models compute top-k FFN experts only and cannot express "
          "{}; keep this model in Origami's checkpoint format", fn, key);
}

}  // namespace hf

void write_hf_directory(const std::string& dir, const StTensorMap& tensors,
                        const nlohmann::json& config, uint64_t max_shard_bytes) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  check(!ec, "export: cannot create directory '{}': {}", dir, ec.message());
  write_safetensors_sharded(dir, tensors, max_shard_bytes);
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ofstream out(path, std::ios::trunc);
  out << config.dump(2) << "\n";
  out.flush();
  check(bool(out), "export: writing '{}' failed", path);
}

std::pair<nlohmann::json, std::string> read_hf_config(const std::string& dir) {
  const std::string path = (fs::path(dir) / "config.json").string();
  std::ifstream in(path);
  check(bool(in), "import: cannot open '{}'", path);
  try {
    return {nlohmann::json::parse(in), path};
  } catch (const nlohmann::json::exception& e) {
    fail("import: '{}' is not valid JSON: {}", path, e.what());
  }
}

}  // namespace origami
