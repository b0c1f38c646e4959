// The gating schedule's pure functions of the step (gate kind, k, temperature) and the
// counter-based Gumbel noise keyed per global token, so every layout draws the same.
#include "model/moe/gating_schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numbers>

#include "base/error.h"
#include "base/rng.h"
#include "model/moe/expert_kinds.h"

namespace origami {

double anneal_value(const std::string& shape, double from, double to, int64_t start, int64_t end,
                    int64_t step) {
  if (step >= end) return to;
  if (step <= start) return from;
  const double f = double(step - start) / double(end - start);
  if (shape == "linear") return from + (to - from) * f;
  if (shape == "cosine") return to + (from - to) * 0.5 * (1.0 + std::cos(std::numbers::pi * f));
  if (shape == "exponential") {
    check(from > 0 && to > 0, "exponential annealing from {} to {}: both must be > 0", from, to);
    return from * std::pow(to / from, f);
  }
  fail("moe.router.schedule.anneal: '{}' is not an annealing shape; allowed: linear, cosine, "
       "exponential", shape);
}

GateState gate_at(const MoeConfig& moe, int64_t step) {
  const auto& s = moe.router.schedule;
  GateState g{.kind = GateKind::topk, .k = moe.top_k, .schedule_step = step - s.diversify.steps};
  if (g.schedule_step < 0) {
    g.kind = GateKind::single_expert;
    g.k = 1;
    return g;
  }
  const int64_t t = g.schedule_step;
  if (s.kind == "topk_anneal") {
    const double k = anneal_value(s.anneal, double(s.k_start), double(moe.top_k), s.start_step,
                                  s.end_step, t);
    g.k = std::clamp<int64_t>(std::llround(k), 1, ExpertKinds::of(moe).routed());
  } else if (s.kind == "dense_to_sparse" && t < s.end_step) {
    // EvoMoE's switch to hard (top-k) routing happens when the temperature reaches tau_end.
    g.kind = GateKind::dense_to_sparse;
    g.temperature = anneal_value(s.anneal, s.tau_start, s.tau_end, s.start_step, s.end_step, t);
  }
  return g;
}

int64_t router_slots(const MoeConfig& moe) {
  const auto& s = moe.router.schedule;
  const int64_t rows = ExpertKinds::of(moe).routed();
  if (s.kind == "dense_to_sparse") return rows;
  if (s.kind == "topk_anneal") return std::min(rows, std::max(s.k_start, moe.top_k));
  return moe.top_k;
}

bool schedule_is_active(const MoeConfig& moe) {
  return moe.router.schedule.kind != "static" || moe.router.schedule.diversify.steps > 0;
}

void gumbel_noise(uint64_t seed, int64_t step, const std::string& layer, int64_t first_token,
                  int64_t n, int64_t E, float* out) {
  const Rng rng(seed, hash_name(fmt::format("{}.gumbel.step{}", layer, step)));
  for (int64_t i = 0; i < n * E; ++i)
    out[i] = float(-std::log(-std::log(rng.uniform(uint64_t(first_token * E + i)))));
}

void gumbel_noise(uint64_t seed, int64_t step, const std::string& layer,
                  std::span<const int64_t> tokens, int64_t E, float* out) {
  const Rng rng(seed, hash_name(fmt::format("{}.gumbel.step{}", layer, step)));
  for (size_t t = 0; t < tokens.size(); ++t)
    for (int64_t e = 0; e < E; ++e)
      out[int64_t(t) * E + e] = float(-std::log(-std::log(rng.uniform(uint64_t(tokens[t] * E + e)))));
}

}  // namespace origami
