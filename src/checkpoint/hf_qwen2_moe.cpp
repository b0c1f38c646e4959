// Origami <-> Qwen2-MoE (transformers Qwen2MoeForCausalLM) parameter and config conversion.
// Fused Origami tensors are stacks of the row blocks Qwen2-MoE stores per projection: expert
// fc1 [E, 2, F, H] = gate|up, fc2 [E, H, F], and the shared expert's and dense MLP's
// fc1 [2, F, H] = gate rows then up rows, fc2 [H, F]; attention q, k, v map one to one. RoPE
// is rotate_half in both, so no row permutation. The only arithmetic is the shared expert's x2 / x0.5, a power of two: exact.
#include "checkpoint/hf_qwen2_moe.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>

#include "base/error.h"
#include "checkpoint/hf_tensor_map.h"
#include "model/moe_transformer.h"

namespace origami {

namespace fs = std::filesystem;

using namespace hf;  // TensorSource, block, put, zeros

namespace {

struct Dims {
  int64_t V, H, nh, nkv, hd, E, F, S, D, L;  // F expert, S shared expert, D dense MLP hidden size
  bool tied;
};

LlamaShapes llama_shapes(const Dims& d) {
  return {.V = d.V, .H = d.H, .q_rows = d.nh * d.hd, .kv_rows = d.nkv * d.hd, .tied = d.tied};
}

// The model shapes cfg implies, after checking Qwen2-MoE can express that model at all.
Dims qwen_dims(const Config& cfg, const char* fn) {
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  hf::refuse_moe_variants(cfg, fn);
  check(moe.num_experts > 0,
        "{}: moe.num_experts = 0 makes every layer dense; Qwen2-MoE needs at least one MoE layer",
        fn);
  // transformers' Qwen2MoeSparseMoeBlock always builds a shared expert and its gate; whether a
  // zero-sized one (shared_expert_intermediate_size 0) loads everywhere is unverified, so refuse.
  check(moe.shared_expert_ffn_hidden_size > 0,
        "{}: moe.shared_expert_ffn_hidden_size = 0 (no shared expert), but every Qwen2-MoE MoE "
        "layer has one; export a model without shared experts with Mixtral naming instead",
        fn);
  check(moe.router.score == "softmax",
        "{}: Qwen2-MoE routes with softmax scores; this model has moe.router.score = {}", fn,
        moe.router.score);
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
          moe.shared_expert_ffn_hidden_size,
          m.ffn_hidden_size,
          m.num_layers,
          m.tie_embeddings};
}

// t * factor for factor 2 or 1/2: exact for every finite result (a power of two only moves the
// exponent), except halving a subnormal, which can round away its lowest bit (|change| <= 2^-150).
HostTensor scaled(const HostTensor& t, float factor, const std::string& name, const char* fn) {
  HostTensor out = t;
  for (size_t i = 0; i < out.data.size(); ++i) {
    out.data[i] *= factor;
    check(std::isfinite(out.data[i]) || !std::isfinite(t.data[i]),
          "{}: '{}' element {} = {} overflows fp32 when scaled by {} for Qwen2-MoE's sigmoid(0) "
          "= 1/2 shared-expert gate",
          fn, name, i, t.data[i], factor);
  }
  return out;
}

// Origami has no parameter for these; only zeros (the value Origami computes with) convert.
void require_zeros(const HostTensor& t, const std::string& name, const char* fn, const char* why) {
  for (size_t i = 0; i < t.data.size(); ++i)
    check(t.data[i] == 0.f, "{}: tensor '{}' element {} is {}, not 0; {}", fn, name, i, t.data[i],
          why);
}

const char* const kBiasWhy =
    "Origami's attention has no q/k/v bias, so this model cannot be imported";
const char* const kSharedGateWhy =
    "Origami adds its shared expert ungated, which Qwen2-MoE expresses only as a zero "
    "shared_expert_gate (sigmoid(0) = 1/2, with down_proj doubled), so this model cannot be "
    "imported";

std::string origami_layer(int64_t l) { return fmt::format("layers.{}.", l); }
std::string hf_layer(int64_t l) { return fmt::format("model.layers.{}.", l); }

}  // namespace

