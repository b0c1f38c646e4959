// defines: calibrate_cluster()
// origami-plan --calibrate: every rank of the job measures at the same time (so ranks that share
// cores measure under the same contention training will see) its backend's GEMM throughput over
// a sweep of sizes, the attention core, an elementwise op's bandwidth and a tiny op's fixed
// cost, all through ProfilingBackend; then the world's all-gather at two sizes gives the link's
// latency and bandwidth. The ranks' figures are averaged into one ClusterSpec.
#pragma once
#include <string>

#include "comm/communicator.h"
#include "plan/cluster_spec.h"

namespace origami {

// Collective over `world`. ranks_per_node: the ranks sharing this node (all of them here).
ClusterSpec calibrate_cluster(const Communicator& world, const std::string& backend,
                              int ranks_per_node);

}  // namespace origami
