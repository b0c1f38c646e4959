// defines: small_config() — the tiny MoE the multi-rank training tests run on the shipped Brown
// data (3 genres), fp32, 10 steps, caches and run directories under the build tree.
#pragma once
#include <string>

#include "config/config.h"

namespace origami {

inline Config small_config(const std::string& run_name) {
  Config c;
  c.source = "<test config>";
  c.model = {.vocab_size = 8192, .hidden_size = 32, .num_layers = 2, .num_attention_heads = 4,
             .num_query_groups = 2, .ffn_hidden_size = 64, .max_seq_length = 32};
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.expert_ffn_hidden_size = 48;
  c.moe.shared_expert_ffn_hidden_size = 16;
  c.moe.layer_freq = 1;
  c.training.micro_batch_size = 2;
  c.training.global_batch_size = 8;
  c.training.seq_length = 32;
  c.training.train_steps = 10;
  c.optimizer.lr = 3e-3;
  c.optimizer.warmup_steps = 2;
  const std::string data = std::string(ORIGAMI_SOURCE_DIR) + "/data/brown/";
  c.data.blend = {{data + "brown_a_text_document", 2.0}, {data + "brown_j_text_document", 1.0},
                  {data + "brown_n_text_document", 1.0}};
  c.data.tokenizer = {.kind = "sentencepiece", .model = data + "tokenizer.model"};
  c.data.cache_dir = std::string(ORIGAMI_BINARY_DIR) + "/test-data-cache";
  c.logging.dir = std::string(ORIGAMI_BINARY_DIR) + "/test-runs/" + run_name;
  c.logging.interval = 100;
  return c;
}

}  // namespace origami