HostTensorMap to_qwen2_moe(const HostTensorMap& origami, const Config& cfg) {
  const char* fn = "to_qwen2_moe";
  const Dims d = qwen_dims(cfg, fn);
  TensorSource src(origami, fn);
  HostTensorMap hf;
  const LlamaShapes ls = llama_shapes(d);
  const int64_t q_rows = ls.q_rows, kv_rows = ls.kv_rows;
  ends_to_hf(src, hf, ls);
  for (int64_t l = 0; l < d.L; ++l) {
    const std::string o = origami_layer(l), h = hf_layer(l);
    attention_to_hf(src, hf, o, h, ls);
    // Qwen2 attention always has q/k/v biases (qkv_bias defaults to true): Origami's are zero.
    hf[h + "self_attn.q_proj.bias"] = zeros({q_rows});
    hf[h + "self_attn.k_proj.bias"] = zeros({kv_rows});
    hf[h + "self_attn.v_proj.bias"] = zeros({kv_rows});
    if (!MoeTransformer::is_moe_layer(cfg, int(l))) {
      const HostTensor& fc1 = src.take(o + "mlp.fc1.weight", {2, d.D, d.H});
      hf[h + "mlp.gate_proj.weight"] = block(fc1, 0, {d.D, d.H});
      hf[h + "mlp.up_proj.weight"] = block(fc1, d.D * d.H, {d.D, d.H});
      hf[h + "mlp.down_proj.weight"] = src.take(o + "mlp.fc2.weight", {d.H, d.D});
      continue;
    }
    hf[h + "mlp.gate.weight"] = src.take(o + "moe.router.weight", {d.E, d.H});
    const HostTensor& fc1 = src.take(o + "moe.experts.fc1.weight", {d.E, 2, d.F, d.H});
    const HostTensor& fc2 = src.take(o + "moe.experts.fc2.weight", {d.E, d.H, d.F});
    for (int64_t e = 0; e < d.E; ++e) {
      const std::string x = fmt::format("{}mlp.experts.{}.", h, e);
      hf[x + "gate_proj.weight"] = block(fc1, (2 * e + 0) * d.F * d.H, {d.F, d.H});
      hf[x + "up_proj.weight"] = block(fc1, (2 * e + 1) * d.F * d.H, {d.F, d.H});
      hf[x + "down_proj.weight"] = block(fc2, e * d.H * d.F, {d.H, d.F});
    }
    const HostTensor& sfc1 = src.take(o + "moe.shared_expert.fc1.weight", {2, d.S, d.H});
    const std::string sfc2 = o + "moe.shared_expert.fc2.weight";
    hf[h + "mlp.shared_expert.gate_proj.weight"] = block(sfc1, 0, {d.S, d.H});
    hf[h + "mlp.shared_expert.up_proj.weight"] = block(sfc1, d.S * d.H, {d.S, d.H});
    hf[h + "mlp.shared_expert.down_proj.weight"] =
        scaled(src.take(sfc2, {d.H, d.S}), 2.f, sfc2, fn);
    hf[h + "mlp.shared_expert_gate.weight"] = zeros({1, d.H});
  }
  src.check_all_used(d.tied ? "Origami (tied embeddings: no lm_head.weight)" : "Origami");
  return hf;
}

