// defines: FssdpExperts (one MoE layer's experts under fully sharded sparse data parallelism)
// Hecate's two phases for one layer (docs/moe.md, "FSSDP"):
//   sharding: each expert (its fc1 and fc2 slices, hence its gradient and Adam state) is a
//     parameter of exactly one owner among the stage's EP x EDP ranks (the ep_edp group);
//   materialisation: each iteration a placement (fssdp_placement.h) names the ranks holding a
//     copy; spAG sends owners' weights to them before the layer's expert compute, spRS sums the
//     copies' gradients into the owners after the backward (once per step, or per micro-batch
//     when rematerialising), and the copies are freed.
// Both collectives are one all-to-all(v) over the group that every rank enters, even with
// nothing to send. Ownership moves (re-sharding, Hecate's Alg. 2) carry the weights and both
// Adam moments exactly; the number of experts each rank owns stays fixed, so the parameter and
// optimizer buffers keep their shapes.
#pragma once
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "model/moe/experts.h"
#include "model/moe/fssdp_placement.h"
#include "model/moe/token_dispatcher.h"

namespace origami {

class FssdpExperts {
 public:
  // Declares this rank's owned experts (even_owners) as parameters "prefix.fc1.weight" /
  // "prefix.fc2.weight", one [1, ...] box per expert at its global index.
  FssdpExperts(ModelContext& ctx, ParamStore& store, const std::string& prefix, int num_layers);

  // Start of a step (or an evaluation batch): frees copies still held and installs the
  // iteration's placement from the load window (collective over the stage the first time: the
  // node map).
  void begin_step();
  // Before the layer's expert compute: gathers the copies this rank holds from their owners
  // (spAG), unless already held. Collective over the group.
  void materialize();
  // Rematerialisation: frees the copies' weights (their gradients were reduced).
  void release();
  // Sums the copies' gradients into their owners (spRS) and clears them. Collective.
  void reduce_copies();
  // End of a training step's backward: the copies' gradients reach their owners (unless
  // rematerialising reduced them already), every copy is freed, and the step's loads (this
  // rank's rows per expert) join the window, all-reduced over the stage so every rank plans
  // alike. Collective.
  void end_step();
  // This micro-batch's routed rows per expert from this rank (the balance counts).
  void add_load(const std::vector<int64_t>& routed_counts);

  const ExpertRoute& route() const { return route_; }
  const FssdpPlacement& placement() const { return placement_; }
  // The computed experts' weights in route().resident order (materialize() first).
  ExpertWeights weights();

  // Re-sharding: new owners from the window (Alg. 2, hot experts = this iteration's replicated
  // ones); if they differ, moves each moving expert's weights and both moments (moments(p):
  // device pointers to p's m and v) to its new owner and relabels the parameter boxes.
  // Collective. Returns the number of experts that moved.
  using MomentsOf = std::function<std::pair<float*, float*>(const Param&)>;
  int64_t reshard(const MomentsOf& moments);

  // Checkpoint buffers: the owners [E] and the load window [n, D, E] (exact resume; a layout
  // with another group size starts afresh).
  std::map<std::string, std::vector<float>> buffers(const std::string& prefix) const;
  void load_buffers(const std::string& prefix, const std::map<std::string, std::vector<float>>& saved);

  int64_t take_bytes_sent() { return std::exchange(bytes_sent_, 0); }  // spAG + spRS, remote only
  int64_t copies_held() const { return int64_t(copy_of_.size()); }  // this iteration's plan
  // Memory the copies occupy now (weights and gradients): 0 between steps.
  int64_t copy_bytes() const { return int64_t(copies_.bytes() + copy_grads_.bytes()); }
  const std::vector<int>& owners() const { return owner_; }

 private:
  int64_t per_expert() const { return 3 * F_ * H_; }  // fc1 (2F x H) then fc2 (H x F)
  // The all-to-all over the group of per-expert payloads: sends[p] / recvs[p] are the experts
  // (ascending) this rank sends to / receives from rank p, each `width` floats, packed by
  // `pack(e, dst)` and unpacked by `unpack(e, src)`.
  void exchange(const std::vector<std::vector<int64_t>>& sends,
                const std::vector<std::vector<int64_t>>& recvs, int64_t width,
                const std::function<void(int64_t, float*)>& pack,
                const std::function<void(int64_t, const float*)>& unpack);
  void set_route();
  void record_loads();
  size_t slot_of(int64_t e) const;  // the owned slot holding expert e
  std::vector<double> window_mean() const;

  ModelContext& ctx_;
  ParamStore& store_;
  const Communicator* group_;
  int D_ = 1, me_ = 0, EP_ = 1, EDP_ = 1;
  int64_t E_, H_, F_;
  std::vector<int> owner_;              // [E] group rank owning each expert
  std::vector<size_t> fc1_, fc2_;       // this rank's owned slots (parameter indices)
  std::vector<int64_t> slot_expert_;    // expert in each owned slot
  FssdpPlacement placement_;
  ExpertRoute route_;
  std::map<int64_t, int64_t> copy_of_;  // expert -> row of copies_ / copy_grads_
  Tensor copies_, copy_grads_;          // [copies, per_expert]
  bool materialized_ = false;
  Tensor send_, recv_;                  // staging of the exchanges
  std::vector<int> node_of_;            // [D], gathered on first use
  std::vector<int64_t> step_load_;      // [E] this rank's rows this step
  std::deque<std::vector<double>> window_;  // [D * E] per recorded step
  int64_t bytes_sent_ = 0;
};

}  // namespace origami
