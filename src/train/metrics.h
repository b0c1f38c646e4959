// defines: IterationMetrics, MetricsSink
// What one logged iteration reports, formatted twice: a Megatron-style log line on rank 0 and a
// JSON object per line in <run dir>/metrics.jsonl (keys fixed by DESIGN.md, plots read them).
#pragma once
#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

namespace origami {

struct IterationMetrics {
  int64_t iteration = 0, train_steps = 0, consumed_samples = 0, global_batch = 0;
  double ms_per_iter = 0, tokens_per_s = 0, tflops_per_device = 0;
  std::optional<double> mfu;  // only where the device peak is known
  double lr = 0, lm_loss = 0, balance_loss = 0, z_loss = 0, grad_norm = 0;
  int64_t skipped_iterations = 0;
  std::optional<double> dropped_fraction;  // capacity mode only
  // Per MoE layer: max / mean expert load over the global batch (1 = perfectly balanced).
  std::vector<double> expert_load_imbalance;
  // While a gating schedule runs (moe.router.schedule): the gate ("single_expert", "topk",
  // "dense_to_sparse"), its k (the fewest experts per token for dense_to_sparse), its Gumbel
  // temperature, and per MoE layer the mean number of experts per token over the global batch.
  std::string router_gate;
  std::optional<int64_t> router_top_k;
  std::optional<double> router_temperature;
  std::vector<double> experts_per_token;
  // Pipeline parallelism: each stage's measured bubble this iteration (time in sends and
  // receives over compute time) beside the schedule's theory (p-1)/(v m).
  std::vector<double> pipeline_bubble;
  std::vector<double> pipeline_peak_mib;  // each stage's allocator peak (its in-stage rank 0's)
  // The largest allocator peak of any rank so far (MiB; several ranks only): the busiest EP rank
  // under a skewed router, which rank 0's own log line may not be.
  std::optional<double> peak_mib_max;
  std::optional<double> pipeline_bubble_theory;
  // MoE exchange (any MoE model): all-to-all bytes summed over ranks; rows the experts computed
  // per rank, max and mean, and their ratio (the straggler ratio, 1 = even). FSSDP adds its
  // spAG + spRS bytes and the materialised copies.
  std::optional<double> dispatch_bytes, straggler_ratio, rows_max, rows_mean;
  std::optional<double> fssdp_bytes, fssdp_copies;
  // training.precision bf16: elements rank 0 converted fp32 -> bf16 in the step (StepResult).
  std::optional<int64_t> bf16_conversions;
  // Any MoE model: the FFN FLOPs (forward) actually spent per token (train/flops.h); with MoE++'s
  // zero-computation or AdaMoE's null experts, per MoE layer the share of routed (token, slot)s
  // that went to them.
  std::vector<double> zero_compute_share;
  std::optional<double> ffn_flops_per_token;
};

class MetricsSink {
 public:
  // Opens <run_dir>/metrics.jsonl for appending (rank 0 only; others pass an empty dir).
  explicit MetricsSink(const std::string& run_dir);
  void log(const IterationMetrics& m);
  void log_eval(int64_t iteration, double loss);

 private:
  std::ofstream jsonl_;
};

}  // namespace origami
