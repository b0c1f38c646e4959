// defines: ExpertRows, expert_rows()
// How many rows an EP rank's routing-sized buffers hold: the MoE layer allocates them at
// start-up for moe.dropless_reserve, and the memory estimate sizes them for a stated routing
// imbalance; one function so the two cannot drift apart.
#pragma once
#include <cstdint>

#include "config/config.h"

namespace origami {

struct ExpertRows {
  int64_t local = 0;     // this rank's permuted rows, what it sends: N k (padded: E C)
  int64_t received = 0;  // rows it receives over EP, before the ETP gather
  int64_t computed = 0;  // rows its experts compute, after the ETP gather: received x ETP
};

// n: the rank's tokens (sequence-parallel rows); num_experts: the layer's FFN experts.
// `imbalance`: the busiest EP rank's received rows over a balanced n k. Dropless buffers only
// grow, and start at the reserve, so they hold max(imbalance, moe.dropless_reserve) x n k rows,
// but never more than every slot of the EP group's tokens that can reach this rank's E / EP
// experts (n EP min(k, E / EP); FSSDP places experts by load, so it has no such bound). Capacity
// buffers stop at the capacity factor; padded ones hold exactly E C.
ExpertRows expert_rows(const MoeConfig& moe, int64_t n, int64_t num_experts, int ep, int etp,
                       double imbalance);

}  // namespace origami
