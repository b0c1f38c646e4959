// defines: StepStats
// What a step's micro-batches add up on one rank (LM loss sum, router losses, dropped slots,
// routed counts per MoE layer and expert), summed over the stage in one all-reduce: a named
// struct in place of a positional array, packed for the collective in one place.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "comm/communicator.h"
#include "model/moe_transformer.h"

namespace origami {

struct StepStats {
  double lm_loss_sum = 0.0;     // sum of token losses over this rank's CP chunks
  double balance_loss = 0.0;    // unscaled per-layer values, summed over layers and micro-batches
  double z_loss = 0.0;          // likewise
  double dropped_slots = 0.0;   // capacity mode
  std::vector<std::vector<int64_t>> expert_counts;  // [moe layer][expert]

  // rows[l]: the router rows of MoE layer l (its experts, plus MoE++'s and AdaMoE's).
  explicit StepStats(const std::vector<int64_t>& rows) {
    for (int64_t r : rows) expert_counts.emplace_back(size_t(r), 0);
  }

  void add(const ForwardStats& st) {
    lm_loss_sum += st.lm_loss_sum;
    dropped_slots += double(st.dropped_slots);
    for (size_t l = 0; l < expert_counts.size(); ++l)  // empty: a layer of another stage
      for (size_t e = 0; e < st.expert_counts[l].size(); ++e)
        expert_counts[l][e] += st.expert_counts[l][e];
  }
  void add_router_losses(const RouterLosses& r) {
    balance_loss += r.balance;
    z_loss += r.z;
  }

  // Sums every field over `group` (one call; counts travel as doubles, exact below 2^53).
  void allreduce(const Communicator& group) {
    std::vector<double> buf = {lm_loss_sum, balance_loss, z_loss, dropped_slots};
    for (const auto& layer : expert_counts)
      for (int64_t c : layer) buf.push_back(double(c));
    group.allreduce(std::span<double>(buf));
    lm_loss_sum = buf[0], balance_loss = buf[1], z_loss = buf[2], dropped_slots = buf[3];
    size_t i = 4;
    for (auto& layer : expert_counts)
      for (int64_t& c : layer) c = int64_t(buf[i++]);
  }
};

}  // namespace origami
