// BalanceLoss: which counts f is taken over in each mode (and the collectives that sum them),
// then the backend's balance_loss op does the O(N E) arithmetic where probs live.
#include "model/moe/balance_loss.h"

#include <algorithm>
#include <span>

#include "base/error.h"

namespace origami {
namespace {

constexpr const char* kModeNames[] = {"none", "micro_batch", "sequence", "global_batch"};

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
  step_history_.clear();
}

const int64_t* BalanceLoss::upload(Backend& be, const std::vector<int64_t>& counts) {
  const int64_t n = int64_t(counts.size());
  if (counts_buf_.empty() || counts_buf_.numel() < n) counts_buf_ = TensorOf<int64_t>::zeros(be, {n});
  be.copy_from_host(counts_buf_.data(), counts.data(), size_t(n) * sizeof(int64_t));
  return counts_buf_.data();
}

const int64_t* BalanceLoss::sequence_counts(Backend& be, const int32_t* idx, int64_t N, int64_t B) {
  const int64_t E = E_;
  if (seq_counts_.empty() || seq_counts_.numel() < B * E) seq_counts_ = TensorOf<int64_t>::zeros(be, {B * E});
  const int32_t* rows = row_sequence_.empty() ? nullptr : row_sequence_dev_.data();
  be.expert_counts_per_block(idx, rows, N, k_, E, B, seq_counts_.data());
  if (rows && split_ && split_->size() > 1) {  // f per whole sequence: counts over the split
    std::vector<int64_t> c(size_t(B * E));
    be.copy_to_host(c.data(), seq_counts_.data(), c.size() * sizeof(int64_t));
    split_->allreduce(std::span<int64_t>(c));
    be.copy_from_host(seq_counts_.data(), c.data(), c.size() * sizeof(int64_t));
  }
  return seq_counts_.data();
}

void BalanceLoss::forward(Backend& be, const int64_t* counts, const int64_t* counts_dev,
                          const int32_t* idx, const float* probs, int64_t B, int64_t S,
                          float grad_scale, double* loss, float* dprobs, BalanceReplay replay) {
  check(B >= 1 && S >= 1, "BalanceLoss::forward: micro-batch of {} sequences x {} tokens; "
        "allowed: both >= 1", B, S);
  const int64_t N = B * S, E = E_, k = k_;
  const bool share = share_of_routed_;
  f_backend_ = nullptr;
  if (mode_ == BalanceMode::none) {
    f_blocks_ = 0;
    be.fill(dprobs, 0.f, N * E);
    return;
  }
  switch (mode_) {
    case BalanceMode::micro_batch: {
      std::vector<int64_t> c(counts, counts + E);
      int64_t tokens = N;
      const int64_t* dev = counts_dev;
      if (split_ && split_->size() > 1) {  // f over the whole micro-batch
        c.push_back(N);
        split_->allreduce(std::span<int64_t>(c));
        tokens = c.back();
        c.pop_back();
        dev = upload(be, c);
      } else if (!dev) {
        dev = upload(be, c);
      }
      f_counts_ = std::move(c);
      f_blocks_ = 1;
      f_slots_ = double(k * tokens);
      be.balance_loss(probs, dev, nullptr, N, E, 1, share, f_slots_, double(E), double(N),
                      grad_scale, loss, dprobs);
      break;
    }
    case BalanceMode::sequence: {
      const bool rows_split = !row_sequence_.empty();
      if (rows_split && row_sequence_dev_.empty()) {
        row_sequence_dev_ = IndexTensor::zeros(be, {int64_t(row_sequence_.size())});
        be.copy_from_host(row_sequence_dev_.data(), row_sequence_.data(),
                          row_sequence_.size() * sizeof(int32_t));
      }
      check(!rows_split || int64_t(row_sequence_.size()) == N,
            "BalanceLoss: {} row sequences for {} rows", row_sequence_.size(), N);
      // Rows that are parts of sequences: the whole sequences' B and S; the value is scaled by
      // the split's size because the caller averages the parts.
      const int64_t Bs = rows_split ? rows_B_ : B, Ss = rows_split ? rows_S_ : S;
      const double parts = rows_split && split_ ? double(split_->size()) : 1.0;
      const int64_t* dev = sequence_counts(be, idx, N, Bs);
      if (!rows_split && !be.is_device_memory(dev)) {
        // The caller's counts must be what the slots add up to. Checked where the backend's
        // memory is the host's (the CPU reference); a device would need a copy, a host sync.
        for (int64_t i = 0; i < E; ++i) {
          int64_t total = 0;
          for (int64_t b = 0; b < Bs; ++b) total += dev[b * E + i];
          check(total == counts[i], "BalanceLoss: expert {} has {} slots in the router indices "
                "but {} in the counts given", i, total, counts[i]);
        }
      }
      f_backend_ = &be;
      f_blocks_ = Bs;
      f_slots_ = double(k * Ss);
      // Mean over sequences of E sum_i f_bi P_bi, P a mean over the sequence's S tokens.
      be.balance_loss(probs, dev, rows_split ? row_sequence_dev_.data() : nullptr, N, E, Bs,
                      share, f_slots_, parts * double(E) / double(Bs), double(Ss), grad_scale,
                      loss, dprobs);
      break;
    }
    case BalanceMode::global_batch: {
      if (replay.replay) {  // f as it was after this micro-batch
        check(replay.micro_batch >= 0 && size_t(replay.micro_batch) < step_history_.size(),
              "BalanceLoss: replay of micro-batch {} but {} passed this step", replay.micro_batch,
              step_history_.size());
        const auto& [c, tokens] = step_history_[size_t(replay.micro_batch)];
        be.balance_loss(probs, upload(be, c), nullptr, N, E, 1, share, double(k * tokens),
                        double(E), double(N), grad_scale, loss, dprobs);
        break;
      }
      // One all-reduce of [counts..., tokens]: the group's token total is summed rather than
      // assumed to be N x |sync|, which it equals while every rank holds a full micro-batch.
      std::vector<int64_t> c(counts, counts + E);
      c.push_back(N);
      sync_->allreduce(std::span<int64_t>(c));
      for (int64_t i = 0; i < E; ++i) step_counts_[size_t(i)] += c[size_t(i)];
      step_tokens_ += c[size_t(E)];
      ++step_micro_batches_;
      step_history_.emplace_back(step_counts_, step_tokens_);
      // Running mean over this step's micro-batches: f_i = (B_i / n) / (k T_group / n), the
      // step's counts over the step's slots; sum_i f_i = 1.
      f_counts_ = step_counts_;
      f_blocks_ = 1;
      f_slots_ = double(k * step_tokens_);
      be.balance_loss(probs, upload(be, step_counts_), nullptr, N, E, 1, share, f_slots_,
                      double(E), double(N), grad_scale, loss, dprobs);
      break;
    }
    case BalanceMode::none:
      break;
  }
}

std::vector<double> BalanceLoss::last_f() const {
  const int64_t E = E_, B = f_blocks_;
  std::vector<int64_t> c = f_counts_;
  if (f_backend_) {
    c.resize(size_t(B * E));
    f_backend_->copy_to_host(c.data(), seq_counts_.data(), c.size() * sizeof(int64_t));
  }
  std::vector<double> f(size_t(B * E));
  for (int64_t b = 0; b < B; ++b) {
    const double d = share_of_routed_ ? routed(c.data() + b * E, E) : f_slots_;
    for (int64_t i = 0; i < E; ++i) f[size_t(b * E + i)] = double(c[size_t(b * E + i)]) / d;
  }
  return f;
}

void router_z_loss(Backend& be, const float* lse, int64_t N, float grad_scale, double* loss,
                   float* dlse) {
  be.router_z_loss(lse, N, grad_scale, loss, dlse);
}

}  // namespace origami
