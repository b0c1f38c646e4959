// Origami <-> Qwen2-MoE conversion: bit-exact round trips on a random tiny model with a shared
// expert and a dense layer, where each element lands (q/k/v rows, zero biases, experts, the
// doubled shared down_proj, dense MLP), config.json both ways including the MoE-layer pattern,
// the refusals, a save/load through safetensors, and PyTorch's Qwen2-MoE forward on an export
// reproducing Origami's logits.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cfloat>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include "base/error.h"
#include "checkpoint/hf_qwen2_moe.h"
#include "model/moe_transformer.h"

namespace origami {
namespace {

namespace fs = std::filesystem;

// E=4, L=3 with layer_freq 2 (layers 0 and 2 MoE, 1 dense), 4 query heads sharing 2 KV heads
// (hd = 2); expert, shared-expert and dense sizes differ so a swapped one fails a shape check.
Config tiny_config(bool tied = false) {
  Config c;
  c.model.vocab_size = 17;
  c.model.hidden_size = 8;
  c.model.num_layers = 3;
  c.model.num_attention_heads = 4;
  c.model.num_query_groups = 2;
  c.model.ffn_hidden_size = 10;
  c.model.max_seq_length = 32;
  c.model.tie_embeddings = tied;
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 6;
  c.moe.shared_expert_ffn_hidden_size = 4;
  c.moe.layer_freq = 2;
  return c;
}

HostTensor random_tensor(std::vector<int64_t> shape, std::mt19937& rng) {
  std::normal_distribution<float> dist(0.f, 1.f);
  HostTensor t{std::move(shape), {}};
  t.data.resize(size_t(numel(t.shape)));
  for (float& v : t.data) v = dist(rng);
  return t;
}

// Origami's parameters as the model code names and shapes them (checked against the real
// ParamStore in DeclaredParametersRoundTrip).
HostTensorMap random_origami(const Config& c, uint32_t seed) {
  std::mt19937 rng(seed);
  const int64_t V = c.model.vocab_size, H = c.model.hidden_size, nh = c.model.num_attention_heads,
                nkv = c.model.num_query_groups, hd = H / nh, E = c.moe.num_experts,
                F = c.moe.expert_ffn_hidden_size, S = c.moe.shared_expert_ffn_hidden_size,
                D = c.model.ffn_hidden_size;
  HostTensorMap m;
  m["embedding.weight"] = random_tensor({V, H}, rng);
  for (int64_t l = 0; l < c.model.num_layers; ++l) {
    const std::string p = fmt::format("layers.{}.", l);
    m[p + "attention_norm.weight"] = random_tensor({H}, rng);
    m[p + "attention.q.weight"] = random_tensor({nh * hd, H}, rng);
    m[p + "attention.k.weight"] = random_tensor({nkv * hd, H}, rng);
    m[p + "attention.v.weight"] = random_tensor({nkv * hd, H}, rng);
    m[p + "attention.proj.weight"] = random_tensor({H, nh * hd}, rng);
    m[p + "ffn_norm.weight"] = random_tensor({H}, rng);
    if (MoeTransformer::is_moe_layer(c, int(l))) {
      m[p + "moe.router.weight"] = random_tensor({E, H}, rng);
      m[p + "moe.experts.fc1.weight"] = random_tensor({E, 2, F, H}, rng);
      m[p + "moe.experts.fc2.weight"] = random_tensor({E, H, F}, rng);
      m[p + "moe.shared_expert.fc1.weight"] = random_tensor({2, S, H}, rng);
      m[p + "moe.shared_expert.fc2.weight"] = random_tensor({H, S}, rng);
    } else {
      m[p + "mlp.fc1.weight"] = random_tensor({2, D, H}, rng);
      m[p + "mlp.fc2.weight"] = random_tensor({H, D}, rng);
    }
  }
  m["final_norm.weight"] = random_tensor({H}, rng);
  if (!c.model.tie_embeddings) m["lm_head.weight"] = random_tensor({V, H}, rng);
  return m;
}

// Row r of a 2-D tensor, or row r of the [a][b] matrix of a 4-D [A, B, R, C] tensor.
std::vector<float> row(const HostTensor& t, int64_t r) {
  const int64_t C = t.shape.back();
  return {t.data.begin() + r * C, t.data.begin() + (r + 1) * C};
}
std::vector<float> row(const HostTensor& t, int64_t a, int64_t b, int64_t r) {
  const int64_t R = t.shape[t.shape.size() - 2], C = t.shape.back();
  const int64_t B = t.shape.size() == 4 ? t.shape[1] : 1;
  const int64_t off = ((a * B + b) * R + r) * C;
  return {t.data.begin() + off, t.data.begin() + off + C};
}

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  ADD_FAILURE() << "expected an Error";
  return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

TEST(HfQwen2Moe, RoundTripIsBitExact) {
  for (bool tied : {false, true}) {
    const Config c = tiny_config(tied);
    const HostTensorMap x = random_origami(c, 11);
    const HostTensorMap hf = to_qwen2_moe(x, c);
    // embed + L * (2 norms + q,k,v,o + 3 biases) + MoE layers * (gate + 3E experts + 3 shared +
    // shared gate) + dense layers * 3 + norm (+ lm_head); layers 0 and 2 are MoE, 1 dense.
    const size_t attn = 2 + 4 + 3, moe = 1 + 3 * size_t(c.moe.num_experts) + 3 + 1, dense = 3;
    EXPECT_EQ(hf.size(), 2 + 3 * attn + 2 * moe + dense + (tied ? 0 : 1));
    EXPECT_EQ(hf.count("lm_head.weight"), tied ? 0u : 1u);
    EXPECT_EQ(from_qwen2_moe(hf, c), x) << "tied=" << tied;
  }
  // Values whose doubling or halving would round if it were not a power of two: extremes.
  const Config c = tiny_config();
  HostTensorMap x = random_origami(c, 12);
  auto& fc2 = x["layers.2.moe.shared_expert.fc2.weight"].data;
  fc2[0] = FLT_MAX / 2;
  fc2[1] = FLT_MIN;                   // smallest normal: doubles and halves exactly
  fc2[2] = std::nextafter(1.f, 2.f);  // 1 + 2^-23
  fc2[3] = -0.f;
  const HostTensorMap back = from_qwen2_moe(to_qwen2_moe(x, c), c);
  EXPECT_EQ(back, x);
  EXPECT_TRUE(std::signbit(back.at("layers.2.moe.shared_expert.fc2.weight").data[3]));
}

TEST(HfQwen2Moe, ElementPlacement) {
  const Config c = tiny_config();
  const HostTensorMap x = random_origami(c, 13);
  const HostTensorMap hf = to_qwen2_moe(x, c);
  const int64_t hd = 2, nh = 4, nkv = 2, H = 8, F = 6, S = 4, D = 10;
  const std::string a = "model.layers.1.self_attn.";
  EXPECT_EQ(hf.at(a + "q_proj.weight"), x.at("layers.1.attention.q.weight"));
  EXPECT_EQ(hf.at(a + "k_proj.weight"), x.at("layers.1.attention.k.weight"));
  EXPECT_EQ(hf.at(a + "v_proj.weight"), x.at("layers.1.attention.v.weight"));
  EXPECT_EQ(hf.at(a + "q_proj.bias"), (HostTensor{{nh * hd}, std::vector<float>(nh * hd)}));
  EXPECT_EQ(hf.at(a + "k_proj.bias"), (HostTensor{{nkv * hd}, std::vector<float>(nkv * hd)}));
  EXPECT_EQ(hf.at(a + "v_proj.bias"), (HostTensor{{nkv * hd}, std::vector<float>(nkv * hd)}));
  EXPECT_EQ(hf.count(a + "o_proj.bias"), 0u);
  EXPECT_EQ(hf.at(a + "o_proj.weight"), x.at("layers.1.attention.proj.weight"));

  // Layer 2: MoE with a shared expert.
  const std::string m = "model.layers.2.mlp.";
  EXPECT_EQ(hf.at(m + "gate.weight"), x.at("layers.2.moe.router.weight"));
  const HostTensor& fc1 = x.at("layers.2.moe.experts.fc1.weight");
  const HostTensor& fc2 = x.at("layers.2.moe.experts.fc2.weight");
  for (int64_t r = 0; r < F; ++r) {
    EXPECT_EQ(row(hf.at(m + "experts.3.gate_proj.weight"), r), row(fc1, 3, 0, r));
    EXPECT_EQ(row(hf.at(m + "experts.3.up_proj.weight"), r), row(fc1, 3, 1, r));
  }
  for (int64_t r = 0; r < H; ++r)
    EXPECT_EQ(row(hf.at(m + "experts.3.down_proj.weight"), r), row(fc2, 3, 0, r));
  EXPECT_EQ(hf.at(m + "experts.3.down_proj.weight").shape, (std::vector<int64_t>{H, F}));
  const HostTensor& sfc1 = x.at("layers.2.moe.shared_expert.fc1.weight");
  const HostTensor& sfc2 = x.at("layers.2.moe.shared_expert.fc2.weight");
  for (int64_t r = 0; r < S; ++r) {
    EXPECT_EQ(row(hf.at(m + "shared_expert.gate_proj.weight"), r), row(sfc1, r));
    EXPECT_EQ(row(hf.at(m + "shared_expert.up_proj.weight"), r), row(sfc1, S + r));
  }
  const HostTensor& down = hf.at(m + "shared_expert.down_proj.weight");
  ASSERT_EQ(down.shape, (std::vector<int64_t>{H, S}));
  for (size_t i = 0; i < down.data.size(); ++i)
    EXPECT_EQ(down.data[i], 2.f * sfc2.data[i]) << "sigmoid(0) = 1/2 is compensated by x2";
  EXPECT_EQ(hf.at(m + "shared_expert_gate.weight"), (HostTensor{{1, H}, std::vector<float>(H)}));

  // Layer 1: dense.
  const std::string d = "model.layers.1.mlp.";
  const HostTensor& dfc1 = x.at("layers.1.mlp.fc1.weight");
  for (int64_t r = 0; r < D; ++r) {
    EXPECT_EQ(row(hf.at(d + "gate_proj.weight"), r), row(dfc1, r));
    EXPECT_EQ(row(hf.at(d + "up_proj.weight"), r), row(dfc1, D + r));
  }
  EXPECT_EQ(hf.at(d + "down_proj.weight"), x.at("layers.1.mlp.fc2.weight"));
  EXPECT_EQ(hf.count(d + "gate.weight"), 0u);
  EXPECT_EQ(hf.count(d + "shared_expert_gate.weight"), 0u);

  EXPECT_EQ(hf.at("model.layers.0.input_layernorm.weight"), x.at("layers.0.attention_norm.weight"));
  EXPECT_EQ(hf.at("model.layers.0.post_attention_layernorm.weight"),
            x.at("layers.0.ffn_norm.weight"));
  EXPECT_EQ(hf.at("model.embed_tokens.weight"), x.at("embedding.weight"));
  EXPECT_EQ(hf.at("model.norm.weight"), x.at("final_norm.weight"));
  EXPECT_EQ(hf.at("lm_head.weight"), x.at("lm_head.weight"));
}

HostTensorMap declared_parameters(Backend& be, MoeTransformer& model) {
  HostTensorMap m;
  for (const Param& p : model.params().all()) {
    HostTensor t{p.spec.global_shape, std::vector<float>(size_t(p.value.numel()))};
    be.copy_to_host(t.data.data(), p.value.data(), p.value.bytes());
    m.emplace(p.spec.name, std::move(t));
  }
  return m;
}

HostTensorMap declared_parameters(const Config& c) {
  auto be = make_backend("cpu");
  MoeTransformer model(*be, c, MicroBatchShape{1, 4}, 7);
  return declared_parameters(*be, model);
}

TEST(HfQwen2Moe, DeclaredParametersRoundTrip) {
  for (bool tied : {false, true}) {
    const Config c = tiny_config(tied);
    const HostTensorMap declared = declared_parameters(c);
    // The names and shapes this test file assumes are the ones the model code declares.
    const HostTensorMap expected = random_origami(c, 1);
    ASSERT_EQ(declared.size(), expected.size());
    for (const auto& [name, t] : expected) {
      ASSERT_EQ(declared.count(name), 1u) << name;
      EXPECT_EQ(declared.at(name).shape, t.shape) << name;
    }
    EXPECT_EQ(from_qwen2_moe(to_qwen2_moe(declared, c), c), declared);
  }
}

TEST(HfQwen2Moe, RefusesWhatQwen2MoeOrOrigamiCannotHold) {
  const Config c = tiny_config();
  const HostTensorMap hf = to_qwen2_moe(random_origami(c, 14), c);

  // Origami has no attention bias and an ungated shared expert: non-zero values are named.
  HostTensorMap bias = hf;
  bias["model.layers.2.self_attn.k_proj.bias"].data[3] = 0.5f;
  std::string msg = error_of([&] { from_qwen2_moe(bias, c); });
  EXPECT_TRUE(contains(msg, "'model.layers.2.self_attn.k_proj.bias' element 3 is 0.5")) << msg;
  HostTensorMap gate = hf;
  gate["model.layers.0.mlp.shared_expert_gate.weight"].data[7] = -1.f;
  msg = error_of([&] { from_qwen2_moe(gate, c); });
  EXPECT_TRUE(contains(msg, "'model.layers.0.mlp.shared_expert_gate.weight' element 7")) << msg;
  EXPECT_TRUE(contains(msg, "cannot be imported")) << msg;
  // Without biases (qkv_bias false) the model is the same.
  HostTensorMap no_bias = hf;
  for (int l = 0; l < 3; ++l)
    for (const char* p : {"q", "k", "v"})
      no_bias.erase(fmt::format("model.layers.{}.self_attn.{}_proj.bias", l, p));
  EXPECT_EQ(from_qwen2_moe(no_bias, c), from_qwen2_moe(hf, c));

  // No shared expert: refused both ways, for the tensors and for config.json.
  Config unshared = c;
  unshared.moe.shared_expert_ffn_hidden_size = 0;
  msg = error_of([&] { to_qwen2_moe(declared_parameters(unshared), unshared); });
  EXPECT_TRUE(contains(msg, "moe.shared_expert_ffn_hidden_size = 0")) << msg;
  EXPECT_THROW(qwen2_moe_config_json(unshared), Error);
  EXPECT_THROW(from_qwen2_moe(hf, unshared), Error);
  Config dense_only = c;
  dense_only.moe.num_experts = 0;
  msg = error_of([&] { qwen2_moe_config_json(dense_only); });
  EXPECT_TRUE(contains(msg, "moe.num_experts = 0")) << msg;

  // Doubling the shared down_proj must not overflow.
  HostTensorMap huge = random_origami(c, 15);
  huge["layers.0.moe.shared_expert.fc2.weight"].data[5] = FLT_MAX;
  msg = error_of([&] { to_qwen2_moe(huge, c); });
  EXPECT_TRUE(contains(msg, "'layers.0.moe.shared_expert.fc2.weight' element 5")) << msg;
}

TEST(HfQwen2Moe, MissingWrongAndUnknownTensorsNamed) {
  const Config c = tiny_config();
  const HostTensorMap hf = to_qwen2_moe(random_origami(c, 16), c);

  HostTensorMap missing = hf;
  missing.erase("model.layers.2.mlp.shared_expert.down_proj.weight");
  std::string msg = error_of([&] { from_qwen2_moe(missing, c); });
  EXPECT_TRUE(contains(msg, "'model.layers.2.mlp.shared_expert.down_proj.weight' is missing"))
      << msg;
  EXPECT_TRUE(contains(msg, "[8, 4]")) << msg;

  HostTensorMap wrong = hf;
  wrong["model.layers.1.mlp.down_proj.weight"].shape = {10, 8};  // transposed
  msg = error_of([&] { from_qwen2_moe(wrong, c); });
  EXPECT_TRUE(contains(msg,
                       "'model.layers.1.mlp.down_proj.weight' has shape [10, 8], expected "
                       "[8, 10]"))
      << msg;

  // A dense layer's name in an MoE layer (or the reverse) is unknown for this config.
  HostTensorMap extra = hf;
  extra["model.layers.1.mlp.gate.weight"] = HostTensor{{4, 8}, std::vector<float>(32)};
  msg = error_of([&] { from_qwen2_moe(extra, c); });
  EXPECT_TRUE(contains(msg, "'model.layers.1.mlp.gate.weight' is not a Qwen2-MoE parameter"))
      << msg;

  HostTensorMap inv_freq = hf;
  inv_freq["model.layers.0.self_attn.rotary_emb.inv_freq"] = HostTensor{{1}, {1.f}};
  EXPECT_NO_THROW(from_qwen2_moe(inv_freq, c));

  HostTensorMap origami = random_origami(c, 17);
  origami["layers.2.moe.shared_expert.fc1.weight"].shape = {4, 8};
  msg = error_of([&] { to_qwen2_moe(origami, c); });
  EXPECT_TRUE(contains(msg,
                       "'layers.2.moe.shared_expert.fc1.weight' has shape [4, 8], expected "
                       "[2, 4, 8]"))
      << msg;

  const Config t = tiny_config(true);
  HostTensorMap tied = to_qwen2_moe(random_origami(t, 18), t);
  tied["lm_head.weight"] = tied.at("model.embed_tokens.weight");
  EXPECT_EQ(from_qwen2_moe(tied, t).count("lm_head.weight"), 0u);
  tied["lm_head.weight"].data[0] += 1.f;
  msg = error_of([&] { from_qwen2_moe(tied, t); });
  EXPECT_TRUE(contains(msg, "tie_embeddings")) << msg;
}

TEST(HfQwen2Moe, ConfigJsonRoundTrip) {
  Config c = tiny_config();
  c.model.rope_theta = 1e6;
  c.model.norm_eps = 1e-6;
  c.model.init_std = 0.01;
  c.moe.top_k = 3;
  c.moe.router.renormalize = false;
  c.moe.router.aux_loss_coeff = 0.02;
  const nlohmann::json j = qwen2_moe_config_json(c, "bfloat16");
  EXPECT_EQ(j["architectures"], nlohmann::json({"Qwen2MoeForCausalLM"}));
  EXPECT_EQ(j["model_type"], "qwen2_moe");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["intermediate_size"], 10);
  EXPECT_EQ(j["moe_intermediate_size"], 6);
  EXPECT_EQ(j["shared_expert_intermediate_size"], 4);
  EXPECT_EQ(j["num_experts"], 4);
  EXPECT_EQ(j["num_experts_per_tok"], 3);
  EXPECT_EQ(j["norm_topk_prob"], false);
  EXPECT_EQ(j["decoder_sparse_step"], 1);
  EXPECT_EQ(j["mlp_only_layers"], nlohmann::json({1}));
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["qkv_bias"], true);
  EXPECT_EQ(j["use_sliding_window"], false);
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "rms_norm_eps", "rope_theta", "tie_word_embeddings"})
    EXPECT_TRUE(j.contains(key)) << key;
  // Through text, as a file would go; sections Qwen2-MoE has no place for keep the base's.
  EXPECT_EQ(config_from_qwen2_moe_json(nlohmann::json::parse(j.dump()), "config.json"), c);

  // Other layer patterns: layer_freq 3 over 7 layers lists 1, 2, 4, 5 as dense; 1 lists none.
  Config every3 = c;
  every3.model.num_layers = 7;
  every3.moe.layer_freq = 3;
  const nlohmann::json j3 = qwen2_moe_config_json(every3);
  EXPECT_EQ(j3["mlp_only_layers"], nlohmann::json({1, 2, 4, 5}));
  EXPECT_EQ(config_from_qwen2_moe_json(j3, "config.json"), every3);
  Config all = c;
  all.moe.layer_freq = 1;
  EXPECT_EQ(qwen2_moe_config_json(all)["mlp_only_layers"], nlohmann::json::array());
  EXPECT_EQ(config_from_qwen2_moe_json(qwen2_moe_config_json(all), "config.json"), all);
}

