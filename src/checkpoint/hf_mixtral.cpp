// Origami <-> Mixtral (transformers MixtralForCausalLM) parameter and config conversion.
// Every conversion is a contiguous block copy: Origami's fused expert tensors (fc1
// [E, 2, F, H] = gate|up, fc2 [E, H, F]) are stacks of exactly the row blocks
// Mixtral stores per projection and per expert, both [out, in] row-major.
// RoPE: Origami rotates the two halves of each head (x_i with x_{i+hd/2}), which is transformers'
// rotate_half convention, so q_proj/k_proj rows need NO permutation (unlike Meta's interleaved
// checkpoints, which convert_mixtral_weights_to_hf.py permutes).
#include "checkpoint/hf_mixtral.h"

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "base/error.h"
#include "checkpoint/hf_tensor_map.h"

namespace origami {

namespace fs = std::filesystem;

using namespace hf;  // TensorSource, block, put, zeros

namespace {

const char* const kQwenHint =
    "Mixtral has only routed experts in every layer; shared experts and dense MLP layers need "
    "Qwen2-MoE naming (mlp.experts.E.{gate,up,down}_proj, mlp.shared_expert.*, "
    "mlp.shared_expert_gate): use origami-ckpt export-hf --format qwen2_moe";

struct Dims {
  int64_t V, H, nh, nkv, hd, E, F, L;
  bool tied;
};

LlamaShapes llama_shapes(const Dims& d) {
  return {.V = d.V, .H = d.H, .q_rows = d.nh * d.hd, .kv_rows = d.nkv * d.hd, .tied = d.tied};
}

// The model shapes cfg implies, after checking Mixtral can express that model at all.
Dims mixtral_dims(const Config& cfg, const char* fn) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  hf::refuse_moe_variants(cfg, fn);
  check(moe.num_experts > 0, "{}: moe.num_experts = 0 makes every layer a dense MLP; {}", fn,
        kQwenHint);
  check(moe.shared_expert_ffn_hidden_size == 0,
        "{}: moe.shared_expert_ffn_hidden_size = {} gives each MoE layer a shared expert; {}", fn,
        moe.shared_expert_ffn_hidden_size, kQwenHint);
  check(moe.layer_freq == 1,
        "{}: moe.layer_freq = {} makes some layers dense MLPs (layers.1.mlp.*); {}", fn,
        moe.layer_freq, kQwenHint);
  check(moe.router.score == "softmax" && moe.router.renormalize,
        "{}: Mixtral routes with softmax scores and renormalised top-k weights; this model has "
        "moe.router.score = {} and renormalize = {}",
        fn, moe.router.score, moe.router.renormalize);
  // Plain softmax top-k is all the Hugging Face router computes; the exported model routes with
  // the schedule's final gate (top_k), whatever the step the checkpoint was saved at.
  check(moe.router.scaling_factor == 1.0 && moe.router.num_groups == 0 && !moe.router.expert_bias,
        "{}: the Hugging Face router cannot express moe.router.scaling_factor = {}, num_groups = "
        "{} or expert_bias = {} (allowed: 1, 0, false)",
        fn, moe.router.scaling_factor, moe.router.num_groups, moe.router.expert_bias);
  check(m.num_attention_heads > 0 && m.hidden_size % m.num_attention_heads == 0,
        "{}: model.hidden_size {} is not a multiple of model.num_attention_heads {}", fn,
        m.hidden_size, m.num_attention_heads);
  return {m.vocab_size,
          m.hidden_size,
          m.num_attention_heads,
          m.num_query_groups,
          m.hidden_size / m.num_attention_heads,
          moe.num_experts,
          moe.expert_ffn_hidden_size,
          m.num_layers,
          m.tie_embeddings};
}

std::string origami_layer(int64_t l) { return fmt::format("layers.{}.", l); }
std::string hf_layer(int64_t l) { return fmt::format("model.layers.{}.", l); }

}  // namespace

