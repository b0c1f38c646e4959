// defines: Optimizer (the one interface the trainer steps), GradientGroups, clip_factor(),
// make_optimizer()
// A step after backward is the same four calls whatever the optimizer keeps where:
//   reduce_gradients() -> grad_norm() -> step(lr, norm) ; state for checkpoints.
// AdamW (every rank holds all moments) and DistributedOptimizer (ZeRO-1: moments sharded) both
// implement it, so the trainer has no branch on the kind. Parallel dimensions that reduce
// gradients (pipeline parallelism's embedding group next) add their reductions in these calls.
#pragma once
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "backend/backend.h"
#include "comm/communicator.h"
#include "comm/parallel_layout.h"
#include "config/config.h"
#include "model/parameters.h"

namespace origami {

// The groups gradients are reduced and norms summed over; null = this rank alone.
struct GradientGroups {
  const Communicator* dense = nullptr;   // DP x CP: replicas of the dense parameters (summed)
  const Communicator* expert = nullptr;  // EDP: replicas of the expert parameters (summed)
  // TP: TP-replicated gradients are summed over it (spec.tp_replicas "tp"); parameters split
  // over TP add their squares over it in the norm.
  const Communicator* tp = nullptr;
  const Communicator* tp_kv = nullptr;   // the TP ranks sharing a kv head ("tp_kv" replicas)
  // ETP x EP: ranks holding different expert shards, whose squares add up in the norm.
  const Communicator* expert_shards = nullptr;
  // Pipeline stages: each holds different layers, whose squares add up in the norm.
  const Communicator* pp = nullptr;
  // Tied embeddings under pipeline parallelism: the first and last stage ranks at one in-stage
  // position, whose embedding.weight (the last stage's copy is its LM head) sum their gradients
  // before any data-parallel reduction. Null without tied embeddings or with one stage.
  const Communicator* tied_embedding = nullptr;
  // Parameters every stage holds (spec.pipeline_shared) sum their gradients over the stages.
  const Communicator* pipeline_shared = nullptr;

  // fssdp: every expert has one owner, whose gradient spRS already summed: no expert replicas
  // (the expert group is the rank alone) and every rank of the stage holds different experts.
  static GradientGroups from(const ProcessGroups& pg, bool tied_embeddings = false,
                             bool fssdp = false) {
    const bool tied = tied_embeddings && pg.pp && pg.pp->size() > 1;
    return {.dense = pg.dp_cp.get(), .expert = fssdp ? pg.self.get() : pg.edp.get(),
            .tp = pg.tp.get(), .tp_kv = pg.tp_kv.get(),
            .expert_shards = fssdp ? pg.stage.get() : pg.etp_ep.get(), .pp = pg.pp.get(),
            .tied_embedding = tied ? pg.embedding.get() : nullptr,
            .pipeline_shared = pg.pp.get()};
  }
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  // After the step's last backward: every gradient this rank updates from is fully reduced
  // (TP replicas first, then the data-parallel replicas; ZeRO-1 reduces its shard only). The
  // losses were normalised over the global batch, so a sum (not a mean) is the global gradient.
  virtual void reduce_gradients() = 0;
  // The global L2 norm of the reduced gradient, each distinct element counted once (collective
  // over the groups; the same value on every rank).
  virtual double grad_norm() const = 0;
  // Scales the reduced gradients by clip_factor(grad_norm, optimizer.grad_clip), then one AdamW
  // update with learning rate lr; every rank's parameter values are current afterwards.
  // Increments steps() first. Returns the clipping factor applied.
  virtual double step(double lr, double grad_norm) = 0;
  virtual int64_t steps() const = 0;
  // Checkpoints: the moments of every parameter this rank holds, laid out like the store's value
  // buffer (a collective under ZeRO-1, where the shards are gathered), and their inverse.
  virtual void gather_state(std::vector<float>& m, std::vector<float>& v) const = 0;
  virtual void load_state(const std::vector<float>& m, const std::vector<float>& v,
                          int64_t steps) = 0;
  // Device pointers to parameter p's two moments when this rank holds all of them (AdamW; ZeRO-1
  // for a parameter whose gradient group is this rank alone, as FSSDP's owned experts), else
  // {null, null}. What re-sharding moves with the weights.
  virtual std::pair<float*, float*> moments_of(const Param& p) = 0;

  // Checkpoints a range at a time, with no full copy of the state on the host: whether ranks
  // hold shards of the moments (ZeRO-1: each writes its own) rather than all of them (the
  // first replica writes); the flat range [lo, hi) of p's local elements whose moments this
  // rank holds (empty: lo == hi); copies of a sub-range of it out to and in from the host.
  virtual bool shards_moments() const = 0;
  virtual std::pair<int64_t, int64_t> held_moments(const Param& p) const = 0;
  virtual void read_moments(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const = 0;
  virtual void write_moments(const Param& p, int64_t lo, int64_t hi, const float* m,
                             const float* v) = 0;
  virtual void set_steps(int64_t steps) = 0;
};

// The global-norm clipping factor: clip / norm when norm > clip (clip > 0), else 1.
double clip_factor(double norm, double clip);

// optimizer.distributed picks DistributedOptimizer (ZeRO-1 over groups.dense / groups.expert),
// else AdamW. The store and the groups must outlive the optimizer.
std::unique_ptr<Optimizer> make_optimizer(Backend& be, ParamStore& store,
                                          const OptimizerConfig& cfg, const GradientGroups& groups);

}  // namespace origami
