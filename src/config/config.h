// defines: Config and its typed sections; load_config(), apply_override(), to_yaml(),
//          pipeline_schedule_kind()
// One struct per YAML section, one field per key, each with its default and a comment. The
// loader (config_loader.cpp) rejects unknown keys, wrong types and out-of-range values naming
// file:line and key; validate() checks cross-field rules (world-size divisibility etc.) before
// any large allocation. docs/configuration.md documents every key.
#pragma once
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/schedule.h"

namespace origami {

struct ModelConfig {
  int64_t vocab_size = 8192;
  int64_t hidden_size = 128;
  int64_t num_layers = 4;
  int64_t num_attention_heads = 4;
  int64_t num_query_groups = 2;        // key/value heads (GQA); = heads for MHA
  int64_t ffn_hidden_size = 512;       // dense MLP layers (those layer_freq makes dense)
  int64_t max_seq_length = 256;
  double rope_theta = 10000.0;
  double norm_eps = 1e-5;
  bool tie_embeddings = false;
  double init_std = 0.02;              // normal init std; output projections scaled by 1/sqrt(2L)
  friend bool operator==(const ModelConfig&, const ModelConfig&) = default;
};

// EvoMoE's expert-diversify phase: the first `steps` steps train expert 0 alone (every token,
// weight 1, no router losses); then every other expert is spawned from it and the gate schedule
// starts. Steps of the schedule below count from that spawn.
struct DiversifyConfig {
  int64_t steps = 0;                   // 0 = no diversify phase
  double mask_ratio = 0.5;             // share of each spawned expert's weights re-drawn from init
  double noise_std = 0.0;              // std of Gaussian noise added to every spawned weight
  friend bool operator==(const DiversifyConfig&, const DiversifyConfig&) = default;
};

// Gating schedule driven by the optimizer step (docs/moe.md). A pure function of the step, so a
// checkpoint needs only the step to resume it.
struct RouterScheduleConfig {
  std::string kind = "static";         // static | dense_to_sparse | topk_anneal
  std::string anneal = "linear";       // linear | cosine | exponential: shape of tau or k
  int64_t start_step = 0;              // annealing from start_step ...
  int64_t end_step = 1000;             // ... to end_step (dense_to_sparse: then plain top-k)
  double tau_start = 2.0;              // dense_to_sparse: Gumbel-softmax temperature at start
  double tau_end = 0.3;                //   ... and at end_step
  double threshold = 1e-3;             //   experts with gate weight <= threshold are dropped
  bool gumbel_weights = false;         //   combine with the Gumbel gate (else the router's scores)
  int64_t k_start = 1;                 // topk_anneal: k at start_step (moe.top_k at end_step)
  DiversifyConfig diversify;
  friend bool operator==(const RouterScheduleConfig&, const RouterScheduleConfig&) = default;
};

// Router options (docs/moe.md); logits, scores and top-k are computed in fp32 always.
struct RouterConfig {
  std::string score = "softmax";       // softmax | sigmoid (DeepSeek-V3)
  bool pre_softmax = true;             // softmax over all experts, then top-k (false: top-k of
                                       // the logits, then softmax over those k; Megatron default)
  bool renormalize = true;             // divide the top-k weights by their sum (Mixtral)
  double scaling_factor = 1.0;         // multiplies the combine weights (DeepSeek-V3: 2.5)
  int64_t num_groups = 0;              // group-limited routing: experts in num_groups groups ...
  int64_t group_topk = 0;              // ... top-k only inside the best group_topk (0 = off)
  bool expert_bias = false;            // auxiliary-loss-free balancing bias (selection only)
  // SMoE-Dropout: the router keeps its random initialisation: no weight gradient, no update
  // (gradients still reach the layer input through the gate weights); no balance loss.
  bool freeze = false;
  // MoE++'s gating residual: logits of MoE layer l add W_map (E x E, trained) times layer l-1's
  // logits (the first MoE layer has none), so routing decisions are carried across layers.
  bool gating_residual = false;
  // linear: logits = W x. recurrent (RMoE): u = W1 x (to recurrent_dim), g_l = GRU(u, g_{l-1})
  // with one GRU cell shared by every MoE layer (g_0 = 0), logits = W2_l g_l.
  std::string kind = "linear";
  int64_t recurrent_dim = 256;
  double bias_update_rate = 1e-3;      // b_i += rate * sign(mean load - load_i) after each step
  std::string load_balance = "micro_batch";  // none | micro_batch | sequence | global_batch
  double aux_loss_coeff = 1e-2;
  double z_loss_coeff = 1e-3;
  RouterScheduleConfig schedule;
  friend bool operator==(const RouterConfig&, const RouterConfig&) = default;
};

// Fully sharded sparse data parallelism (Hecate, docs/moe.md): every expert of a MoE layer is
// owned by exactly one of the stage's EP x EDP ranks (parameters and Adam state), and copies of
// hot experts are materialised each iteration on the ranks that route many tokens to them.
struct FssdpConfig {
  bool enabled = false;
  // planned: Hecate's per-iteration copies from the recent loads; ep: the EP layout on every EDP
  // replica group (the placement EP + ZeRO-1 has, copies of every EP rank's experts on each
  // replica; bitwise the EP + ZeRO-1 run).
  std::string placement = "planned";
  int64_t max_replicas_per_rank = 2;   // copies of other ranks' experts a rank holds per layer
  int64_t load_window = 5;             // iterations of expert loads the plan averages (Hecate: 5)
  int64_t reshard_interval = 100;      // re-choose owners (Hecate's Alg. 2) every N steps; 0 = never
  bool rematerialize = false;          // free copies after forward, gather them again for backward
  friend bool operator==(const FssdpConfig&, const FssdpConfig&) = default;
};

// MoE++'s zero-computation experts (docs/moe.md), routed like the FFN experts after them in the
// router's rows (FFN, copy, constant, zero) and computed on every rank (no all-to-all).
struct ZeroComputeConfig {
  int64_t zero = 0;                    // E(x) = 0: the slot's weight is 0, outside renormalising
  int64_t copy = 0;                    // E(x) = x
  int64_t constant = 0;                // E(x) = a1 x + a2 v, [a1, a2] = softmax(W_c x), v trained
  double balance_weight = 1.0;         // MoE++'s tau: these experts' weight in the balance loss
  int64_t total() const { return zero + copy + constant; }
  friend bool operator==(const ZeroComputeConfig&, const ZeroComputeConfig&) = default;
};

struct MoeConfig {
  int64_t num_experts = 8;             // 0 = a dense model (every layer a SwiGLU MLP)
  int64_t top_k = 2;
  int64_t expert_ffn_hidden_size = 256;
  int64_t shared_expert_ffn_hidden_size = 0;  // 0 = no shared expert
  int64_t layer_freq = 1;              // every layer_freq-th layer is MoE (1 = all), others dense
  std::optional<double> capacity_factor;  // null = dropless; else C = ceil(N k / E * factor) per
                                          // expert per rank (N = the rank's micro-batch tokens)
  std::string drop_policy = "probs";   // probs: keep each expert's C highest-probability slots;
                                       // position: keep the first C in token order
  bool pad_to_capacity = false;        // pad every expert's rows to C (static expert shapes)
  // Routing-sized expert buffers are allocated at start-up for this routing imbalance (the
  // busiest EP rank's rows over a balanced N k) and grow past it only if routing needs more: a
  // fresh router's rising highs then do not reallocate them step after step (expert_rows.h).
  double dropless_reserve = 1.0;
  ZeroComputeConfig zero_compute_experts;
  // AdaMoE: router rows of experts that output nothing and cost nothing (last in the router);
  // the weights renormalise over the true experts selected, the balance loss counts all rows.
  int64_t null_experts = 0;
  // DeepSpeed's residual MoE (PR-MoE): a dense SwiGLU MLP of the expert's shape beside the routed
  // experts, out = moe * c0 + mlp * c1 with [c0, c1] = softmax(W_coef x), W_coef [2, H] trained.
  bool residual = false;
  // Pyramid MoE (PR-MoE): one FFN-expert count per MoE layer, in layer order (e.g. more experts
  // in the last layers); empty = moe.num_experts everywhere. EP must divide every count.
  std::vector<int64_t> num_experts_per_layer;
  RouterConfig router;
  FssdpConfig fssdp;
  // FFN experts of the moe_index-th MoE layer (0-based, in layer order).
  int64_t experts_at(int moe_index) const {
    return num_experts_per_layer.empty() ? num_experts : num_experts_per_layer.at(size_t(moe_index));
  }
  friend bool operator==(const MoeConfig&, const MoeConfig&) = default;
};

struct ParallelConfig {
  int64_t tensor = 1;
  int64_t context = 1;
  int64_t pipeline = 1;                 // PP: pipeline stages (validated; not trainable yet)
  int64_t virtual_pipeline = 1;         // v: model chunks per pipeline rank (interleaved)
  std::string pipeline_schedule = "1f1b";  // 1f1b | interleaved | gpipe (unset, v > 1: interleaved)
  int64_t pipeline_first_stage_layers = 0;  // layers of the first pipeline rank (0 = even split)
  int64_t pipeline_last_stage_layers = 0;   // layers of the last pipeline rank (0 = even split)
  int64_t expert = 1;
  int64_t expert_tensor = 1;
  bool sequence_parallel = false;
  friend bool operator==(const ParallelConfig&, const ParallelConfig&) = default;
};

struct TrainingConfig {
  std::string backend = "cpu";         // cpu | cuda
  int64_t micro_batch_size = 2;
  int64_t global_batch_size = 16;
  int64_t seq_length = 128;
  int64_t train_steps = 300;
  uint64_t seed = 1234;
  std::string precision = "fp32";      // fp32 | bf16 (cuda)
  std::string recompute = "none";      // none | selective | full
  int64_t logits_chunk_tokens = 4096;  // LM head + loss rows at a time (0 = all at once)
  int64_t eval_interval = 0;           // 0 = no evaluation
  int64_t eval_steps = 10;
  double collective_timeout_s = 300;   // a collective not done by then ends the job (0 = never)
  friend bool operator==(const TrainingConfig&, const TrainingConfig&) = default;
};

struct OptimizerConfig {
  double lr = 3e-3;
  double min_lr = 3e-4;
  int64_t warmup_steps = 30;
  std::string decay = "cosine";        // cosine | linear | constant
  int64_t decay_steps = 0;             // 0 = training.train_steps
  double weight_decay = 0.1;
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double grad_clip = 1.0;              // 0 = no clipping
  bool distributed = false;            // ZeRO-1 (expert-parallel issue)
  friend bool operator==(const OptimizerConfig&, const OptimizerConfig&) = default;
};

struct BlendEntry {
  std::string path;                    // dataset prefix, without .bin/.idx
  double weight = 1.0;
  friend bool operator==(const BlendEntry&, const BlendEntry&) = default;
};

struct TokenizerConfig {
  std::string kind = "sentencepiece";  // sentencepiece | byte
  std::string model;                   // .model path for sentencepiece
  friend bool operator==(const TokenizerConfig&, const TokenizerConfig&) = default;
};

struct DataConfig {
  std::vector<BlendEntry> blend;
  TokenizerConfig tokenizer;
  std::vector<double> split = {98, 2, 0};   // train, valid, test weights, by documents
  std::string cache_dir;               // "" = next to each dataset
  bool eod_mask_loss = false;
  friend bool operator==(const DataConfig&, const DataConfig&) = default;
};

struct CheckpointConfig {
  std::string dir;                     // "" = <logging.dir>/checkpoints
  int64_t save_interval = 0;           // 0 = never
  int64_t keep_last = 3;
  std::string load;                    // path to resume from ("" = fresh start)
  friend bool operator==(const CheckpointConfig&, const CheckpointConfig&) = default;
};

struct LoggingConfig {
  std::string dir = "runs/default";    // run directory: config.yaml, metrics.jsonl
  int64_t interval = 1;
  std::string level = "info";
  int64_t expert_load_interval = 50;   // per-layer expert load every N iterations (0 = never)
  // Expert-specialisation report every N iterations and at the end (0 = never): each layer's
  // expert-selection frequency on each data.blend dataset, to <dir>/expert_report.{json,csv}.
  int64_t expert_report_interval = 0;
  // Per-op and per-group times of every logged step, all ranks, to <dir>/profile.jsonl
  // (train/step_profile.h). Synchronises around every op: for attribution, not throughput.
  bool profile = false;
  friend bool operator==(const LoggingConfig&, const LoggingConfig&) = default;
};

struct Config {
  ModelConfig model;
  MoeConfig moe;
  ParallelConfig parallel;
  TrainingConfig training;
  OptimizerConfig optimizer;
  DataConfig data;
  CheckpointConfig checkpoint;
  LoggingConfig logging;
  std::string source;                  // file it was loaded from ("<embedded default>" else)
  // Where each explicitly set key came from ("configs/x.yaml:12" or "--set moe.top_k=1"), so
  // validate() can point at the lines behind a cross-field error. Keys left at their default
  // are absent.
  std::map<std::string, std::string> origin;
};

// Equal settings: compares every section, not `source` or `origin` (where they came from).
bool operator==(const Config& a, const Config& b);

// Parses YAML text; `source` names it in errors ("configs/x.yaml"). Throws Error on unknown
// keys, wrong types, out-of-range values, naming source:line, the key and what is allowed.
Config parse_config(const std::string& yaml_text, const std::string& source);
Config load_config(const std::string& path);
// "section.key=value" (value parsed as YAML, e.g. "moe.top_k=1", "data.split=[90,10,0]").
void apply_override(Config& cfg, const std::string& assignment);
// Cross-field checks that need the world size (parallel sizes dividing it, batch divisibility).
void validate(const Config& cfg, int world_size);
// The effective config, as YAML that parse_config accepts back.
std::string to_yaml(const Config& cfg);
// Every full key ("moe.router.aux_loss_coeff") in to_yaml order; docs/configuration.md lists them.
std::vector<std::string> config_keys();

// Config strings that hot paths branch on, parsed once where a module is built (the schema has
// already refused any other spelling; these throw an Error naming the key if one slips through).
enum class RecomputeMode { none, selective, full };  // training.recompute
RecomputeMode parse_recompute_mode(const std::string& name);
enum class RouterScore { softmax, sigmoid };  // moe.router.score
RouterScore parse_router_score(const std::string& name);
// parallel.pipeline_schedule as it runs: an explicit value as given; left unset (not in
// cfg.origin and still "1f1b"), interleaved when parallel.virtual_pipeline > 1, else 1f1b.
ScheduleKind pipeline_schedule_kind(const Config& cfg);
// Stores that effective value in cfg.parallel.pipeline_schedule when the key was left unset; the
// loader and apply_override() call it, so a loaded Config and its to_yaml() agree.
void resolve_pipeline_schedule(Config& cfg);

}  // namespace origami