HostTensorMap to_mixtral(const HostTensorMap& origami, const Config& cfg) {
  const char* fn = "to_mixtral";
  // Name the offending parameter first: it is what a user will recognise in their model.
  for (const auto& [name, t] : origami)
    check(name.find(".shared_expert.") == std::string::npos &&
              name.find(".mlp.") == std::string::npos,
          "{}: parameter '{}' has no Mixtral counterpart; {}", fn, name, kQwenHint);
  const Dims d = mixtral_dims(cfg, fn);
  TensorSource src(origami, fn);
  HostTensorMap hf;
  const LlamaShapes ls = llama_shapes(d);
  ends_to_hf(src, hf, ls);
  for (int64_t l = 0; l < d.L; ++l) {
    const std::string o = origami_layer(l), h = hf_layer(l);
    attention_to_hf(src, hf, o, h, ls);
    hf[h + "block_sparse_moe.gate.weight"] = src.take(o + "moe.router.weight", {d.E, d.H});
    const HostTensor& fc1 = src.take(o + "moe.experts.fc1.weight", {d.E, 2, d.F, d.H});
    const HostTensor& fc2 = src.take(o + "moe.experts.fc2.weight", {d.E, d.H, d.F});
    for (int64_t e = 0; e < d.E; ++e) {
      const std::string x = fmt::format("{}block_sparse_moe.experts.{}.", h, e);
      hf[x + "w1.weight"] = block(fc1, (2 * e + 0) * d.F * d.H, {d.F, d.H});  // gate
      hf[x + "w3.weight"] = block(fc1, (2 * e + 1) * d.F * d.H, {d.F, d.H});  // up
      hf[x + "w2.weight"] = block(fc2, e * d.H * d.F, {d.H, d.F});            // down
    }
  }
  src.check_all_used(d.tied ? "Origami (tied embeddings: no lm_head.weight)" : "Origami");
  return hf;
}

HostTensorMap from_mixtral(const HostTensorMap& hf, const Config& cfg) {
  const char* fn = "from_mixtral";
  const Dims d = mixtral_dims(cfg, fn);
  TensorSource src(hf, fn);
  HostTensorMap o;
  const LlamaShapes ls = llama_shapes(d);
  ends_from_hf(src, o, ls, fn);
  for (int64_t l = 0; l < d.L; ++l) {
    const std::string p = origami_layer(l), h = hf_layer(l);
    attention_from_hf(src, o, p, h, ls);
    o[p + "moe.router.weight"] = src.take(h + "block_sparse_moe.gate.weight", {d.E, d.H});
    HostTensor fc1 = zeros({d.E, 2, d.F, d.H}), fc2 = zeros({d.E, d.H, d.F});
    for (int64_t e = 0; e < d.E; ++e) {
      const std::string x = fmt::format("{}block_sparse_moe.experts.{}.", h, e);
      put(fc1, (2 * e + 0) * d.F * d.H, src.take(x + "w1.weight", {d.F, d.H}));
      put(fc1, (2 * e + 1) * d.F * d.H, src.take(x + "w3.weight", {d.F, d.H}));
      put(fc2, e * d.H * d.F, src.take(x + "w2.weight", {d.H, d.F}));
    }
    o[p + "moe.experts.fc1.weight"] = std::move(fc1);
    o[p + "moe.experts.fc2.weight"] = std::move(fc2);
  }
  src.check_all_used("Mixtral");
  return o;
}

nlohmann::json mixtral_config_json(const Config& cfg, const std::string& torch_dtype) {
  const Dims d = mixtral_dims(cfg, "mixtral_config_json");
  check(torch_dtype == "float32" || torch_dtype == "bfloat16",
        "mixtral_config_json: torch_dtype '{}' (float32 or bfloat16)", torch_dtype);
  const auto& m = cfg.model;
  nlohmann::json j;
  j["architectures"] = {"MixtralForCausalLM"};
  j["model_type"] = "mixtral";
  j["torch_dtype"] = torch_dtype;
  j["vocab_size"] = d.V;
  j["hidden_size"] = d.H;
  j["intermediate_size"] = d.F;
  j["num_hidden_layers"] = d.L;
  j["num_attention_heads"] = d.nh;
  j["num_key_value_heads"] = d.nkv;
  j["head_dim"] = d.hd;
  j["num_local_experts"] = d.E;
  j["num_experts_per_tok"] = cfg.moe.top_k;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_theta;
  j["max_position_embeddings"] = m.max_seq_length;
  j["router_aux_loss_coef"] = cfg.moe.router.aux_loss_coeff;
  j["router_jitter_noise"] = 0.0;
  j["tie_word_embeddings"] = d.tied;
  j["sliding_window"] = nullptr;  // Origami attends over the whole sequence
  j["initializer_range"] = m.init_std;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["output_router_logits"] = false;
  j["use_cache"] = true;
  return j;
}

