// Placement report: per group kind, how many of its groups span nodes.
#include "train/placement_report.h"

#include <fmt/format.h>

#include <algorithm>
#include <set>

#include "base/logging.h"
#include "comm/collective_watchdog.h"

namespace origami {
namespace {

std::string rank_ranges(const std::vector<int>& ranks) {  // "0-1, 4"
  std::string out;
  for (size_t i = 0; i < ranks.size();) {
    size_t j = i;
    while (j + 1 < ranks.size() && ranks[j + 1] == ranks[j] + 1) ++j;
    out += fmt::format("{}{}", out.empty() ? "" : ",", ranks[i]);
    if (j > i) out += fmt::format("-{}", ranks[j]);
    i = j + 1;
  }
  return out;
}

}  // namespace

PlacementReport placement_report(const ParallelLayout& layout, const NodeMap& nodes) {
  using G = ParallelLayout::Group;
  PlacementReport rep;
  std::string where;
  for (int n = 0; n < nodes.nodes(); ++n) {
    std::vector<int> on;
    for (int r = 0; r < layout.world(); ++r)
      if (nodes.node_of.at(size_t(r)) == n) on.push_back(r);
    where += fmt::format("{}{}: ranks {}", n ? "; " : "", nodes.names[size_t(n)], rank_ranges(on));
  }
  rep.lines.push_back(fmt::format("placement: {} ranks on {} node{} ({})", layout.world(),
                                  nodes.nodes(), nodes.nodes() == 1 ? "" : "s", where));
  std::string inside, across;
  for (G g : {G::tp, G::cp, G::dp, G::pp, G::etp, G::ep, G::edp}) {
    std::set<std::vector<int>> groups;
    for (int r = 0; r < layout.world(); ++r) groups.insert(layout.group(g, r));
    if (groups.begin()->size() == 1) continue;  // a dimension of size 1 places nothing
    int spanning = 0;
    int widest = 1;
    for (const auto& members : groups) {
      std::set<int> on;
      for (int r : members) on.insert(nodes.node_of.at(size_t(r)));
      spanning += on.size() > 1;
      widest = std::max(widest, int(on.size()));
    }
    const std::string name = group_name(g);
    if (spanning == 0) {
      inside += fmt::format("{}{}", inside.empty() ? "" : ", ", name);
    } else {
      across += fmt::format("{}{} ({} of {} groups, up to {} nodes)", across.empty() ? "" : ", ",
                            name, spanning, groups.size(), widest);
      if (g == G::tp || g == G::etp)
        rep.warnings.push_back(fmt::format(
            "placement: {} of {} {} groups span nodes: tensor-parallel traffic (every layer) "
            "crosses the inter-node network. Give each host a multiple of parallel.{} slots "
            "(hostfile slots=) so ranks fill nodes in {} order",
            spanning, groups.size(), name, g == G::tp ? "tensor" : "expert_tensor", name));
    }
  }
  rep.lines.push_back(fmt::format("placement: within a node: {}; across nodes: {}",
                                  inside.empty() ? "-" : inside, across.empty() ? "-" : across));
  return rep;
}

NodeMap log_placement(const Communicator& world, const ParallelLayout& layout) {
  NodeMap nodes = NodeMap::gather(world);
  std::vector<std::string> host_of;
  for (int r = 0; r < world.size(); ++r) host_of.push_back(nodes.names[size_t(nodes.node_of[size_t(r)])]);
  watchdog_set_node_names(std::move(host_of));
  if (world.rank() == 0) {
    const PlacementReport rep = placement_report(layout, nodes);
    for (const auto& l : rep.lines) spdlog::info("{}", l);
    for (const auto& w : rep.warnings) spdlog::warn("{}", w);
  }
  return nodes;
}

}  // namespace origami
