// defines: GateKind, GateState, RouterClock, gate_at(), anneal_value(), router_slots(),
//          schedule_is_active(), gumbel_noise()
// The gating schedule as pure functions of the optimizer step (docs/moe.md): which gate the
// router uses at a step (one expert during EvoMoE's diversify phase, top-k with a fixed or
// annealed k, or the dense-to-sparse Gumbel gate at an annealed temperature). Nothing here has
// state, so a checkpoint's step is all a resume needs, and every rank of every layout agrees.
#pragma once
#include <cstdint>
#include <span>
#include <string>

#include "config/config.h"

namespace origami {

enum class GateKind {
  single_expert,    // diversify phase: every token to expert 0 with weight 1
  topk,             // k experts per token (static, topk_anneal, dense_to_sparse after end_step)
  dense_to_sparse,  // experts whose Gumbel-softmax gate exceeds the threshold (at least k)
};

struct GateState {
  GateKind kind = GateKind::topk;
  int64_t k = 1;              // top-k; the minimum number of experts in dense_to_sparse
  double temperature = 1.0;   // dense_to_sparse only
  int64_t schedule_step = 0;  // step on the schedule's clock (after the diversify phase), < 0 in it
};

// Where the next forward pass stands: the optimizer step drives the schedule; the first
// sequence's index in the global batch keys the Gumbel noise of every token (global token index
// = sequence x seq_length + position), so every layout draws the same noise for the same token.
// noise = false (evaluation, tools) uses the gate without noise.
struct RouterClock {
  int64_t step = 0;
  int64_t first_sequence = 0;
  bool noise = false;
  // The micro-batch's index within the step: a pipeline stage that replays a micro-batch's
  // forward in its backward takes the global-batch balance statistics as they were after it.
  int micro_batch = 0;
};

// value at `step` when annealing from `from` (at start) to `to` (at end): linear, cosine (half
// period) or exponential (geometric; from and to > 0); from before start, to from end on.
double anneal_value(const std::string& shape, double from, double to, int64_t start, int64_t end,
                    int64_t step);

GateState gate_at(const MoeConfig& moe, int64_t step);

// Columns of the router's expert-index array: the most experts any token can use under the
// schedule (the router's rows for dense_to_sparse, max(k_start, top_k) for topk_anneal, else
// top_k).
int64_t router_slots(const MoeConfig& moe);

// Whether the schedule ever departs from plain top-k (the log then shows temperature / k and
// experts per token).
bool schedule_is_active(const MoeConfig& moe);

// Standard Gumbel noise -log(-log U) for tokens [first_token, first_token + n) of the global
// batch at `step`, E per token, into out [n, E]: Philox keyed by (seed, step, layer name,
// global token index x E + expert).
void gumbel_noise(uint64_t seed, int64_t step, const std::string& layer, int64_t first_token,
                  int64_t n, int64_t E, float* out);
// The same for arbitrary global token indices (a rank holding non-contiguous tokens under
// tensor/context parallelism): out [tokens.size(), E].
void gumbel_noise(uint64_t seed, int64_t step, const std::string& layer,
                  std::span<const int64_t> tokens, int64_t E, float* out);

}  // namespace origami