Config config_from_mixtral_json(const nlohmann::json& j, const std::string& source,
                                const Config& base) {
  check(j.is_object(), "{}: a Mixtral config.json must be a JSON object", source);
  if (j.contains("model_type"))
    check(j["model_type"] == "mixtral", "{}: model_type is {}, expected \"mixtral\"", source,
          j["model_type"].dump());
  auto number = [&](const char* key) -> const nlohmann::json& {
    const auto& v = j[key];
    check(v.is_number(), "{}: '{}' must be a number, got {}", source, key, v.dump());
    return v;
  };
  auto integer = [&](const char* key, std::optional<int64_t> fallback) -> int64_t {
    if (!j.contains(key) || j[key].is_null()) {
      check(fallback.has_value(), "{}: required key '{}' is missing", source, key);
      return *fallback;
    }
    const auto& v = number(key);
    check(v.is_number_integer() && v.get<int64_t>() > 0,
          "{}: '{}' must be a positive integer, got {}", source, key, v.dump());
    return v.get<int64_t>();
  };
  auto real = [&](const char* key, double fallback) -> double {
    return j.contains(key) && !j[key].is_null() ? number(key).get<double>() : fallback;
  };

  Config cfg = base;
  auto& m = cfg.model;
  auto& moe = cfg.moe;
  // Fallbacks are transformers' MixtralConfig defaults, which apply when a key is absent.
  m.vocab_size = integer("vocab_size", std::nullopt);
  m.hidden_size = integer("hidden_size", std::nullopt);
  m.num_layers = integer("num_hidden_layers", std::nullopt);
  // Bounded before anything loops over the layers (a fuzzed 10^12 would spin, not fail).
  check(m.num_layers <= 100000, "{}: num_hidden_layers {} is not a plausible layer count "
        "(allowed: <= 100000)", source, m.num_layers);
  m.num_attention_heads = integer("num_attention_heads", std::nullopt);
  m.num_query_groups = integer("num_key_value_heads", m.num_attention_heads);
  check(m.hidden_size % m.num_attention_heads == 0,
        "{}: hidden_size {} is not a multiple of num_attention_heads {}", source, m.hidden_size,
        m.num_attention_heads);
  const int64_t hd = integer("head_dim", m.hidden_size / m.num_attention_heads);
  check(hd == m.hidden_size / m.num_attention_heads,
        "{}: head_dim {} differs from hidden_size / num_attention_heads = {}; Origami derives "
        "the head size from those two",
        source, hd, m.hidden_size / m.num_attention_heads);
  m.max_seq_length = integer("max_position_embeddings", 4096 * 32);
  m.norm_eps = real("rms_norm_eps", 1e-5);
  m.rope_theta = real("rope_theta", 1e6);
  m.init_std = real("initializer_range", 0.02);
  if (j.contains("tie_word_embeddings")) {
    check(j["tie_word_embeddings"].is_boolean(), "{}: 'tie_word_embeddings' must be a boolean",
          source);
    m.tie_embeddings = j["tie_word_embeddings"].get<bool>();
  } else {
    m.tie_embeddings = false;
  }
  // model.ffn_hidden_size (dense layers) stays base's: a Mixtral model has no dense layer.
  if (j.contains("sliding_window") && !j["sliding_window"].is_null())
    check(integer("sliding_window", std::nullopt) >= m.max_seq_length,
          "{}: sliding_window {} is shorter than max_position_embeddings {}; Origami has no "
          "sliding-window attention",
          source, j["sliding_window"].dump(), m.max_seq_length);
  check(!j.contains("rope_scaling") || j["rope_scaling"].is_null(),
        "{}: rope_scaling {} is not supported (Origami uses plain RoPE)", source,
        j.contains("rope_scaling") ? j["rope_scaling"].dump() : "");
  if (j.contains("hidden_act"))
    check(j["hidden_act"] == "silu", "{}: hidden_act {} (Origami's experts are SwiGLU: silu)",
          source, j["hidden_act"].dump());

  moe.num_experts = integer("num_local_experts", 8);
  moe.top_k = integer("num_experts_per_tok", 2);
  check(moe.top_k <= moe.num_experts, "{}: num_experts_per_tok {} exceeds num_local_experts {}",
        source, moe.top_k, moe.num_experts);
  moe.expert_ffn_hidden_size = integer("intermediate_size", std::nullopt);
  moe.shared_expert_ffn_hidden_size = 0;
  moe.layer_freq = 1;
  moe.router.score = "softmax";
  moe.router.renormalize = true;
  // router_jitter_noise is a training-time perturbation Origami does not implement; inference
  // and the weights are unaffected, so it is not refused.
  moe.router.aux_loss_coeff = real("router_aux_loss_coef", 0.001);
  return cfg;
}

void save_mixtral(const std::string& dir, const HostTensorMap& origami, const Config& cfg,
                  const std::string& dtype, uint64_t max_shard_bytes) {
  check(dtype == "F32" || dtype == "BF16", "save_mixtral: dtype '{}' (F32 or BF16)", dtype);
  write_hf_directory(dir, encode_tensors(to_mixtral(origami, cfg), dtype),
                     mixtral_config_json(cfg, dtype == "F32" ? "float32" : "bfloat16"), max_shard_bytes);
}

MixtralModel load_mixtral(const std::string& dir, const Config& base) {
  const auto [config_json, path] = read_hf_config(dir);
  MixtralModel model;
  model.config = config_from_mixtral_json(config_json, path, base);
  model.params = from_mixtral(decode_tensors(read_safetensors_model(dir).tensors), model.config);
  return model;
}

}  // namespace origami
