// defines: MemoryEstimate, estimate_memory(), describe_memory()
// Per-rank memory of a training run computed from the config and the parallel layout alone
// (Megatron's "theoretical memory"), printed at start-up next to what the backend allocated:
// parameters, gradients and optimizer state from each rank's shards; activations from the
// buffers each module keeps per layer (or shares under training.recompute) and the scratch the
// model shares across layers, at training.precision (bf16: activations and the parameters'
// compute copy in 2 bytes, masters, gradients and optimizer state in 4). Dropless expert
// buffers are sized for the busiest EP rank's load: routing_imbalance times a balanced N k rows
// (they only grow, so the most a rank ever held), or moe.dropless_reserve if that is more (they
// start there), never more than the EP group can send the rank (expert_rows.h).
#pragma once
#include <cstdint>
#include <string>

#include "comm/parallel_layout.h"
#include "config/config.h"

namespace origami {

struct MemoryEstimate {
  int64_t parameters = 0;        // elements this rank holds
  double parameter_bytes = 0;    // values
  double gradient_bytes = 0;
  double optimizer_bytes = 0;    // Adam moments (sharded under ZeRO-1) and ZeRO staging
  double activation_bytes = 0;   // kept from forward to backward, all layers
  double scratch_bytes = 0;      // transient buffers shared by all layers
  double total() const {
    return parameter_bytes + gradient_bytes + optimizer_bytes + activation_bytes + scratch_bytes;
  }
};

// The rank's dense coordinates matter only through the layout's sizes (every rank of a stage
// holds the same amount, up to ZeRO's padded last shard). Under pipeline parallelism `stage`
// (0..PP-1) picks the stage: its chunks' layers, the embedding on the first, the head on the
// last (a tied copy there), and the pipeline's boundary buffers for its in-flight micro-batches.
// routing_imbalance: the busiest EP rank's routed rows over the mean (origami-plan
// --imbalance); dropless expert buffers are sized for that rank (at least the config's reserve),
// 1 = a balanced router.
MemoryEstimate estimate_memory(const Config& cfg, const ParallelLayout& layout, int stage = 0,
                               double routing_imbalance = 1.0);
// One log line: "parameters 1.2 MiB (300.0 k) + gradients ... = total".
std::string describe_memory(const MemoryEstimate& m);

}  // namespace origami
