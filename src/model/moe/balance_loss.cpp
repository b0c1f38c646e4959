// BalanceLoss and router_z_loss: host-side arithmetic in double on small [N,E] / [N] arrays. It is
// O(N E) next to the experts' O(N H F) and keeps each formula readable and deterministic; a fused
// device kernel can replace it behind the same interface.
#include "model/moe/balance_loss.h"

#include <algorithm>
#include <span>

#include "base/error.h"

namespace origami {
namespace {

constexpr const char* kModeNames[] = {"none", "micro_batch", "sequence", "global_batch"};

// E * sum_i f_i P_i over one block of n tokens (p: [n,E] host), P_i = mean_t p[t,i]; writes the
// gradient rows scale * E * f_i / n into g [n,E]. The operation order is the one the original
// micro-batch loss used, so micro_batch results stay bit-identical.
double balance_block(const float* p, const double* f, int64_t n, int64_t E, double scale,
                     float* g) {
  std::vector<double> sum_p(size_t(E), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < E; ++i) sum_p[size_t(i)] += p[t * E + i];
  double loss = 0.0;
  for (int64_t i = 0; i < E; ++i) {
    loss += f[i] * sum_p[size_t(i)] / double(n);
    g[i] = float(scale * double(E) * f[i] / double(n));
  }
  for (int64_t t = 1; t < n; ++t) std::copy(g, g + E, g + t * E);
  return double(E) * loss;
}

// Routed (token, slot)s in a count vector; at least 1, so f stays finite for an empty block.
double routed(const int64_t* counts, int64_t E) {
  int64_t total = 0;
  for (int64_t i = 0; i < E; ++i) total += counts[i];
  return double(std::max<int64_t>(total, 1));
}

}  // namespace

BalanceMode parse_balance_mode(const std::string& name) {
  for (int m = 0; m < 4; ++m)
    if (name == kModeNames[m]) return BalanceMode(m);
  fail("moe.router.load_balance: '{}' is not a balance-loss mode; allowed: none, micro_batch, "
       "sequence, global_batch",
       name);
}

const char* balance_mode_name(BalanceMode mode) { return kModeNames[int(mode)]; }

BalanceLoss::BalanceLoss(BalanceMode mode, int64_t E, int64_t k, const Communicator* sync,
                         bool share_of_routed, const Communicator* split)
    : mode_(mode), E_(E), k_(k), sync_(sync), share_of_routed_(share_of_routed), split_(split) {
  check(E >= 1 && k >= 1 && k <= E, "BalanceLoss: top-k {} with {} experts; allowed: 1 <= k <= E",
        k, E);
  check(mode != BalanceMode::global_batch || sync != nullptr,
        "BalanceLoss: moe.router.load_balance=global_batch needs the communicator of the ranks "
        "balanced together (got none)");
  begin_step();
}

void BalanceLoss::set_row_sequences(std::vector<int32_t> row_sequence, int64_t B, int64_t S) {
  for (int32_t b : row_sequence)
    check(b >= 0 && b < B, "BalanceLoss: row sequence {} outside [0, {})", b, B);
  row_sequence_ = std::move(row_sequence);
  rows_B_ = B;
  rows_S_ = S;
}

void BalanceLoss::begin_step() {
  step_counts_.assign(size_t(E_), 0);
  step_tokens_ = 0;
  step_micro_batches_ = 0;
}

double BalanceLoss::forward(Backend& be, const int64_t* counts, const int32_t* idx,
                            const float* probs, int64_t B, int64_t S, float grad_scale,
                            float* dprobs) {
  check(B >= 1 && S >= 1, "BalanceLoss::forward: micro-batch of {} sequences x {} tokens; "
        "allowed: both >= 1", B, S);
  const int64_t N = B * S, E = E_, k = k_;
  if (mode_ == BalanceMode::none) {
    f_.clear();
    be.fill(dprobs, 0.f, N * E);
    return 0.0;
  }
  probs_host_.resize(size_t(N * E));
  dprobs_host_.resize(size_t(N * E));
  be.copy_to_host(probs_host_.data(), probs, probs_host_.size() * sizeof(float));
  const float* p = probs_host_.data();
  float* g = dprobs_host_.data();
  double loss = 0.0;

  switch (mode_) {
    case BalanceMode::micro_batch: {
      f_.resize(size_t(E));
      std::vector<int64_t> c(counts, counts + E);
      int64_t tokens = N;
      if (split_ && split_->size() > 1) {  // f over the whole micro-batch
        c.push_back(N);
        split_->allreduce(std::span<int64_t>(c));
        tokens = c.back();
        c.pop_back();
      }
      const double slots = share_of_routed_ ? routed(c.data(), E) : double(k * tokens);
      for (int64_t i = 0; i < E; ++i) f_[size_t(i)] = double(c[size_t(i)]) / slots;
      loss = balance_block(p, f_.data(), N, E, double(grad_scale), g);
      break;
    }
    case BalanceMode::sequence: {
      if (!row_sequence_.empty()) {
        loss = split_sequences(p, idx, N, double(grad_scale), g, be);
        break;
      }
      // Per-sequence counts come from the slots; together they must be this micro-batch's counts.
      const std::vector<int64_t> c = sequence_counts(idx, N, B, S, be);
      for (int64_t i = 0; i < E; ++i) {
        int64_t total = 0;
        for (int64_t b = 0; b < B; ++b) total += c[size_t(b * E + i)];
        check(total == counts[i], "BalanceLoss: expert {} has {} slots in the router indices but "
              "{} in the counts given", i, total, counts[i]);
      }
      set_sequence_fractions(c, B, S);
      // mean over sequences: each block's gradient carries the 1/B too
      for (int64_t b = 0; b < B; ++b)
        loss += balance_block(p + b * S * E, f_.data() + b * E, S, E,
                              double(grad_scale) / double(B), g + b * S * E);
      loss /= double(B);
      break;
    }
    case BalanceMode::global_batch: {
      // One all-reduce of [counts..., tokens]: the group's token total is summed rather than
      // assumed to be N x |sync|, which it equals while every rank holds a full micro-batch.
      std::vector<int64_t> c(counts, counts + E);
      c.push_back(N);
      sync_->allreduce(std::span<int64_t>(c));
      for (int64_t i = 0; i < E; ++i) step_counts_[size_t(i)] += c[size_t(i)];
      step_tokens_ += c[size_t(E)];
      ++step_micro_batches_;
      // Running mean over this step's micro-batches: f_i = (B_i / n) / (k T_group), sum_i f_i = 1.
      const double n = double(step_micro_batches_);
      const double group_tokens = double(step_tokens_) / n;
      f_.resize(size_t(E));
      const double slots = share_of_routed_ ? routed(step_counts_.data(), E) / n
                                            : double(k) * group_tokens;
      for (int64_t i = 0; i < E; ++i) f_[size_t(i)] = (double(step_counts_[size_t(i)]) / n) / slots;
      loss = balance_block(p, f_.data(), N, E, double(grad_scale), g);
      break;
    }
    case BalanceMode::none:
      break;
  }
  be.copy_from_host(dprobs, g, dprobs_host_.size() * sizeof(float));
  return loss;
}

// Sequence mode over rows that are parts of sequences: counts per (sequence, expert) summed over
// the split group, P summed over this rank's rows / S. The rank's share of the micro-batch loss
// is (1/B) sum_b E sum_i f_bi P_bi(local); it is returned (and its gradient written) times the
// group size, because the caller averages the parts.
double BalanceLoss::split_sequences(const float* p, const int32_t* idx, int64_t N, double scale,
                                    float* g, Backend& be) {
  const int64_t E = E_, B = rows_B_, S = rows_S_;
  check(int64_t(row_sequence_.size()) == N, "BalanceLoss: {} row sequences for {} rows",
        row_sequence_.size(), N);
  std::vector<int64_t> c = sequence_counts(idx, N, B, S, be);
  const double parts = split_ ? double(split_->size()) : 1.0;
  if (split_ && split_->size() > 1) split_->allreduce(std::span<int64_t>(c));
  set_sequence_fractions(c, B, S);
  std::vector<double> sum_p(size_t(B * E), 0.0);
  for (int64_t t = 0; t < N; ++t) {
    const int64_t b = row_sequence_[size_t(t)];
    for (int64_t i = 0; i < E; ++i) {
      sum_p[size_t(b * E + i)] += p[t * E + i];
      g[t * E + i] = float(scale * parts * double(E) * f_[size_t(b * E + i)] / double(S * B));
    }
  }
  double loss = 0.0;
  for (int64_t j = 0; j < B * E; ++j) loss += f_[size_t(j)] * sum_p[size_t(j)] / double(S);
  return parts * double(E) * loss / double(B);
}

std::vector<int64_t> BalanceLoss::sequence_counts(const int32_t* idx, int64_t N, int64_t B,
                                                  int64_t S, Backend& be) {
  const int64_t E = E_, k = k_;
  idx_host_.resize(size_t(N * k));
  be.copy_to_host(idx_host_.data(), idx, idx_host_.size() * sizeof(int32_t));
  std::vector<int64_t> c(size_t(B * E), 0);
  for (int64_t t = 0; t < N; ++t) {
    const int64_t b = row_sequence_.empty() ? t / S : row_sequence_[size_t(t)];
    for (int64_t s = 0; s < k; ++s) {
      const int32_t e = idx_host_[size_t(t * k + s)];
      check(e >= -1 && e < E, "BalanceLoss: router slot ({}, {}) holds expert {}; allowed: -1 "
            "(dropped) or 0..{}", t, s, e, E - 1);
      if (e >= 0) ++c[size_t(b * E + e)];
    }
  }
  return c;
}

void BalanceLoss::set_sequence_fractions(const std::vector<int64_t>& c, int64_t B, int64_t S) {
  const int64_t E = E_;
  f_.assign(size_t(B * E), 0.0);
  for (int64_t b = 0; b < B; ++b) {
    const double slots = share_of_routed_ ? routed(c.data() + b * E, E) : double(k_ * S);
    for (int64_t i = 0; i < E; ++i) f_[size_t(b * E + i)] = double(c[size_t(b * E + i)]) / slots;
  }
}

double router_z_loss(Backend& be, const float* lse, int64_t N, float grad_scale, float* dlse) {
  std::vector<float> l(static_cast<size_t>(N)), g(static_cast<size_t>(N));
  be.copy_to_host(l.data(), lse, l.size() * sizeof(float));
  double z = 0.0;
  for (int64_t t = 0; t < N; ++t) {
    z += double(l[size_t(t)]) * l[size_t(t)];
    g[size_t(t)] = float(grad_scale * 2.0 * l[size_t(t)] / double(N));
  }
  be.copy_from_host(dlse, g.data(), g.size() * sizeof(float));
  return z / double(N);
}

}  // namespace origami
