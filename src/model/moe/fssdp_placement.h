// defines: FssdpPlacement, FssdpPlanInputs, even_owners(), ep_placement(), plan_placement(),
// reshard_owners()
// FSSDP's decisions as data (Hecate, docs/moe.md): who owns each expert of a MoE layer, which
// ranks hold a materialised copy this iteration, and which copy computes each (source rank,
// expert) block of tokens. Pure, deterministic functions of all-reduced inputs, so every rank of
// the stage computes the same plan without talking; tested alone (tests/model/
// test_fssdp_placement.cpp). Ranks are positions in the FSSDP group (ep + EP x edp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace origami {

struct FssdpPlacement {
  int ranks = 0;
  int64_t experts = 0;
  std::vector<int> owner;                 // [E] the rank holding e's parameters and Adam state
  std::vector<std::vector<int>> holders;  // [E] ranks holding e this iteration, ascending (owner in)
  std::vector<int> route;                 // [ranks * E] rank computing source d's rows of e

  int route_of(int source, int64_t e) const { return route[size_t(source) * size_t(experts) + size_t(e)]; }
  bool holds(int rank, int64_t e) const;
  // The experts `rank` holds (owned or copied), ascending: the order its expert GEMMs run in.
  std::vector<int64_t> resident(int rank) const;
  // Copies beyond the owners (materialised experts), over all ranks.
  int64_t copies() const;
  // Experts with at least one copy besides the owner.
  std::vector<int64_t> replicated() const;
};

// Owners at the start: EP rank ep(e) = e / (E / EP) as in expert parallelism, and among its
// EDP replicas the experts split into contiguous, even runs (edp = j x EDP / (E / EP) for its
// j-th expert). Every rank then owns E / (EP x EDP) experts (or, with fewer experts than
// replicas, one or none), and the EP placement below holds every owner.
std::vector<int> even_owners(int64_t experts, int ep, int edp);

// Owners only: every expert on its owner, every block routed there (the plan before any loads).
FssdpPlacement owner_placement(int ranks, int64_t experts, const std::vector<int>& owner);

// The EP layout on every replica group: e is held by (ep(e), edp) for every edp, and source
// (ep_s, edp_s) sends it to the copy in its own replica group (ep(e), edp_s): exactly where EP
// computes it.
FssdpPlacement ep_placement(int64_t experts, int ep, int edp, const std::vector<int>& owner);

struct FssdpPlanInputs {
  int ranks = 0;
  int64_t experts = 0;
  std::vector<double> load;     // [ranks * E] tokens source d routed to e, mean over the window
  std::vector<int> owner;       // [E]
  std::vector<int> node_of;     // [ranks]
  int64_t max_replicas_per_rank = 0;
  double expert_bytes = 0;      // one expert's parameters on one rank (its ETP slice)
  double token_bytes = 0;       // one routed row (hidden x 4 bytes)
  bool rematerialize = false;   // a copy is gathered twice (forward and backward)
};

// Hecate's materialisation with FasterMoE's cost rule: a copy of e on rank d pays when the rows d
// would keep local (its own tokens for e, each crossing twice forward and twice backward)
// outweigh the copy's traffic (spAG + spRS of the expert, plus a second spAG when
// rematerialising). Candidates (d, e) are taken by that benefit, largest first (ties: lower e,
// then lower d), while d has fewer than max_replicas_per_rank copies. Routing: a source's rows
// of e stay on the source when it holds e; else go to a holder on its node (the one with the
// fewest rows assigned so far, sources taken in rank order; ties: lower rank); else to the owner.
FssdpPlacement plan_placement(const FssdpPlanInputs& in);

// Hecate's Alg. 2 (heterogeneous sharding) under a fixed number of owned experts per rank (each
// rank's parameter and Adam buffers keep their shapes): the experts `hot` (replicated anyway) are
// set aside; the others, by descending total load (ties: lower e), go to the least-loaded node
// with a free slot (ties: fewer free slots, then lower node), then its least-loaded rank (same
// ties); the hot ones fill the remaining slots in ascending order. Returns the new owners.
std::vector<int> reshard_owners(const std::vector<double>& load, const std::vector<int>& owner,
                                const std::vector<int>& node_of, const std::vector<int64_t>& hot);

}  // namespace origami
