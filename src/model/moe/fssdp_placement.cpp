// The FSSDP plan (fssdp_placement.h): ownership, materialised copies, block routing, re-sharding.
#include "model/moe/fssdp_placement.h"

#include <algorithm>
#include <numeric>
#include <tuple>

#include "base/error.h"

namespace origami {

bool FssdpPlacement::holds(int rank, int64_t e) const {
  const auto& h = holders[size_t(e)];
  return std::binary_search(h.begin(), h.end(), rank);
}

std::vector<int64_t> FssdpPlacement::resident(int rank) const {
  std::vector<int64_t> out;
  for (int64_t e = 0; e < experts; ++e)
    if (holds(rank, e)) out.push_back(e);
  return out;
}

int64_t FssdpPlacement::copies() const {
  int64_t n = 0;
  for (const auto& h : holders) n += int64_t(h.size()) - 1;
  return n;
}

std::vector<int64_t> FssdpPlacement::replicated() const {
  std::vector<int64_t> out;
  for (int64_t e = 0; e < experts; ++e)
    if (holders[size_t(e)].size() > 1) out.push_back(e);
  return out;
}

std::vector<int> even_owners(int64_t experts, int ep, int edp) {
  check(ep >= 1 && edp >= 1 && experts % ep == 0,
        "FSSDP: {} experts cannot be owned over EP {} x EDP {}", experts, ep, edp);
  const int64_t per_ep = experts / ep;
  std::vector<int> owner(static_cast<size_t>(experts));
  for (int64_t e = 0; e < experts; ++e) {
    const int64_t j = e % per_ep;
    const int edp_rank = int(j * edp / per_ep);
    owner[size_t(e)] = int(e / per_ep) + ep * edp_rank;
  }
  return owner;
}

FssdpPlacement owner_placement(int ranks, int64_t experts, const std::vector<int>& owner) {
  FssdpPlacement p{.ranks = ranks, .experts = experts, .owner = owner};
  p.holders.resize(size_t(experts));
  p.route.resize(size_t(ranks) * size_t(experts));
  for (int64_t e = 0; e < experts; ++e) {
    p.holders[size_t(e)] = {owner[size_t(e)]};
    for (int d = 0; d < ranks; ++d) p.route[size_t(d) * size_t(experts) + size_t(e)] = owner[size_t(e)];
  }
  return p;
}

FssdpPlacement ep_placement(int64_t experts, int ep, int edp, const std::vector<int>& owner) {
  FssdpPlacement p{.ranks = ep * edp, .experts = experts, .owner = owner};
  const int64_t per_ep = experts / ep;
  p.holders.resize(size_t(experts));
  p.route.resize(size_t(p.ranks) * size_t(experts));
  for (int64_t e = 0; e < experts; ++e) {
    const int home = int(e / per_ep);
    for (int r = 0; r < edp; ++r) p.holders[size_t(e)].push_back(home + ep * r);
    check(p.holds(owner[size_t(e)], e),
          "FSSDP: the EP placement does not hold expert {}'s owner (rank {})", e, owner[size_t(e)]);
    for (int d = 0; d < p.ranks; ++d)
      p.route[size_t(d) * size_t(experts) + size_t(e)] = home + ep * (d / ep);
  }
  return p;
}

namespace {

// Routes every (source, expert) block whole: local copy, else a holder on the source's node
// (fewest rows assigned so far), else the owner.
void route_blocks(FssdpPlacement& p, const std::vector<double>& load,
                  const std::vector<int>& node_of) {
  const int64_t E = p.experts;
  p.route.assign(size_t(p.ranks) * size_t(E), 0);
  for (int64_t e = 0; e < E; ++e) {
    const auto& h = p.holders[size_t(e)];
    std::vector<double> assigned(h.size());
    for (size_t i = 0; i < h.size(); ++i) assigned[i] = load[size_t(h[i]) * size_t(E) + size_t(e)];
    for (int d = 0; d < p.ranks; ++d) {
      int dest = p.owner[size_t(e)];
      if (p.holds(d, e)) {
        dest = d;
      } else {
        int best = -1;
        for (size_t i = 0; i < h.size(); ++i)
          if (node_of[size_t(h[i])] == node_of[size_t(d)] &&
              (best < 0 || assigned[i] < assigned[size_t(best)]))
            best = int(i);
        if (best >= 0) {
          dest = h[size_t(best)];
          assigned[size_t(best)] += load[size_t(d) * size_t(E) + size_t(e)];
        }
      }
      p.route[size_t(d) * size_t(E) + size_t(e)] = dest;
    }
  }
}

}  // namespace

FssdpPlacement plan_placement(const FssdpPlanInputs& in) {
  const int64_t E = in.experts;
  check(in.ranks >= 1 && int64_t(in.load.size()) == in.ranks * E &&
            int64_t(in.owner.size()) == E && int(in.node_of.size()) == in.ranks,
        "FSSDP plan: inputs for {} ranks x {} experts have {} loads, {} owners, {} nodes",
        in.ranks, E, in.load.size(), in.owner.size(), in.node_of.size());
  FssdpPlacement p = owner_placement(in.ranks, E, in.owner);
  // Candidates by benefit (bytes a copy keeps off the exchange per iteration).
  const double cost = (in.rematerialize ? 3.0 : 2.0) * in.expert_bytes;
  std::vector<std::tuple<double, int64_t, int>> cand;  // (benefit, e, d)
  for (int d = 0; d < in.ranks; ++d)
    for (int64_t e = 0; e < E; ++e) {
      const double benefit = 4.0 * in.load[size_t(d) * size_t(E) + size_t(e)] * in.token_bytes;
      if (in.owner[size_t(e)] != d && benefit > cost) cand.emplace_back(benefit, e, d);
    }
  std::sort(cand.begin(), cand.end(), [](const auto& a, const auto& b) {
    if (std::get<0>(a) != std::get<0>(b)) return std::get<0>(a) > std::get<0>(b);
    if (std::get<1>(a) != std::get<1>(b)) return std::get<1>(a) < std::get<1>(b);
    return std::get<2>(a) < std::get<2>(b);
  });
  std::vector<int64_t> copies_on(size_t(in.ranks), 0);
  for (const auto& [benefit, e, d] : cand) {
    if (copies_on[size_t(d)] >= in.max_replicas_per_rank) continue;
    auto& h = p.holders[size_t(e)];
    h.insert(std::upper_bound(h.begin(), h.end(), d), d);
    ++copies_on[size_t(d)];
  }
  route_blocks(p, in.load, in.node_of);
  return p;
}

std::vector<int> reshard_owners(const std::vector<double>& load, const std::vector<int>& owner,
                                const std::vector<int>& node_of, const std::vector<int64_t>& hot) {
  const int64_t E = int64_t(owner.size());
  const int D = int(node_of.size());
  check(int64_t(load.size()) == int64_t(D) * E, "FSSDP re-shard: {} loads for {} ranks x {} experts",
        load.size(), D, E);
  std::vector<int> free(size_t(D), 0);
  for (int o : owner) ++free[size_t(o)];
  const int nodes = node_of.empty() ? 0 : *std::max_element(node_of.begin(), node_of.end()) + 1;
  std::vector<double> total(size_t(E), 0.0), dev_load(size_t(D), 0.0), node_load(size_t(nodes), 0.0);
  for (int d = 0; d < D; ++d)
    for (int64_t e = 0; e < E; ++e) total[size_t(e)] += load[size_t(d) * size_t(E) + size_t(e)];
  std::vector<bool> is_hot(size_t(E), false);
  for (int64_t e : hot) is_hot[size_t(e)] = true;
  std::vector<int64_t> cold;
  for (int64_t e = 0; e < E; ++e)
    if (!is_hot[size_t(e)]) cold.push_back(e);
  std::stable_sort(cold.begin(), cold.end(),
                   [&](int64_t a, int64_t b) { return total[size_t(a)] > total[size_t(b)]; });
  std::vector<int> out(size_t(E), -1);
  auto node_free = [&](int n) {
    int f = 0;
    for (int d = 0; d < D; ++d)
      if (node_of[size_t(d)] == n) f += free[size_t(d)];
    return f;
  };
  for (int64_t e : cold) {
    int best_node = -1;
    for (int n = 0; n < nodes; ++n) {
      if (node_free(n) == 0) continue;
      if (best_node < 0 || node_load[size_t(n)] < node_load[size_t(best_node)] ||
          (node_load[size_t(n)] == node_load[size_t(best_node)] && node_free(n) < node_free(best_node)))
        best_node = n;
    }
    int best = -1;
    for (int d = 0; d < D; ++d) {
      if (node_of[size_t(d)] != best_node || free[size_t(d)] == 0) continue;
      if (best < 0 || dev_load[size_t(d)] < dev_load[size_t(best)] ||
          (dev_load[size_t(d)] == dev_load[size_t(best)] && free[size_t(d)] < free[size_t(best)]))
        best = d;
    }
    check(best >= 0, "FSSDP re-shard: no free slot for expert {}", e);
    out[size_t(e)] = best;
    --free[size_t(best)];
    dev_load[size_t(best)] += total[size_t(e)];
    node_load[size_t(best_node)] += total[size_t(e)];
  }
  int d = 0;
  for (int64_t e = 0; e < E; ++e) {
    if (!is_hot[size_t(e)]) continue;
    while (d < D && free[size_t(d)] == 0) ++d;
    check(d < D, "FSSDP re-shard: no free slot for expert {}", e);
    out[size_t(e)] = d;
    --free[size_t(d)];
  }
  return out;
}

}  // namespace origami
