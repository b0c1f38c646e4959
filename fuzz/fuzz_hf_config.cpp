// Fuzz target: the Hugging Face config.json readers (src/checkpoint/hf_tensor_map.cpp
// read_hf_config(dir), then hf_mixtral.cpp config_from_mixtral_json() and hf_qwen2_moe.cpp
// config_from_qwen2_moe_json(), as origami-ckpt import-hf runs them). The input is written as
// <dir>/config.json; both namings read every input (each refuses the other's model_type), and an
// accepted config is written back with the naming's config.json writer and read again. Seeds:
// config.json of a tiny Mixtral and a tiny Qwen2-MoE model, written by the project's writers.
#include "checkpoint/hf_mixtral.h"
#include "checkpoint/hf_qwen2_moe.h"
#include "checkpoint/hf_tensor_map.h"
#include "fuzz_common.h"

namespace fs = std::filesystem;
using namespace origami;

namespace {

// Both are the shapes of the conversion tests (tests/checkpoint/test_hf_*.cpp).
Config tiny(bool qwen) {
  Config c;
  c.model.vocab_size = 17;
  c.model.hidden_size = 8;
  c.model.num_layers = qwen ? 3 : 2;
  c.model.num_attention_heads = 4;
  c.model.num_query_groups = 2;
  c.model.ffn_hidden_size = 10;
  c.model.max_seq_length = 32;
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 6;
  c.moe.shared_expert_ffn_hidden_size = qwen ? 4 : 0;
  c.moe.layer_freq = qwen ? 2 : 1;
  if (!qwen) c.moe.router.renormalize = true;
  return c;
}

void write_seed(const nlohmann::json& j, const std::string& name) {
  const std::string text = j.dump(2) + "\n";
  const fs::path path = fuzz::scratch_dir() / name;
  fuzz::write_file(path, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  fuzz::copy_seed(path, name);
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (fuzz::seed_dir()) {
    write_seed(mixtral_config_json(tiny(false)), "mixtral_config.json");
    write_seed(mixtral_config_json(tiny(false), "bfloat16"), "mixtral_config_bf16.json");
    write_seed(qwen2_moe_config_json(tiny(true)), "qwen2_moe_config.json");
    std::exit(0);
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  fuzz::set_input(data, size);
  static const fs::path dir = fuzz::scratch_dir();
  fuzz::write_file(dir / "config.json", data, size);
  nlohmann::json j;
  std::string path;
  if (!fuzz::expect_clean("read_hf_config", [&] { std::tie(j, path) = read_hf_config(dir); }))
    return 0;
  fuzz::expect_clean("config_from_mixtral_json", [&] {
    const Config cfg = config_from_mixtral_json(j, path);
    config_from_mixtral_json(mixtral_config_json(cfg), path + " (rewritten)");
  });
  fuzz::expect_clean("config_from_qwen2_moe_json", [&] {
    const Config cfg = config_from_qwen2_moe_json(j, path);
    config_from_qwen2_moe_json(qwen2_moe_config_json(cfg), path + " (rewritten)");
  });
  return 0;
}
