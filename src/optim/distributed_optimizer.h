// defines: DistributedOptimizer (ZeRO-1: AdamW with optimizer state sharded over the gradient groups)
// Each gradient group's flat range (ParamStore: dense, then expert) is cut into group.size()
// equal contiguous shards (the last one padded; padding never reaches a parameter). Gradients are
// reduce-scattered so each rank holds the reduced gradient of its shard only, AdamW updates that
// shard with moments that exist only for it (~1/size of AdamW's memory), and an all-gather
// makes every rank's full value buffer current again. Same result as all-reduce + AdamW.
#pragma once
#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "optim/optimizer.h"

namespace origami {

class DistributedOptimizer final : public Optimizer {
 public:
  // groups.dense / groups.expert (required): the communicators each gradient range is
  // reduce-scattered over (they may be the same object); the TP and expert-shard groups enter
  // the replica reduction and the norm as for AdamW. The store must be finalized; it and the
  // groups must outlive this. bucket_elements bounds the elements each rank receives per
  // collective call: one pair of staging buffers, shared by both groups, holds the widest
  // group's size x bucket and one bucket (allocated here once; estimate_memory counts them).
  static constexpr int64_t kDefaultBucketElements = 1 << 20;
  DistributedOptimizer(Backend& be, ParamStore& store, const OptimizerConfig& cfg,
                       const GradientGroups& groups,
                       int64_t bucket_elements = kDefaultBucketElements);

  // Optimizer: TP replicas, then reduce_scatter_gradients(); the norm from the shards; clip
  // and update_shards(); the moments gathered / scattered for checkpoints.
  void reduce_gradients() override;
  double grad_norm() const override;
  double step(double lr, double grad_norm) override;
  int64_t steps() const override { return t_; }
  void gather_state(std::vector<float>& m, std::vector<float>& v) const override {
    gather_moments(m, v);
  }
  void load_state(const std::vector<float>& m, const std::vector<float>& v,
                  int64_t steps) override {
    load_moments(m, v, steps);
  }
  std::pair<float*, float*> moments_of(const Param& p) override;
  bool shards_moments() const override { return true; }
  std::pair<int64_t, int64_t> held_moments(const Param& p) const override;
  void read_moments(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const override;
  void write_moments(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) override;
  void set_steps(int64_t steps) override { t_ = steps; }

  // Reduce-scatter (sum) the local gradients of each group, bucket by bucket, so that this rank's
  // shard of the store's gradient buffer holds the fully reduced gradient. The rest of the
  // gradient buffer keeps this rank's unreduced gradients and is not read again. Call once per
  // step after backward.
  void reduce_scatter_gradients();
  // Sum of squares (fp64) of this rank's reduced gradient shard of group g. The global squared
  // norm is the sum over the group's ranks (allreduce over that group) of both groups' values.
  double shard_sum_squares(GradGroup g) const;
  // The same restricted to the group-relative flat range [begin, end) (tensor parallelism
  // weighs the TP-replicated ranges differently).
  double shard_sum_squares(GradGroup g, int64_t begin, int64_t end) const;
  // One AdamW update of this rank's shards: the shard gradients are first multiplied by
  // grad_scale (the clipping factor), weight decay only on parameters whose spec asks for it;
  // then all-gathers the updated shards into every rank's value buffer. Increments steps() first.
  void update_shards(double lr, double grad_scale);

  // This rank's [begin, end) within group g's flat range (end - begin may be 0 on the last ranks
  // of a group with fewer elements than ranks). Moments are indexed from begin.
  std::pair<int64_t, int64_t> shard_range(GradGroup g) const;
  // Padded shard length of group g: ceil(count / group size), the same on every rank.
  int64_t shard_capacity(GradGroup g) const { return geom(g).capacity; }
  // Checkpoints: the moments of every parameter this rank holds, laid out like the store's value
  // buffer (a collective over each group: the shards are all-gathered), and their inverse.
  void gather_moments(std::vector<float>& m, std::vector<float>& v) const;
  void load_moments(const std::vector<float>& m, const std::vector<float>& v, int64_t steps);
  // This rank's moments of group g, shard_capacity(g) elements.
  Tensor& exp_avg(GradGroup g) { return state(g).m; }
  Tensor& exp_avg_sq(GradGroup g) { return state(g).v; }

 private:
  // The overlap of one parameter with this rank's shard.
  struct Segment {
    int64_t flat = 0;    // offset in the store's flat buffers
    int64_t moment = 0;  // offset in the shard's moments
    int64_t n = 0;
    float weight_decay = 0.f;
  };
  struct GroupState {
    const Communicator* comm = nullptr;
    int64_t offset = 0, count = 0;  // the group's range in the flat buffers
    int64_t capacity = 0;           // padded shard length
    int64_t bucket = 0;             // elements per rank per collective (<= capacity)
    int64_t begin = 0, end = 0;     // this rank's shard, group-local
    std::vector<Segment> segments;
    Tensor m, v;
  };

  const GroupState& geom(GradGroup g) const { return groups_[g == GradGroup::dense ? 0 : 1]; }
  GroupState& state(GradGroup g) { return groups_[g == GradGroup::dense ? 0 : 1]; }
  // Copies group-local [lo, hi) of `flat` (a full store buffer) into dst, zero beyond count.
  void pack(const GroupState& gs, const float* flat, int64_t lo, int64_t hi, float* dst);
  void reduce_scatter(const GroupState& gs);
  void all_gather(const GroupState& gs);

  Backend& be_;
  ParamStore& store_;
  OptimizerConfig cfg_;
  GradientGroups comms_;
  std::array<GroupState, 2> groups_;  // dense, expert
  Tensor wide_, narrow_;              // staging: size x bucket and bucket floats
  int64_t t_ = 0;
};

}  // namespace origami
