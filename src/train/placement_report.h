// defines: PlacementReport, placement_report(), log_placement()
// Which process groups stay inside a node and which span nodes, from the hostname of every rank
// (NodeMap). TP traffic is every layer's (all-gathers and reduce-scatters per sub-layer), so a TP
// group across nodes is warned about; DP, PP and usually EP are meant to cross nodes.
#pragma once
#include <string>
#include <vector>

#include "comm/node_map.h"
#include "comm/parallel_layout.h"

namespace origami {

struct PlacementReport {
  std::vector<std::string> lines;     // for the log, in order
  std::vector<std::string> warnings;  // TP / ETP across nodes
};

// Pure: the report for `layout` placed by `nodes` (tests use NodeMap::by_slot).
PlacementReport placement_report(const ParallelLayout& layout, const NodeMap& nodes);

// Collective over `world`: gathers the node map, logs the report on rank 0 (warnings as spdlog
// warnings) and hands every rank's hostname to the collective watchdog.
NodeMap log_placement(const Communicator& world, const ParallelLayout& layout);

}  // namespace origami
