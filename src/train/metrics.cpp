// MetricsSink: the rank-0 log line and metrics.jsonl rows of IterationMetrics, and the
// validation lines.
#include "train/metrics.h"

#include <cmath>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "base/error.h"
#include "base/logging.h"

namespace origami {

MetricsSink::MetricsSink(const std::string& run_dir) {
  if (run_dir.empty()) return;
  const std::string path = run_dir + "/metrics.jsonl";
  jsonl_.open(path, std::ios::app);
  check(jsonl_.good(), "cannot open metrics file '{}' for writing", path);
}

void MetricsSink::log(const IterationMetrics& m) {
  std::string mfu = m.mfu ? fmt::format("{:.2f}%", 100.0 * *m.mfu) : "n/a";
  spdlog::info(
      "iteration {:>6}/{:>6} | consumed samples: {:>9} | elapsed time per iteration (ms): {:.1f} "
      "| tokens/s: {:.0f} | TFLOP/s/device: {:.3f} | MFU: {} | learning rate: {:.6E} | global "
      "batch size: {:>5} | lm loss: {:.6E} | load balancing loss: {:.4f} | z loss: {:.4f} | "
      "grad norm: {:.3f} | skipped iterations: {:>3} |",
      m.iteration, m.train_steps, m.consumed_samples, m.ms_per_iter, m.tokens_per_s,
      m.tflops_per_device, mfu, m.lr, m.global_batch, m.lm_loss, m.balance_loss, m.z_loss,
      m.grad_norm, m.skipped_iterations);
  if (m.dropped_fraction)
    spdlog::info("capacity: {:.3f}% of routed (token, slot)s dropped", 100.0 * *m.dropped_fraction);
  if (!m.expert_load_imbalance.empty()) {
    std::string loads;
    for (size_t l = 0; l < m.expert_load_imbalance.size(); ++l)
      loads += fmt::format("{}L{} {:.2f}", l ? " " : "", l, m.expert_load_imbalance[l]);
    spdlog::info("expert load (max/mean per MoE layer): {}", loads);
  }
  if (m.ffn_flops_per_token) {
    std::string per_layer;
    for (size_t l = 0; l < m.zero_compute_share.size(); ++l)
      per_layer += fmt::format("{}L{} {:.3f}", l ? " " : "", l, m.zero_compute_share[l]);
    spdlog::info("expert FFN: {:.3f} MFLOP per token (forward){}", *m.ffn_flops_per_token / 1e6,
                 per_layer.empty() ? std::string()
                                   : " | slots on zero-computation / null experts: " + per_layer);
  }
  if (!m.router_gate.empty()) {
    std::string per_layer;
    for (size_t l = 0; l < m.experts_per_token.size(); ++l)
      per_layer += fmt::format("{}L{} {:.2f}", l ? " " : "", l, m.experts_per_token[l]);
    spdlog::info("router schedule: {} gate, k {}{} | experts per token: {}", m.router_gate,
                 m.router_top_k.value_or(0),
                 m.router_temperature ? fmt::format(", temperature {:.4f}", *m.router_temperature)
                                      : std::string(),
                 per_layer);
  }
  if (!m.pipeline_bubble.empty()) {
    std::string stages;
    for (size_t s = 0; s < m.pipeline_bubble.size(); ++s)
      stages += fmt::format("{}S{} {:.3f}", s ? " " : "", s, m.pipeline_bubble[s]);
    std::string peaks;
    for (size_t s = 0; s < m.pipeline_peak_mib.size(); ++s)
      peaks += fmt::format("{}S{} {:.1f}", s ? " " : "", s, m.pipeline_peak_mib[s]);
    spdlog::info("pipeline bubble (idle / compute per stage): {} | theory {:.3f} | peak memory "
                 "per stage (MiB): {}", stages, m.pipeline_bubble_theory.value_or(0.0), peaks);
  }
  if (m.dispatch_bytes)
    spdlog::info("moe exchange: dispatch {} | rows per rank max / mean {:.0f} / {:.1f} (straggler "
                 "ratio {:.3f}){}", format_bytes(*m.dispatch_bytes), m.rows_max.value_or(0),
                 m.rows_mean.value_or(0), m.straggler_ratio.value_or(1.0),
                 m.fssdp_bytes ? fmt::format(" | fssdp {} in {:.0f} copies",
                                             format_bytes(*m.fssdp_bytes), m.fssdp_copies.value_or(0))
                               : std::string());
  if (!jsonl_.is_open()) return;
  nlohmann::json j = {{"iteration", m.iteration},       {"consumed_samples", m.consumed_samples},
                      {"lm_loss", m.lm_loss},           {"balance_loss", m.balance_loss},
                      {"z_loss", m.z_loss},             {"grad_norm", m.grad_norm},
                      {"lr", m.lr},                     {"tokens_per_s", m.tokens_per_s},
                      {"ms_per_iter", m.ms_per_iter},   {"tflops_per_device", m.tflops_per_device},
                      {"skipped_iterations", m.skipped_iterations},
                      {"global_batch_size", m.global_batch}};
  j["mfu"] = m.mfu ? nlohmann::json(*m.mfu) : nlohmann::json(nullptr);
  if (m.dropped_fraction) j["dropped_fraction"] = *m.dropped_fraction;
  if (!m.expert_load_imbalance.empty()) j["expert_load_imbalance"] = m.expert_load_imbalance;
  if (!m.router_gate.empty()) {
    j["router_gate"] = m.router_gate;
    j["router_top_k"] = m.router_top_k.value_or(0);
    j["router_temperature"] =
        m.router_temperature ? nlohmann::json(*m.router_temperature) : nlohmann::json(nullptr);
    j["experts_per_token"] = m.experts_per_token;
  }
  if (m.ffn_flops_per_token) {
    j["ffn_flops_per_token"] = *m.ffn_flops_per_token;
    if (!m.zero_compute_share.empty()) j["zero_compute_share"] = m.zero_compute_share;
  }
  if (!m.pipeline_bubble.empty()) {
    j["pipeline_bubble"] = m.pipeline_bubble;
    j["pipeline_bubble_theory"] = m.pipeline_bubble_theory.value_or(0.0);
    j["pipeline_peak_mib"] = m.pipeline_peak_mib;
  }
  if (m.peak_mib_max) j["peak_mib_max"] = *m.peak_mib_max;
  if (m.dispatch_bytes) {
    j["dispatch_bytes"] = *m.dispatch_bytes;
    j["straggler_ratio"] = m.straggler_ratio.value_or(1.0);
    j["expert_rows_max"] = m.rows_max.value_or(0);
    j["expert_rows_mean"] = m.rows_mean.value_or(0);
  }
  if (m.bf16_conversions) j["bf16_conversions"] = *m.bf16_conversions;
  if (m.fssdp_bytes) {
    j["fssdp_bytes"] = *m.fssdp_bytes;
    j["fssdp_copies"] = m.fssdp_copies.value_or(0);
  }
  jsonl_ << j.dump() << "\n";
  jsonl_.flush();
}

void MetricsSink::log_eval(int64_t iteration, double loss) {
  spdlog::info("validation at iteration {} | lm loss: {:.6E} | perplexity: {:.3f}", iteration, loss,
               std::exp(loss));
  if (!jsonl_.is_open()) return;
  jsonl_ << nlohmann::json{{"iteration", iteration}, {"valid_lm_loss", loss}}.dump() << "\n";
  jsonl_.flush();
}

}  // namespace origami
