// NodeMap: hostnames all-gathered over the world and numbered in order of first appearance.
#include "comm/node_map.h"

#include <unistd.h>

#include <algorithm>
#include <climits>

#include "base/error.h"

namespace origami {

bool NodeMap::within_one_node(const std::vector<int>& ranks) const {
  if (ranks.empty()) return true;
  const int first = node_of.at(size_t(ranks.front()));
  return std::all_of(ranks.begin(), ranks.end(),
                     [&](int r) { return node_of.at(size_t(r)) == first; });
}

NodeMap NodeMap::gather(const Communicator& world) {
  constexpr int64_t kLen = 256;  // HOST_NAME_MAX is 64 on Linux; leave room
  std::vector<char> mine(size_t(kLen), '\0');
  check(gethostname(mine.data(), size_t(kLen - 1)) == 0, "gethostname failed on world rank {}",
        world.rank());
  std::vector<char> all(size_t(kLen) * size_t(world.size()));
  world.allgather(mine.data(), all.data(), kLen, CommDType::u8);
  NodeMap map;
  for (int r = 0; r < world.size(); ++r) {
    const std::string name(all.data() + size_t(r) * size_t(kLen));
    auto it = std::find(map.names.begin(), map.names.end(), name);
    if (it == map.names.end()) it = map.names.insert(map.names.end(), name);
    map.node_of.push_back(int(it - map.names.begin()));
  }
  return map;
}

NodeMap NodeMap::by_slot(int ranks, int per_node) {
  check(per_node >= 1, "NodeMap::by_slot: {} ranks per node", per_node);
  NodeMap map;
  for (int r = 0; r < ranks; ++r) {
    const int node = r / per_node;
    if (node >= map.nodes()) map.names.push_back("node" + std::to_string(node));
    map.node_of.push_back(node);
  }
  return map;
}

}  // namespace origami