HostTensorMap from_qwen2_moe(const HostTensorMap& hf, const Config& cfg) {
  const char* fn = "from_qwen2_moe";
  const Dims d = qwen_dims(cfg, fn);
  TensorSource src(hf, fn);
  HostTensorMap o;
  const LlamaShapes ls = llama_shapes(d);
  const int64_t q_rows = ls.q_rows, kv_rows = ls.kv_rows;
  ends_from_hf(src, o, ls, fn);
  for (int64_t l = 0; l < d.L; ++l) {
    const std::string p = origami_layer(l), h = hf_layer(l);
    attention_from_hf(src, o, p, h, ls);
    // Biases are absent when config.json says qkv_bias false; present, they must be zero.
    const std::pair<const char*, int64_t> biases[] = {
        {"q", q_rows}, {"k", kv_rows}, {"v", kv_rows}};
    for (const auto& [proj, rows] : biases) {
      const std::string bias = fmt::format("{}self_attn.{}_proj.bias", h, proj);
      if (src.has(bias)) require_zeros(src.take(bias, {rows}), bias, fn, kBiasWhy);
    }
    if (!MoeTransformer::is_moe_layer(cfg, int(l))) {
      HostTensor fc1 = zeros({2, d.D, d.H});
      put(fc1, 0, src.take(h + "mlp.gate_proj.weight", {d.D, d.H}));
      put(fc1, d.D * d.H, src.take(h + "mlp.up_proj.weight", {d.D, d.H}));
      o[p + "mlp.fc1.weight"] = std::move(fc1);
      o[p + "mlp.fc2.weight"] = src.take(h + "mlp.down_proj.weight", {d.H, d.D});
      continue;
    }
    o[p + "moe.router.weight"] = src.take(h + "mlp.gate.weight", {d.E, d.H});
    HostTensor fc1 = zeros({d.E, 2, d.F, d.H}), fc2 = zeros({d.E, d.H, d.F});
    for (int64_t e = 0; e < d.E; ++e) {
      const std::string x = fmt::format("{}mlp.experts.{}.", h, e);
      put(fc1, (2 * e + 0) * d.F * d.H, src.take(x + "gate_proj.weight", {d.F, d.H}));
      put(fc1, (2 * e + 1) * d.F * d.H, src.take(x + "up_proj.weight", {d.F, d.H}));
      put(fc2, e * d.H * d.F, src.take(x + "down_proj.weight", {d.H, d.F}));
    }
    o[p + "moe.experts.fc1.weight"] = std::move(fc1);
    o[p + "moe.experts.fc2.weight"] = std::move(fc2);
    const std::string gate = h + "mlp.shared_expert_gate.weight";
    require_zeros(src.take(gate, {1, d.H}), gate, fn, kSharedGateWhy);
    HostTensor sfc1 = zeros({2, d.S, d.H});
    put(sfc1, 0, src.take(h + "mlp.shared_expert.gate_proj.weight", {d.S, d.H}));
    put(sfc1, d.S * d.H, src.take(h + "mlp.shared_expert.up_proj.weight", {d.S, d.H}));
    o[p + "moe.shared_expert.fc1.weight"] = std::move(sfc1);
    const std::string down = h + "mlp.shared_expert.down_proj.weight";
    o[p + "moe.shared_expert.fc2.weight"] = scaled(src.take(down, {d.H, d.S}), 0.5f, down, fn);
  }
  src.check_all_used("Qwen2-MoE");
  return o;
}

nlohmann::json qwen2_moe_config_json(const Config& cfg, const std::string& torch_dtype) {
  const Dims d = qwen_dims(cfg, "qwen2_moe_config_json");
  check(torch_dtype == "float32" || torch_dtype == "bfloat16",
        "qwen2_moe_config_json: torch_dtype '{}' (float32 or bfloat16)", torch_dtype);
  const auto& m = cfg.model;
  // Origami's MoE layers are l % layer_freq == 0; with decoder_sparse_step 1 every layer is MoE
  // unless listed in mlp_only_layers, so listing the others gives the same pattern.
  std::vector<int64_t> dense_layers;
  for (int64_t l = 0; l < d.L; ++l)
    if (!MoeTransformer::is_moe_layer(cfg, int(l))) dense_layers.push_back(l);
  nlohmann::json j;
  j["architectures"] = {"Qwen2MoeForCausalLM"};
  j["model_type"] = "qwen2_moe";
  j["torch_dtype"] = torch_dtype;
  j["vocab_size"] = d.V;
  j["hidden_size"] = d.H;
  j["intermediate_size"] = d.D;
  j["num_hidden_layers"] = d.L;
  j["num_attention_heads"] = d.nh;
  j["num_key_value_heads"] = d.nkv;
  j["head_dim"] = d.hd;
  j["num_experts"] = d.E;
  j["num_experts_per_tok"] = cfg.moe.top_k;
  j["moe_intermediate_size"] = d.F;
  j["shared_expert_intermediate_size"] = d.S;
  j["norm_topk_prob"] = cfg.moe.router.renormalize;
  j["decoder_sparse_step"] = 1;
  j["mlp_only_layers"] = dense_layers;
  j["rms_norm_eps"] = m.norm_eps;
  j["rope_theta"] = m.rope_theta;
  j["max_position_embeddings"] = m.max_seq_length;
  j["router_aux_loss_coef"] = cfg.moe.router.aux_loss_coeff;
  j["tie_word_embeddings"] = d.tied;
  j["qkv_bias"] = true;  // the exported biases are zeros; older transformers always build them
  j["use_sliding_window"] = false;  // Origami attends over the whole sequence
  j["sliding_window"] = nullptr;
  j["max_window_layers"] = d.L;
  j["initializer_range"] = m.init_std;
  j["hidden_act"] = "silu";
  j["attention_dropout"] = 0.0;
  j["output_router_logits"] = false;
  j["use_cache"] = true;
  return j;
}

