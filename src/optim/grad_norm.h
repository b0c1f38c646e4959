// defines: reduce_replica_gradients(), dense_norm_squared(), expert_norm_squared()
// The tensor-parallel side of gradient reduction and of the global norm, shared by both
// optimizers: replicated parameters sum their partial gradients over their replicas, and the
// norm counts each distinct element once however the layout splits or replicates it.
#pragma once
#include <cstdint>
#include <functional>

#include "model/parameters.h"
#include "optim/optimizer.h"

namespace origami {

// Parameters replicated over TP ranks that computed different parts of their gradient (norms,
// router and shared expert on sequence-parallel rows; kv heads shared by several ranks) sum it
// over those ranks, so every replica holds the same gradient. Under pipeline parallelism with
// tied embeddings the first stage's embedding and the last stage's copy sum theirs too.
void reduce_replica_gradients(ParamStore& store, const GradientGroups& groups);

// The dense part of the squared gradient norm: parameters split over TP add up over the TP
// ranks; a TP-replicated one appears on every TP rank (or on every rank of its kv group), so
// its squares enter with weight 1/replicas. sumsq(begin, end) is this rank's contribution over
// the dense flat range [begin, end) (ZeRO-1: already summed over its shards' group).
double dense_norm_squared(const ParamStore& store, const GradientGroups& groups,
                          const std::function<double(int64_t, int64_t)>& sumsq);

// The expert part: the squares of different expert shards (ETP x EP) add up.
double expert_norm_squared(double local, const GradientGroups& groups);

// The global norm from this stage's dense and expert parts: the stages' squares add up.
double global_norm(double dense_squared, double expert_squared, const GradientGroups& groups);

}  // namespace origami
