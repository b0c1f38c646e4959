// defines: to_qwen2_moe(), from_qwen2_moe(), qwen2_moe_config_json(), config_from_qwen2_moe_json(),
//          save_qwen2_moe(), load_qwen2_moe()
// Origami <-> Hugging Face transformers' Qwen2-MoE (Qwen2MoeForCausalLM): the naming that holds
// what Mixtral cannot, shared experts and dense MLP layers. Qwen2-MoE gates its shared expert
// with sigmoid(shared_expert_gate . x); a zero gate is a constant 1/2, so exporting the gate as
// zeros and down_proj as 2 x fc2 is exact, and so is the import (halve, require a zero gate).
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "checkpoint/safetensors.h"
#include "config/config.h"

namespace origami {

// Origami -> Qwen2-MoE tensors (q/k/v biases written as zeros: Origami has none). Refuses (Error
// naming the parameter or config key) a model Qwen2-MoE cannot hold: no shared expert, no MoE
// layer, a non-softmax router, a missing, misshapen or unknown parameter.
HostTensorMap to_qwen2_moe(const HostTensorMap& origami, const Config& cfg);
// Qwen2-MoE -> Origami tensors for a model built from `cfg` (e.g. config_from_qwen2_moe_json()).
// Every tensor must be present with the shape cfg implies and unknown tensors are errors; a
// non-zero q/k/v bias or shared_expert_gate is refused, naming it: Origami cannot express it.
HostTensorMap from_qwen2_moe(const HostTensorMap& hf, const Config& cfg);

// config.json for Qwen2MoeForCausalLM; torch_dtype "float32" or "bfloat16". Dense layers are
// listed in mlp_only_layers with decoder_sparse_step 1.
nlohmann::json qwen2_moe_config_json(const Config& cfg, const std::string& torch_dtype = "float32");
// Fills base's model and moe sections from a Qwen2-MoE config.json (other sections kept); keys
// transformers' Qwen2MoeConfig defaults may be absent. Refuses an MoE-layer pattern
// (decoder_sparse_step, mlp_only_layers) that moe.layer_freq cannot express. `source` names the
// file in errors.
Config config_from_qwen2_moe_json(const nlohmann::json& j, const std::string& source,
                                  const Config& base = {});

// A loadable transformers directory: config.json plus model.safetensors (or shards and an index
// above max_shard_bytes), tensors in `dtype` ("F32" or "BF16").
void save_qwen2_moe(const std::string& dir, const HostTensorMap& origami, const Config& cfg,
                    const std::string& dtype = "BF16", uint64_t max_shard_bytes = 5'000'000'000);
struct Qwen2MoeModel {
  Config config;
  HostTensorMap params;  // Origami names, fp32
};
// Reads such a directory back: config from config.json over `base`, tensors converted.
Qwen2MoeModel load_qwen2_moe(const std::string& dir, const Config& base = {});

}  // namespace origami