Config config_from_qwen2_moe_json(const nlohmann::json& j, const std::string& source,
                                  const Config& base) {
  check(j.is_object(), "{}: a Qwen2-MoE config.json must be a JSON object", source);
  if (j.contains("model_type"))
    check(j["model_type"] == "qwen2_moe", "{}: model_type is {}, expected \"qwen2_moe\"", source,
          j["model_type"].dump());
  auto present = [&](const char* key) { return j.contains(key) && !j[key].is_null(); };
  auto number = [&](const char* key) -> const nlohmann::json& {
    const auto& v = j[key];
    check(v.is_number(), "{}: '{}' must be a number, got {}", source, key, v.dump());
    return v;
  };
  auto integer = [&](const char* key, std::optional<int64_t> fallback) -> int64_t {
    if (!present(key)) {
      check(fallback.has_value(), "{}: required key '{}' is missing", source, key);
      return *fallback;
    }
    const auto& v = number(key);
    check(v.is_number_integer() && v.get<int64_t>() > 0,
          "{}: '{}' must be a positive integer, got {}", source, key, v.dump());
    return v.get<int64_t>();
  };
  auto real = [&](const char* key, double fallback) -> double {
    return present(key) ? number(key).get<double>() : fallback;
  };
  auto boolean = [&](const char* key, bool fallback) -> bool {
    if (!present(key)) return fallback;
    check(j[key].is_boolean(), "{}: '{}' must be a boolean, got {}", source, key, j[key].dump());
    return j[key].get<bool>();
  };

  Config cfg = base;
  auto& m = cfg.model;
  auto& moe = cfg.moe;
  // Fallbacks are transformers' Qwen2MoeConfig defaults, which apply when a key is absent.
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
  m.ffn_hidden_size = integer("intermediate_size", 5632);
  m.max_seq_length = integer("max_position_embeddings", 32768);
  m.norm_eps = real("rms_norm_eps", 1e-6);
  m.init_std = real("initializer_range", 0.02);
  m.tie_embeddings = boolean("tie_word_embeddings", false);
  check(!present("rope_scaling"), "{}: rope_scaling {} is not supported (Origami uses plain RoPE)",
        source, present("rope_scaling") ? j["rope_scaling"].dump() : "");
  // transformers v5 writes rope_parameters {"rope_type": "default", "rope_theta": ...}.
  double theta = 10000.0;
  if (present("rope_parameters")) {
    const auto& rp = j["rope_parameters"];
    check(rp.is_object() && (!rp.contains("rope_type") || rp["rope_type"] == "default"),
          "{}: rope_parameters {} is not supported (Origami uses plain RoPE: rope_type default)",
          source, rp.dump());
    if (rp.contains("rope_theta")) {
      check(rp["rope_theta"].is_number(), "{}: rope_parameters.rope_theta must be a number",
            source);
      theta = rp["rope_theta"].get<double>();
    }
  }
  m.rope_theta = real("rope_theta", theta);
  if (boolean("use_sliding_window", false))
    check(present("sliding_window") && integer("sliding_window", std::nullopt) >= m.max_seq_length,
          "{}: use_sliding_window is true with sliding_window {} shorter than "
          "max_position_embeddings {}; Origami has no sliding-window attention",
          source, j.value("sliding_window", nlohmann::json()).dump(), m.max_seq_length);
  if (present("hidden_act"))
    check(j["hidden_act"] == "silu", "{}: hidden_act {} (Origami's MLPs are SwiGLU: silu)", source,
          j["hidden_act"].dump());

  moe.num_experts = integer("num_experts", 60);
  moe.top_k = integer("num_experts_per_tok", 4);
  check(moe.top_k <= moe.num_experts, "{}: num_experts_per_tok {} exceeds num_experts {}", source,
        moe.top_k, moe.num_experts);
  moe.expert_ffn_hidden_size = integer("moe_intermediate_size", 1408);
  check(!present("shared_expert_intermediate_size") || j["shared_expert_intermediate_size"] != 0,
        "{}: shared_expert_intermediate_size 0 (no shared expert) is not converted; Origami "
        "imports Qwen2-MoE models with a shared expert",
        source);
  moe.shared_expert_ffn_hidden_size = integer("shared_expert_intermediate_size", 5632);
  moe.router.score = "softmax";
  moe.router.renormalize = boolean("norm_topk_prob", false);
  moe.router.aux_loss_coeff = real("router_aux_loss_coef", 0.001);

  // Qwen2-MoE: layer l is MoE iff l is not in mlp_only_layers and (l + 1) % decoder_sparse_step
  // == 0. Origami: iff l % layer_freq == 0. Take layer_freq from the second MoE layer (the first
  // must be layer 0) and check the whole pattern agrees.
  const int64_t step = integer("decoder_sparse_step", 1);
  std::set<int64_t> mlp_only;
  if (present("mlp_only_layers")) {
    check(j["mlp_only_layers"].is_array(), "{}: 'mlp_only_layers' must be a list of layer indices",
          source);
    for (const auto& v : j["mlp_only_layers"]) {
      check(v.is_number_integer(), "{}: mlp_only_layers entry {} is not a layer index", source,
            v.dump());
      mlp_only.insert(v.get<int64_t>());
    }
  }
  std::vector<int64_t> moe_layers;
  for (int64_t l = 0; l < m.num_layers; ++l)
    if (!mlp_only.count(l) && (l + 1) % step == 0) moe_layers.push_back(l);
  const std::string pattern = fmt::format(
      "decoder_sparse_step {} and mlp_only_layers {} make layers [{}] MoE", step,
      present("mlp_only_layers") ? j["mlp_only_layers"].dump() : "[]", fmt::join(moe_layers, ", "));
  check(!moe_layers.empty() && moe_layers[0] == 0,
        "{}: {}; Origami's MoE layers are those with l % moe.layer_freq == 0, which always "
        "includes layer 0",
        source, pattern);
  moe.layer_freq = moe_layers.size() > 1 ? moe_layers[1] : m.num_layers;
  for (int64_t l = 0; l < m.num_layers; ++l)
    check(MoeTransformer::is_moe_layer(cfg, int(l)) ==
              std::binary_search(moe_layers.begin(), moe_layers.end(), l),
          "{}: {}; Origami's MoE layers are those with l % moe.layer_freq == 0, and no layer_freq "
          "gives this pattern (layer_freq {} differs at layer {})",
          source, pattern, moe.layer_freq, l);
  return cfg;
}

void save_qwen2_moe(const std::string& dir, const HostTensorMap& origami, const Config& cfg,
                    const std::string& dtype, uint64_t max_shard_bytes) {
  check(dtype == "F32" || dtype == "BF16", "save_qwen2_moe: dtype '{}' (F32 or BF16)", dtype);
  write_hf_directory(dir, encode_tensors(to_qwen2_moe(origami, cfg), dtype),
                     qwen2_moe_config_json(cfg, dtype == "F32" ? "float32" : "bfloat16"), max_shard_bytes);
}

Qwen2MoeModel load_qwen2_moe(const std::string& dir, const Config& base) {
  const auto [config_json, path] = read_hf_config(dir);
  Qwen2MoeModel model;
  model.config = config_from_qwen2_moe_json(config_json, path, base);
  model.params = from_qwen2_moe(decode_tensors(read_safetensors_model(dir).tensors), model.config);
  return model;
}

}  // namespace origami
