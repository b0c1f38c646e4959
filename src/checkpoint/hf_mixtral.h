// defines: to_mixtral(), from_mixtral(), mixtral_config_json(), config_from_mixtral_json(),
//          save_mixtral(), load_mixtral()
// Pure renaming/reslicing between Origami's parameters (full global fp32 tensors, names as the
// model code declares them) and Hugging Face transformers' Mixtral names, so a model trained here
// loads in MixtralForCausalLM and a Mixtral checkpoint initialises an Origami model. Both
// directions are exact (no arithmetic on values): from_mixtral(to_mixtral(x)) == x bit for bit.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint/safetensors.h"
#include "config/config.h"

namespace origami {

// Origami -> Mixtral tensors. Refuses (Error naming the parameter or config key) what Mixtral
// cannot hold: shared experts and dense MLP layers (those need Qwen2-MoE naming), a router that
// does not renormalise softmax top-k, a missing or wrongly shaped parameter, an unknown name.
HostTensorMap to_mixtral(const HostTensorMap& origami, const Config& cfg);
// Mixtral -> Origami tensors for a model built from `cfg` (e.g. config_from_mixtral_json()).
// Every tensor must be present with the shape cfg implies; unknown tensors are errors.
HostTensorMap from_mixtral(const HostTensorMap& hf, const Config& cfg);

// config.json for MixtralForCausalLM; torch_dtype "float32" or "bfloat16".
nlohmann::json mixtral_config_json(const Config& cfg, const std::string& torch_dtype = "float32");
// Fills base's model and moe sections from a Mixtral config.json (other sections kept); keys
// transformers' MixtralConfig defaults may be absent. `source` names the file in errors.
Config config_from_mixtral_json(const nlohmann::json& j, const std::string& source,
                                const Config& base = {});

// A loadable transformers directory: config.json plus model.safetensors (or shards and an index
// above max_shard_bytes), tensors in `dtype` ("F32" or "BF16").
void save_mixtral(const std::string& dir, const HostTensorMap& origami, const Config& cfg,
                  const std::string& dtype = "BF16", uint64_t max_shard_bytes = 5'000'000'000);
struct MixtralModel {
  Config config;
  HostTensorMap params;  // Origami names, fp32
};
// Reads such a directory back: config from config.json over `base`, tensors converted.
MixtralModel load_mixtral(const std::string& dir, const Config& base = {});

}  // namespace origami
