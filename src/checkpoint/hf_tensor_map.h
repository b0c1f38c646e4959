// defines: hf::TensorSource, hf::block(), hf::put(), hf::zeros(), hf::LlamaShapes and the
//          shared attention / embedding conversions, write_hf_directory(), read_hf_config()
// The small tools both Hugging Face namings (hf_mixtral.cpp, hf_qwen2_moe.cpp) convert with:
// taking named tensors with their shapes checked (and catching leftovers), and cutting or
// placing row blocks of fused tensors.
#pragma once
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <utility>

#include "base/error.h"
#include "config/config.h"
#include "checkpoint/safetensors.h"

namespace origami::hf {

// Looks up `name`, checks its shape, and marks it used (leftovers are unknown names).
class TensorSource {
 public:
  TensorSource(const HostTensorMap& m, const char* fn) : m_(m), fn_(fn) {}

  const HostTensor& take(const std::string& name, const std::vector<int64_t>& shape) {
    auto it = m_.find(name);
    check(it != m_.end(), "{}: tensor '{}' is missing (expected shape {})", fn_, name,
          shape_str(shape));
    const HostTensor& t = it->second;
    check(t.shape == shape, "{}: tensor '{}' has shape {}, expected {}", fn_, name,
          shape_str(t.shape), shape_str(shape));
    check(t.data.size() == size_t(numel(shape)), "{}: tensor '{}' of shape {} holds {} values", fn_,
          name, shape_str(shape), t.data.size());
    used_.insert(name);
    return t;
  }
  bool has(const std::string& name) const { return m_.count(name) == 1; }
  void skip(const std::string& name) { used_.insert(name); }

  void check_all_used(const char* what) const {
    for (const auto& [name, t] : m_)
      check(used_.count(name) == 1, "{}: tensor '{}' is not a {} parameter of this config", fn_,
            name, what);
  }

 private:
  const HostTensorMap& m_;
  const char* fn_;
  std::set<std::string> used_;
};

// Elements [offset, offset + numel(shape)) of t as a tensor of `shape`.
inline HostTensor block(const HostTensor& t, int64_t offset, std::vector<int64_t> shape) {
  const int64_t n = numel(shape);
  return {std::move(shape),
          std::vector<float>(t.data.begin() + offset, t.data.begin() + offset + n)};
}

inline void put(HostTensor& dst, int64_t offset, const HostTensor& src) {
  std::copy(src.data.begin(), src.data.end(), dst.data.begin() + offset);
}

inline HostTensor zeros(std::vector<int64_t> shape) {
  const size_t n = size_t(numel(shape));
  return {std::move(shape), std::vector<float>(n)};
}

// The Llama skeleton every supported naming shares: embed_tokens, per layer input_layernorm,
// self_attn.{q,k,v,o}_proj (Origami's attention.{q,k,v,proj}), post_attention_layernorm, and
// model.norm / lm_head. Each naming adds its MLP / MoE tensors (and extras such as biases).
struct LlamaShapes {
  int64_t V, H, q_rows, kv_rows;  // vocabulary, hidden, nh*hd, nkv*hd
  bool tied;
};
// Origami layer prefix `o` ("layers.3.") -> HF prefix `h` ("model.layers.3.").
void attention_to_hf(TensorSource& src, HostTensorMap& hf, const std::string& o,
                     const std::string& h, const LlamaShapes& s);
void attention_from_hf(TensorSource& src, HostTensorMap& out, const std::string& o,
                       const std::string& h, const LlamaShapes& s);
// Embedding, final norm and (untied) head; a tied import accepts a stored lm_head only if it
// equals the embedding.
void ends_to_hf(TensorSource& src, HostTensorMap& hf, const LlamaShapes& s);
void ends_from_hf(TensorSource& src, HostTensorMap& out, const LlamaShapes& s, const char* fn);

// The MoE variants no Hugging Face MoE class computes (MoE++'s zero-computation experts and
// gating residual, AdaMoE's null experts, the recurrent router, residual and pyramid MoE): an
// Error naming
// the first such key, for both namings' export and import. A frozen router exports as it is.
void refuse_moe_variants(const Config& cfg, const char* fn);

}  // namespace origami::hf

namespace origami {

// A transformers directory: the tensors as safetensors (sharded above max_shard_bytes, with an
// index) and config.json.
void write_hf_directory(const std::string& dir, const StTensorMap& tensors,
                        const nlohmann::json& config, uint64_t max_shard_bytes);
// config.json of such a directory, and its path (for error messages).
std::pair<nlohmann::json, std::string> read_hf_config(const std::string& dir);

}  // namespace origami
