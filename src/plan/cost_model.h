// defines: CommTerm, StepPrediction, CostOptions, predict_step(), group_spans_nodes()
// The planner's cost model, term by term so `origami-plan --explain` can print it:
//   step = pipeline makespan (micro-batches x chunks of forward + backward, each with the
//          collectives it blocks on, placed by the schedule tables' dry run) + gradient
//          reduction (DP x CP dense, EDP expert, TP replicas) + optimizer.
// Compute comes from FLOPs and bytes per op against the cluster's compute spec; communication
// from each group's exact message sizes (the ones src/model and src/optim send) against the
// link the group uses (intra- or inter-node, from the rank order). Origami's collectives block,
// so every byte is exposed: nothing is overlapped with compute.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "config/config.h"
#include "plan/cluster_spec.h"
#include "plan/layout_space.h"

namespace origami {

// One group's traffic over a step, as one rank of the slowest stage sees it.
struct CommTerm {
  std::string group;       // "tp", "cp", "ep", "etp", "dp_cp", "edp", "pp", "tp (replicas)"
  std::string what;        // "attention input all-gather + output reduce-scatter", ...
  int group_size = 1;
  bool spans_nodes = false;
  double bytes = 0;        // bytes this rank sends per step (the collective's algorithmic share)
  double calls = 0;        // collectives per step (where ranks share cores: the mean stage's,
                           // which a pipeline makes fractional)
  double bandwidth_gbps = 0;
  double ms = 0;           // time per step on the critical path
};

struct StepPrediction {
  double step_ms = 0;
  double compute_ms = 0;    // forward, backward, recomputation, replays, optimizer
  double comm_ms = 0;       // exposed communication (all of it: Origami's collectives block)
  double bubble_ms = 0;     // pipeline idle time of the slowest stage's rank
  double optimizer_ms = 0;  // part of compute_ms
  double memory_bytes = 0;  // estimate_memory, the largest stage
  int memory_stage = 0;
  double tokens_per_s = 0;
  double replay_share = 0;  // backward passes that replay their chunk's forward (PP > 1), the
                            // most on any pipeline rank
  std::vector<CommTerm> terms;
  // compute_ms by kind, in kComputeKinds order (ms per step).
  std::vector<std::pair<std::string, double>> compute_terms_ms;
};

// What the compute terms are made of, each named for the ProfilingBackend ops it predicts (so a
// logging.profile run can be held against it: tools/plan/profile_vs_plan.py):
//   gemm: projections, router, dense MLP, shared expert, LM head ("gemm");
//   experts: the routed experts' GEMMs ("gemm_batched (experts)");
//   attention: the causal core, forward, backward, recomputed ("attention_*");
//   swiglu, cross_entropy: their per-element ops ("swiglu_*", "cross_entropy_*");
//   optimizer: AdamW, gradient zeroing and norm ("adamw", "fill", "sum_squares", "scale");
//   elementwise: norms, RoPE, residuals, permutes, copies and each op's fixed cost (the rest).
inline constexpr const char* kComputeKinds[] = {"gemm",          "experts",     "attention",
                                                "swiglu",        "cross_entropy", "optimizer",
                                                "elementwise"};

struct CostOptions {
  // Routed tokens of the busiest expert-parallel rank over the mean (1 = a perfectly balanced
  // router): scales the expert GEMMs and the dispatcher's all-to-all on the critical path, and
  // the dropless expert buffers in the memory check.
  double routing_imbalance = 1.0;
};

// Whether the group of `rank` (world ranks sorted) holds ranks of more than one node when ranks
// fill nodes in order, ranks_per_node at a time (launch/train.sh's --map-by slot).
bool group_spans_nodes(const std::vector<int>& members, int ranks_per_node);

// estimate_memory() of the largest stage: {bytes, stage}. Equal to calling it for every stage
// (a unit test checks), but its pipeline term is computed once per schedule shape, since building
// every rank's schedule table for it dominates a 512-rank search.
std::pair<double, int> layout_memory(const Config& cfg, int world, double routing_imbalance = 1.0);

// `cfg` already carries the layout (apply_layout); `world` ranks.
StepPrediction predict_step(const Config& cfg, int world, const ClusterSpec& cluster,
                            const CostOptions& options = {});

}  // namespace origami