TEST(HfQwen2Moe, ImportsOnlyLayerPatternsLayerFreqExpresses) {
  nlohmann::json j = qwen2_moe_config_json(tiny_config());
  j["num_hidden_layers"] = 6;
  auto freq = [&](int step, nlohmann::json mlp_only) {
    nlohmann::json k = j;
    k["decoder_sparse_step"] = step;
    k["mlp_only_layers"] = std::move(mlp_only);
    return config_from_qwen2_moe_json(k, "q/config.json").moe.layer_freq;
  };
  EXPECT_EQ(freq(1, nlohmann::json::array()), 1);
  EXPECT_EQ(freq(1, {1, 3, 5}), 2);
  EXPECT_EQ(freq(1, {1, 2, 4, 5}), 3);
  EXPECT_EQ(freq(1, {1, 2, 3, 4, 5}), 6);  // only layer 0 is MoE
  EXPECT_EQ(freq(1, {1, 3, 5, 17}), 2);    // indices past the last layer change nothing
  nlohmann::json absent = j;
  absent.erase("mlp_only_layers");
  absent.erase("decoder_sparse_step");
  EXPECT_EQ(config_from_qwen2_moe_json(absent, "q/config.json").moe.layer_freq, 1);

  auto refused = [&](int step, nlohmann::json mlp_only, const char* needle) {
    const std::string msg = error_of([&] { freq(step, mlp_only); });
    EXPECT_TRUE(contains(msg, "q/config.json")) << msg;
    EXPECT_TRUE(contains(msg, needle)) << msg;
    EXPECT_TRUE(contains(msg, "moe.layer_freq")) << msg;
  };
  // Qwen's own sparse step makes layers 1, 3, 5 MoE: layer 0 is dense, which Origami cannot be.
  refused(2, nlohmann::json::array(), "make layers [1, 3, 5] MoE");
  refused(1, {0}, "make layers [1, 2, 3, 4, 5] MoE");
  refused(1, {1}, "make layers [0, 2, 3, 4, 5] MoE");
  refused(1, {0, 1, 2, 3, 4, 5}, "make layers [] MoE");
}

