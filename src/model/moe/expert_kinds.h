// defines: ExpertKinds (the router's rows by kind: FFN, copy, constant, zero, null)
// MoE++'s zero-computation experts and AdaMoE's null experts are routed like the FFN experts:
// they are extra rows of the router, after the FFN experts, in a fixed order
//   [0, ffn)                  FFN experts (the dispatcher's and GroupedExperts' experts)
//   [ffn, +copy)              copy:     E(x) = x
//   [.., +constant)           constant: E(x) = a1 x + a2 v
//   [.., +zero)               zero:     E(x) = 0
//   [.., +null)               null:     E(x) = 0 (AdaMoE)
// so the copy and constant experts are computed on every rank beside the dispatcher, and the
// silent ones (zero, null) are a weight of 0 the gate leaves out of its renormalisation.
#pragma once
#include <cstdint>
#include <vector>

#include "config/config.h"

namespace origami {

struct ExpertKinds {
  int64_t ffn = 0, copy = 0, constant = 0, zero = 0, null = 0;

  // moe_index: which MoE layer (pyramid MoE: moe.num_experts_per_layer); -1 = moe.num_experts.
  static ExpertKinds of(const MoeConfig& moe, int moe_index = -1) {
    return {.ffn = moe_index < 0 ? moe.num_experts : moe.experts_at(moe_index), .copy = moe.zero_compute_experts.copy,
            .constant = moe.zero_compute_experts.constant, .zero = moe.zero_compute_experts.zero,
            .null = moe.null_experts};
  }
  int64_t routed() const { return ffn + copy + constant + zero + null; }  // the router's rows
  int64_t copy_begin() const { return ffn; }
  int64_t constant_begin() const { return ffn + copy; }
  int64_t silent_begin() const { return ffn + copy + constant; }  // zero, then null
  int64_t null_begin() const { return ffn + copy + constant + zero; }
  // Whether any row is not an FFN expert (the dispatcher then sees only the FFN slots).
  bool any_extra() const { return routed() > ffn; }
  bool computed_beside() const { return copy + constant > 0; }  // copy / constant on every rank
};

// The router rows of every MoE layer of the model, in layer order.
inline std::vector<int64_t> router_rows_per_layer(const MoeConfig& moe, int moe_layers) {
  std::vector<int64_t> rows;
  for (int l = 0; l < moe_layers; ++l) rows.push_back(ExpertKinds::of(moe, l).routed());
  return rows;
}

}  // namespace origami
