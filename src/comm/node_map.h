// defines: NodeMap (which node each world rank runs on)
// Nodes are told apart by hostname, as Open MPI does (docs/multinode.md): ranks whose
// gethostname() agree share a node. Topology-aware code (FSSDP's "a copy on the same node",
// the placement report's "groups that span nodes") reads this one map.
#pragma once
#include <string>
#include <vector>

#include "comm/communicator.h"

namespace origami {

struct NodeMap {
  std::vector<int> node_of;         // [world rank] -> node index (nodes numbered by first rank)
  std::vector<std::string> names;   // [node index] -> hostname
  int nodes() const { return int(names.size()); }
  // Whether every member of `ranks` (world ranks) runs on one node.
  bool within_one_node(const std::vector<int>& ranks) const;

  // Collective over `world`: every rank learns every rank's hostname.
  static NodeMap gather(const Communicator& world);
  // Offline / tests: `ranks` ranks filled onto nodes of `per_node` ranks in rank order (mpirun's
  // --map-by slot), named node0, node1, ...
  static NodeMap by_slot(int ranks, int per_node);
};

}  // namespace origami