TEST(HfQwen2Moe, ReadsQwen15MoeConfig) {
  // Qwen/Qwen1.5-MoE-A2.7B's config.json as on the Hub (no qkv_bias, head_dim: defaults).
  const auto j = nlohmann::json::parse(R"({
    "architectures": ["Qwen2MoeForCausalLM"], "attention_dropout": 0.0, "bos_token_id": 151643,
    "decoder_sparse_step": 1, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 2048,
    "initializer_range": 0.02, "intermediate_size": 5632, "max_position_embeddings": 8192,
    "max_window_layers": 21, "model_type": "qwen2_moe", "moe_intermediate_size": 1408,
    "norm_topk_prob": false, "num_attention_heads": 16, "num_experts": 60,
    "num_experts_per_tok": 4, "num_hidden_layers": 24, "num_key_value_heads": 16,
    "output_router_logits": false, "rms_norm_eps": 1e-06, "rope_theta": 1000000.0,
    "router_aux_loss_coef": 0.001, "shared_expert_intermediate_size": 5632,
    "sliding_window": 32768, "tie_word_embeddings": false, "torch_dtype": "bfloat16",
    "use_cache": true, "use_sliding_window": false, "vocab_size": 151936})");
  const Config c = config_from_qwen2_moe_json(j, "a2.7b/config.json");
  EXPECT_EQ(c.model.vocab_size, 151936);
  EXPECT_EQ(c.model.hidden_size, 2048);
  EXPECT_EQ(c.model.ffn_hidden_size, 5632);
  EXPECT_EQ(c.model.num_layers, 24);
  EXPECT_EQ(c.model.num_query_groups, 16);
  EXPECT_EQ(c.model.max_seq_length, 8192);
  EXPECT_EQ(c.model.rope_theta, 1e6);
  EXPECT_EQ(c.model.norm_eps, 1e-6);
  EXPECT_EQ(c.moe.num_experts, 60);
  EXPECT_EQ(c.moe.top_k, 4);
  EXPECT_EQ(c.moe.expert_ffn_hidden_size, 1408);
  EXPECT_EQ(c.moe.shared_expert_ffn_hidden_size, 5632);
  EXPECT_EQ(c.moe.layer_freq, 1);
  EXPECT_FALSE(c.moe.router.renormalize);
  EXPECT_EQ(c.moe.router.aux_loss_coeff, 0.001);

  auto refused = [&](const char* key, nlohmann::json value, const char* needle) {
    nlohmann::json bad = j;
    if (value.is_discarded())
      bad.erase(key);
    else
      bad[key] = value;
    const std::string msg = error_of([&] { config_from_qwen2_moe_json(bad, "a2.7b/config.json"); });
    EXPECT_TRUE(contains(msg, "a2.7b/config.json")) << msg;
    EXPECT_TRUE(contains(msg, needle)) << msg;
  };
  refused("vocab_size", nlohmann::json::value_t::discarded, "'vocab_size' is missing");
  refused("model_type", "mixtral", "model_type");
  // A sliding window at least as long as the context changes nothing; a shorter one is refused.
  nlohmann::json window = j;
  window["use_sliding_window"] = true;
  EXPECT_NO_THROW(config_from_qwen2_moe_json(window, "a2.7b/config.json"));
  window["sliding_window"] = 4096;
  const std::string msg =
      error_of([&] { config_from_qwen2_moe_json(window, "a2.7b/config.json"); });
  EXPECT_TRUE(contains(msg, "sliding_window 4096 shorter than max_position_embeddings 8192"))
      << msg;
  refused("shared_expert_intermediate_size", 0, "shared_expert_intermediate_size 0");
  refused("num_experts_per_tok", 61, "num_experts_per_tok 61");
  refused("rope_scaling", {{"type", "yarn"}}, "rope_scaling");
  refused("mlp_only_layers", "1", "'mlp_only_layers' must be a list");
  // transformers v5 keeps theta in rope_parameters.
  nlohmann::json v5 = j;
  v5.erase("rope_theta");
  v5["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  EXPECT_EQ(config_from_qwen2_moe_json(v5, "v5/config.json").model.rope_theta, 5e5);
  v5["rope_parameters"]["rope_type"] = "yarn";
  EXPECT_THROW(config_from_qwen2_moe_json(v5, "v5/config.json"), Error);
}

