// Origami <-> Mixtral conversion: bit-exact round trips on a random tiny GQA model and on the
// parameters the model code really declares, where each element lands (q/k/v rows, w1/w3/w2 of
// one expert), config.json both ways, the refusals (shared expert, dense layers, missing or
// misshapen tensors) and a full save/load through safetensors shards.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <set>

#include "base/error.h"
#include "checkpoint/hf_mixtral.h"
#include "checkpoint/hf_qwen2_moe.h"
#include "model/moe_transformer.h"

namespace origami {
namespace {

namespace fs = std::filesystem;

// E=4, L=2, 4 query heads sharing 2 KV heads (hd = 2), distinct sizes so a swapped dimension
// cannot pass a shape check by coincidence.
Config tiny_config(bool tied = false) {
  Config c;
  c.model.vocab_size = 17;
  c.model.hidden_size = 8;
  c.model.num_layers = 2;
  c.model.num_attention_heads = 4;
  c.model.num_query_groups = 2;
  c.model.max_seq_length = 32;
  c.model.tie_embeddings = tied;
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 6;
  c.moe.shared_expert_ffn_hidden_size = 0;
  c.moe.layer_freq = 1;
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
                F = c.moe.expert_ffn_hidden_size;
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
    m[p + "moe.router.weight"] = random_tensor({E, H}, rng);
    m[p + "moe.experts.fc1.weight"] = random_tensor({E, 2, F, H}, rng);
    m[p + "moe.experts.fc2.weight"] = random_tensor({E, H, F}, rng);
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

TEST(HfMixtral, RoundTripIsBitExact) {
  for (bool tied : {false, true}) {
    const Config c = tiny_config(tied);
    const HostTensorMap x = random_origami(c, 11);
    const HostTensorMap hf = to_mixtral(x, c);
    // embed + L * (2 norms + q,k,v,o + gate + 3E experts) + norm (+ lm_head)
    const size_t per_layer = 2 + 4 + 1 + 3 * size_t(c.moe.num_experts);
    EXPECT_EQ(hf.size(), 2 + size_t(c.model.num_layers) * per_layer + (tied ? 0 : 1));
    EXPECT_EQ(hf.count("lm_head.weight"), tied ? 0u : 1u);
    EXPECT_EQ(from_mixtral(hf, c), x) << "tied=" << tied;
  }
}

TEST(HfMixtral, ElementPlacement) {
  const Config c = tiny_config();
  const HostTensorMap x = random_origami(c, 12);
  const HostTensorMap hf = to_mixtral(x, c);
  const int64_t hd = 2, nh = 4, nkv = 2, H = 8, F = 6;
  const std::string a = "model.layers.1.self_attn.";
  EXPECT_EQ(hf.at(a + "q_proj.weight").shape, (std::vector<int64_t>{nh * hd, H}));
  EXPECT_EQ(hf.at(a + "k_proj.weight").shape, (std::vector<int64_t>{nkv * hd, H}));
  EXPECT_EQ(hf.at(a + "q_proj.weight"), x.at("layers.1.attention.q.weight"));
  EXPECT_EQ(hf.at(a + "k_proj.weight"), x.at("layers.1.attention.k.weight"));
  EXPECT_EQ(hf.at(a + "v_proj.weight"), x.at("layers.1.attention.v.weight"));
  EXPECT_EQ(hf.at(a + "o_proj.weight"), x.at("layers.1.attention.proj.weight"));

  const HostTensor& fc1 = x.at("layers.1.moe.experts.fc1.weight");
  const HostTensor& fc2 = x.at("layers.1.moe.experts.fc2.weight");
  const std::string e2 = "model.layers.1.block_sparse_moe.experts.2.";
  for (int64_t r = 0; r < F; ++r) {
    EXPECT_EQ(row(hf.at(e2 + "w1.weight"), r), row(fc1, 2, 0, r)) << "w1 = gate = fc1[e][0]";
    EXPECT_EQ(row(hf.at(e2 + "w3.weight"), r), row(fc1, 2, 1, r)) << "w3 = up = fc1[e][1]";
  }
  for (int64_t r = 0; r < H; ++r)
    EXPECT_EQ(row(hf.at(e2 + "w2.weight"), r), row(fc2, 2, 0, r)) << "w2 = fc2[e]";
  EXPECT_EQ(hf.at(e2 + "w2.weight").shape, (std::vector<int64_t>{H, F}));
  EXPECT_NE(hf.at(e2 + "w1.weight"), hf.at("model.layers.1.block_sparse_moe.experts.3.w1.weight"));

  EXPECT_EQ(hf.at("model.layers.1.block_sparse_moe.gate.weight"),
            x.at("layers.1.moe.router.weight"));
  EXPECT_EQ(hf.at("model.layers.0.input_layernorm.weight"), x.at("layers.0.attention_norm.weight"));
  EXPECT_EQ(hf.at("model.layers.0.post_attention_layernorm.weight"),
            x.at("layers.0.ffn_norm.weight"));
  EXPECT_EQ(hf.at("model.embed_tokens.weight"), x.at("embedding.weight"));
  EXPECT_EQ(hf.at("model.norm.weight"), x.at("final_norm.weight"));
  EXPECT_EQ(hf.at("lm_head.weight"), x.at("lm_head.weight"));
}

HostTensorMap declared_parameters(const Config& c) {
  auto be = make_backend("cpu");
  MoeTransformer model(*be, c, MicroBatchShape{1, 4}, 7);
  HostTensorMap m;
  for (const Param& p : model.params().all()) {
    HostTensor t{p.spec.global_shape, std::vector<float>(size_t(p.value.numel()))};
    be->copy_to_host(t.data.data(), p.value.data(), p.value.bytes());
    m.emplace(p.spec.name, std::move(t));
  }
  return m;
}

TEST(HfMixtral, DeclaredParametersRoundTrip) {
  for (bool tied : {false, true}) {
    const Config c = tiny_config(tied);
    const HostTensorMap declared = declared_parameters(c);
    // The names and shapes this test file assumes are the ones the model code declares.
    HostTensorMap expected = random_origami(c, 1);
    ASSERT_EQ(declared.size(), expected.size());
    for (const auto& [name, t] : expected) {
      ASSERT_EQ(declared.count(name), 1u) << name;
      EXPECT_EQ(declared.at(name).shape, t.shape) << name;
    }
    EXPECT_EQ(from_mixtral(to_mixtral(declared, c), c), declared);
  }
}

TEST(HfMixtral, RefusesSharedExpertsAndDenseLayers) {
  Config shared = tiny_config();
  shared.moe.shared_expert_ffn_hidden_size = 4;
  std::string msg = error_of([&] { to_mixtral(declared_parameters(shared), shared); });
  EXPECT_NE(msg.find("'layers.0.moe.shared_expert.fc1.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Qwen2-MoE"), std::string::npos) << msg;

  Config dense = tiny_config();
  dense.moe.layer_freq = 2;
  msg = error_of([&] { to_mixtral(declared_parameters(dense), dense); });
  EXPECT_NE(msg.find("'layers.1.mlp.fc1.weight'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("Qwen2-MoE"), std::string::npos) << msg;

  // The config alone is refused too (config.json export, import into such a model).
  msg = error_of([&] { mixtral_config_json(shared); });
  EXPECT_NE(msg.find("moe.shared_expert_ffn_hidden_size"), std::string::npos) << msg;
  msg = error_of(
      [&] { from_mixtral(to_mixtral(random_origami(tiny_config(), 3), tiny_config()), dense); });
  EXPECT_NE(msg.find("moe.layer_freq"), std::string::npos) << msg;
  Config no_renorm = tiny_config();
  no_renorm.moe.router.renormalize = false;
  EXPECT_THROW(mixtral_config_json(no_renorm), Error);
}

// The MoE variants no Hugging Face class computes are refused by key, for both namings.
TEST(HfMixtral, RefusesTheMoeVariantsByName) {
  const std::pair<const char*, std::function<void(Config&)>> variants[] = {
      {"moe.zero_compute_experts", [](Config& c) { c.moe.zero_compute_experts.copy = 1; }},
      {"moe.null_experts", [](Config& c) { c.moe.null_experts = 2; }},
      {"moe.residual", [](Config& c) { c.moe.residual = true; }},
      {"moe.router.gating_residual", [](Config& c) { c.moe.router.gating_residual = true; }},
      {"moe.router.kind: recurrent", [](Config& c) { c.moe.router.kind = "recurrent"; }},
      {"moe.num_experts_per_layer", [](Config& c) { c.moe.num_experts_per_layer = {4, 4}; }},
  };
  for (const auto& [key, apply] : variants) {
    Config c = tiny_config();
    apply(c);
    for (const std::string& msg : {error_of([&] { mixtral_config_json(c); }),
                                   error_of([&] { qwen2_moe_config_json(c); }),
                                   error_of([&] { to_mixtral(declared_parameters(c), c); })})
      EXPECT_NE(msg.find(key), std::string::npos) << key << ": " << msg;
  }
  // A frozen router is ordinary weights: it exports.
  Config frozen = tiny_config();
  frozen.moe.router.freeze = true;
  EXPECT_NO_THROW(mixtral_config_json(frozen));
}

TEST(HfMixtral, MissingWrongAndUnknownTensorsNamed) {
  const Config c = tiny_config();
  const HostTensorMap hf = to_mixtral(random_origami(c, 13), c);

  HostTensorMap missing = hf;
  missing.erase("model.layers.1.block_sparse_moe.experts.3.w2.weight");
  std::string msg = error_of([&] { from_mixtral(missing, c); });
  EXPECT_NE(msg.find("'model.layers.1.block_sparse_moe.experts.3.w2.weight' is missing"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("[8, 6]"), std::string::npos) << msg;

  HostTensorMap wrong = hf;
  wrong["model.layers.0.self_attn.k_proj.weight"].shape = {8, 4};  // transposed
  msg = error_of([&] { from_mixtral(wrong, c); });
  EXPECT_NE(msg.find("'model.layers.0.self_attn.k_proj.weight' has shape [8, 4], expected [4, 8]"),
            std::string::npos)
      << msg;

  HostTensorMap extra = hf;
  extra["model.layers.2.input_layernorm.weight"] = HostTensor{{8}, std::vector<float>(8)};
  msg = error_of([&] { from_mixtral(extra, c); });
  EXPECT_NE(msg.find("'model.layers.2.input_layernorm.weight'"), std::string::npos) << msg;

  // The RoPE buffer old checkpoints carry is derived, not a parameter: ignored.
  HostTensorMap inv_freq = hf;
  inv_freq["model.layers.0.self_attn.rotary_emb.inv_freq"] = HostTensor{{1}, {1.f}};
  EXPECT_NO_THROW(from_mixtral(inv_freq, c));

  HostTensorMap origami = random_origami(c, 14);
  origami["layers.0.moe.router.weight"].shape = {8, 4};
  msg = error_of([&] { to_mixtral(origami, c); });
  EXPECT_NE(msg.find("'layers.0.moe.router.weight' has shape [8, 4], expected [4, 8]"),
            std::string::npos)
      << msg;

  // Tied: a stored lm_head is accepted only when it is the embedding.
  const Config t = tiny_config(true);
  HostTensorMap tied = to_mixtral(random_origami(t, 15), t);
  tied["lm_head.weight"] = tied.at("model.embed_tokens.weight");
  EXPECT_EQ(from_mixtral(tied, t).count("lm_head.weight"), 0u);
  tied["lm_head.weight"].data[0] += 1.f;
  msg = error_of([&] { from_mixtral(tied, t); });
  EXPECT_NE(msg.find("tie_embeddings"), std::string::npos) << msg;
}

TEST(HfMixtral, ConfigJsonRoundTrip) {
  Config c = tiny_config();
  c.model.rope_theta = 1e6;
  c.model.norm_eps = 1e-6;
  c.model.init_std = 0.01;
  c.moe.top_k = 3;
  c.moe.router.aux_loss_coeff = 0.02;
  const nlohmann::json j = mixtral_config_json(c, "bfloat16");
  EXPECT_EQ(j["architectures"], nlohmann::json({"MixtralForCausalLM"}));
  EXPECT_EQ(j["model_type"], "mixtral");
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  EXPECT_EQ(j["intermediate_size"], 6);
  EXPECT_EQ(j["num_key_value_heads"], 2);
  EXPECT_EQ(j["num_local_experts"], 4);
  EXPECT_EQ(j["num_experts_per_tok"], 3);
  EXPECT_EQ(j["rope_theta"], 1e6);
  EXPECT_EQ(j["tie_word_embeddings"], false);
  EXPECT_TRUE(j["sliding_window"].is_null());
  for (const char* key : {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                          "rms_norm_eps", "router_aux_loss_coef", "router_jitter_noise"})
    EXPECT_TRUE(j.contains(key)) << key;
  // Through text, as a file would go; keys Mixtral has no place for keep the base's values.
  const Config back = config_from_mixtral_json(nlohmann::json::parse(j.dump()), "config.json");
  EXPECT_EQ(back, c);
  // model.ffn_hidden_size sizes dense layers, which a Mixtral has none of: the base's is kept.
  Config base;
  base.model.ffn_hidden_size = 20;
  EXPECT_EQ(config_from_mixtral_json(j, "config.json", base).model.ffn_hidden_size, 20);
}

TEST(HfMixtral, ReadsMixtral8x7bConfig) {
  // transformers' MixtralConfig for 8x7B, as on the Hub (formats.md §2 values).
  const auto j = nlohmann::json::parse(R"({
    "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": 32000,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "num_local_experts": 8,
    "num_experts_per_tok": 2, "rms_norm_eps": 1e-05, "rope_theta": 1000000.0,
    "max_position_embeddings": 32768, "router_aux_loss_coef": 0.02, "sliding_window": null,
    "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu"})");
  const Config c = config_from_mixtral_json(j, "8x7b/config.json");
  EXPECT_EQ(c.model.vocab_size, 32000);
  EXPECT_EQ(c.model.hidden_size, 4096);
  EXPECT_EQ(c.model.num_query_groups, 8);
  EXPECT_EQ(c.model.num_layers, 32);
  EXPECT_EQ(c.moe.expert_ffn_hidden_size, 14336);
  EXPECT_EQ(c.moe.num_experts, 8);
  EXPECT_EQ(c.moe.top_k, 2);
  EXPECT_EQ(c.model.rope_theta, 1e6);
  EXPECT_EQ(c.model.max_seq_length, 32768);
  EXPECT_EQ(c.moe.router.aux_loss_coeff, 0.02);

  auto refused = [&](const char* key, nlohmann::json value, const char* needle) {
    nlohmann::json bad = j;
    if (value.is_discarded())
      bad.erase(key);
    else
      bad[key] = value;
    const std::string msg = error_of([&] { config_from_mixtral_json(bad, "8x7b/config.json"); });
    EXPECT_NE(msg.find("8x7b/config.json"), std::string::npos) << msg;
    EXPECT_NE(msg.find(needle), std::string::npos) << msg;
  };
  refused("hidden_size", nlohmann::json::value_t::discarded, "'hidden_size' is missing");
  refused("model_type", "qwen2_moe", "model_type");
  refused("head_dim", 64, "head_dim 64");
  refused("sliding_window", 4096, "sliding_window");
  refused("num_attention_heads", "32", "'num_attention_heads' must be a number");
  refused("num_experts_per_tok", 9, "num_experts_per_tok 9");
}

TEST(HfMixtral, SaveAndLoadDirectory) {
  const Config c = tiny_config();
  const HostTensorMap x = random_origami(c, 16);
  const fs::path root = fs::path(ORIGAMI_BINARY_DIR) / "test_scratch" / "hf_mixtral";
  fs::remove_all(root);

  // F32 in shards of at most 1 KB: exact, and config.json comes back as the same model config.
  save_mixtral((root / "f32").string(), x, c, "F32", 1024);
  const auto index =
      nlohmann::json::parse(std::ifstream(root / "f32" / "model.safetensors.index.json"));
  std::set<std::string> shards;
  for (const auto& [name, file] : index["weight_map"].items()) shards.insert(file);
  EXPECT_GT(shards.size(), 1u);
  EXPECT_FALSE(fs::exists(root / "f32" / "model.safetensors"));
  MixtralModel f32 = load_mixtral((root / "f32").string());
  EXPECT_EQ(f32.params, x);
  EXPECT_EQ(f32.config.model, c.model);
  EXPECT_EQ(f32.config.moe, c.moe);
  EXPECT_EQ(nlohmann::json::parse(std::ifstream(root / "f32" / "config.json"))["torch_dtype"],
            "float32");

  // BF16 single file: every value is its bf16 rounding.
  save_mixtral((root / "bf16").string(), x, c, "BF16");
  EXPECT_TRUE(fs::exists(root / "bf16" / "model.safetensors"));
  const StFile raw = read_safetensors((root / "bf16" / "model.safetensors").string());
  EXPECT_EQ(raw.tensors.at("model.layers.0.self_attn.q_proj.weight").dtype, "BF16");
  MixtralModel bf16 = load_mixtral((root / "bf16").string());
  for (const auto& [name, t] : x) {
    const HostTensor& got = bf16.params.at(name);
    ASSERT_EQ(got.shape, t.shape) << name;
    for (size_t i = 0; i < t.data.size(); ++i)
      ASSERT_EQ(got.data[i], bf16_to_float(bf16_bits(t.data[i]))) << name << "[" << i << "]";
  }
}

}  // namespace
}  // namespace origami