TEST(HfQwen2Moe, SaveAndLoadDirectory) {
  const Config c = tiny_config();
  const HostTensorMap x = random_origami(c, 19);
  const fs::path root = fs::path(ORIGAMI_BINARY_DIR) / "test_scratch" / "hf_qwen2_moe";
  fs::remove_all(root);

  // F32 in shards of at most 1 KB: exact, and config.json comes back as the same model config.
  save_qwen2_moe((root / "f32").string(), x, c, "F32", 1024);
  const auto index =
      nlohmann::json::parse(std::ifstream(root / "f32" / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file);
  EXPECT_GT(shards.size(), 1u);
  const Qwen2MoeModel f32 = load_qwen2_moe((root / "f32").string());
  EXPECT_EQ(f32.params, x);
  EXPECT_EQ(f32.config.model, c.model);
  EXPECT_EQ(f32.config.moe, c.moe);

  // BF16: every value is its bf16 rounding (x2 then /2 commutes with rounding).
  save_qwen2_moe((root / "bf16").string(), x, c, "BF16");
  const StFile raw = read_safetensors((root / "bf16" / "model.safetensors").string());
  EXPECT_EQ(raw.tensors.at("model.layers.0.self_attn.q_proj.bias").dtype, "BF16");
  const Qwen2MoeModel bf16 = load_qwen2_moe((root / "bf16").string());
  for (const auto& [name, t] : x) {
    const HostTensor& got = bf16.params.at(name);
    ASSERT_EQ(got.shape, t.shape) << name;
    for (size_t i = 0; i < t.data.size(); ++i)
      ASSERT_EQ(got.data[i], bf16_to_float(bf16_bits(t.data[i]))) << name << "[" << i << "]";
  }
}

int run(const std::string& command) {
  const int status = std::system(command.c_str());
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

// Origami's forward on a tiny model vs qwen2_moe_reference.py (PyTorch fp32, transformers'
// Qwen2-MoE math) on its F32 export: the same logits up to fp32 summation order (1e-5 relative).
TEST(HfQwen2Moe, PyTorchReferenceReproducesLogits) {
  // Debian's python3-torch; /usr/bin/python3, not whatever interpreter is on PATH.
  if (run("/usr/bin/python3 -c 'import torch, numpy' >/dev/null 2>&1") != 0)
    GTEST_SKIP() << "/usr/bin/python3 cannot import torch";
  const std::string script =
      std::string(ORIGAMI_SOURCE_DIR) + "/tests/checkpoint/qwen2_moe_reference.py";
  const fs::path root = fs::path(ORIGAMI_BINARY_DIR) / "test_scratch" / "hf_qwen2_moe_golden";
  fs::remove_all(root);
  fs::create_directories(root);
  const std::vector<int32_t> tokens = {5, 16, 0, 3, 3, 11, 7, 2, 9, 14};
  const std::string token_list = fmt::format("{}", fmt::join(tokens, ","));
  // Qwen's default top-k weights (not renormalised), and Mixtral-style renormalised with tied
  // embeddings; both with a dense layer and a shared expert.
  for (bool renormalize : {false, true}) {
    Config c = tiny_config(/*tied=*/renormalize);
    c.moe.router.renormalize = renormalize;
    c.model.init_std = 0.3;  // routing far from ties, activations well above fp32 noise
    auto be = make_backend("cpu");
    const int64_t T = int64_t(tokens.size()), V = c.model.vocab_size;
    MoeTransformer model(*be, c, MicroBatchShape{1, T}, 21);
    const std::vector<int32_t> targets(tokens.size(), -1);
    model.forward(tokens.data(), targets.data(), {});
    std::vector<float> logits(size_t(T * V));
    be->copy_to_host(logits.data(), model.logits(), logits.size() * sizeof(float));

    const fs::path dir = root / fmt::format("renormalize_{}", renormalize);
    save_qwen2_moe((dir / "hf").string(), declared_parameters(*be, model), c, "F32");
    const fs::path bin = dir / "logits.bin";
    std::ofstream(bin, std::ios::binary)
        .write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
    const std::string cmd = fmt::format("/usr/bin/python3 {} {} {} {}", script,
                                        (dir / "hf").string(), token_list, bin.string());
    EXPECT_EQ(run(cmd), 0) << cmd;

    // The comparison can fail: one logit moved by 1e-3 x the largest is a mismatch.
    float scale = 0.f;
    for (float v : logits) scale = std::max(scale, std::abs(v));
    logits[3] += 1e-3f * scale;
    const fs::path off = dir / "perturbed.bin";
    std::ofstream(off, std::ios::binary)
        .write(reinterpret_cast<const char*>(logits.data()), std::streamsize(logits.size() * 4));
    EXPECT_EQ(run(fmt::format("/usr/bin/python3 {} {} {} {} >/dev/null", script,
                              (dir / "hf").string(), token_list, off.string())),
              1);
  }
}

}  // namespace
}  // namespace origami
