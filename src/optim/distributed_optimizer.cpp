// ZeRO-1 over the two gradient groups. Collectives run bucket by bucket on staging buffers
// allocated once: bucket b of every rank's shard covers shard-local [b*B, (b+1)*B), so each call
// is an equal-count reduce_scatter / allgather and the bucketing never changes which elements are
// summed together. Only the ParamStore's inline accessors are used, so this file needs nothing
// from origami_model at link time.
#include "optim/distributed_optimizer.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "base/error.h"
#include "optim/grad_norm.h"

namespace origami {

namespace {

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

}  // namespace

DistributedOptimizer::DistributedOptimizer(Backend& be, ParamStore& store,
                                           const OptimizerConfig& cfg,
                                           const GradientGroups& groups,
                                           int64_t bucket_elements)
    : be_(be), store_(store), cfg_(cfg), comms_(groups) {
  check(groups.dense && groups.expert,
        "DistributedOptimizer: ZeRO-1 needs the dense and expert gradient groups (got {} / {})",
        groups.dense ? groups.dense->name() : "none", groups.expert ? groups.expert->name() : "none");
  check(bucket_elements > 0,
        "DistributedOptimizer: bucket_elements must be positive (got {})", bucket_elements);
  check(!store.all_values().empty(),
        "DistributedOptimizer: the ParamStore must be finalized before the optimizer is built");
  const float* base = store.all_values().data();

  // Each group's range, from its parameters' positions in the flat buffer (dense first).
  int64_t dense_count = 0;
  for (const auto& p : store.all())
    if (p.spec.grad_group == GradGroup::dense) dense_count += p.value.numel();
  for (int gi = 0; gi < 2; ++gi) {
    const GradGroup g = gi == 0 ? GradGroup::dense : GradGroup::expert;
    GroupState& gs = groups_[size_t(gi)];
    gs.comm = gi == 0 ? groups.dense : groups.expert;
    gs.offset = gi == 0 ? 0 : dense_count;
    for (const auto& p : store.all())
      if (p.spec.grad_group == g) gs.count += p.value.numel();
    const int64_t size = gs.comm->size(), rank = gs.comm->rank();
    gs.capacity = ceil_div(gs.count, size);
    gs.bucket = std::min(bucket_elements, gs.capacity);
    check(gs.bucket * size <= std::numeric_limits<int>::max(),
          "DistributedOptimizer: bucket of {} elements x {} ranks of group '{}' exceeds the "
          "{} elements one MPI call can move; use a smaller bucket_elements",
          gs.bucket, size, gs.comm->name(), std::numeric_limits<int>::max());
    gs.begin = std::min(rank * gs.capacity, gs.count);
    gs.end = std::min((rank + 1) * gs.capacity, gs.count);

    // The parameters (or parts of them) inside this rank's shard.
    for (const auto& p : store.all()) {
      if (p.spec.grad_group != g || p.spec.frozen) continue;  // frozen: never updated
      const int64_t off = p.value.data() - base - gs.offset;  // group-local
      check(off >= 0 && off + p.value.numel() <= gs.count,
            "DistributedOptimizer: parameter '{}' lies outside its gradient group's range",
            p.spec.name);
      const int64_t lo = std::max(off, gs.begin), hi = std::min(off + p.value.numel(), gs.end);
      if (lo >= hi) continue;
      gs.segments.push_back(Segment{.flat = gs.offset + lo, .moment = lo - gs.begin, .n = hi - lo,
                                    .weight_decay = p.spec.weight_decay ? float(cfg.weight_decay) : 0.f});
    }
    gs.m = Tensor::zeros(be, {gs.capacity});
    gs.v = Tensor::zeros(be, {gs.capacity});
  }
  int64_t wide = 0, narrow = 0;
  for (const auto& gs : groups_) {
    if (gs.comm->size() == 1) continue;  // no collective, no staging
    wide = std::max(wide, gs.bucket * gs.comm->size());
    narrow = std::max(narrow, gs.bucket);
  }
  wide_ = Tensor::zeros(be, {wide});
  narrow_ = Tensor::zeros(be, {narrow});
}

std::pair<int64_t, int64_t> DistributedOptimizer::shard_range(GradGroup g) const {
  return {geom(g).begin, geom(g).end};
}

void DistributedOptimizer::pack(const GroupState& gs, const float* flat, int64_t lo, int64_t hi,
                                float* dst) {
  const int64_t valid = std::clamp(gs.count - lo, int64_t{0}, hi - lo);
  if (valid > 0) be_.copy(dst, flat + gs.offset + lo, size_t(valid) * sizeof(float));
  if (valid < hi - lo) be_.fill(dst + valid, 0.f, hi - lo - valid);
}

void DistributedOptimizer::reduce_scatter(const GroupState& gs) {
  const int size = gs.comm->size();
  if (size == 1 || gs.count == 0) return;  // a group of one already holds the reduced gradient
  float* grads = store_.all_grads().data();
  for (int64_t lo = 0; lo < gs.capacity; lo += gs.bucket) {
    const int64_t n = std::min(gs.bucket, gs.capacity - lo);
    for (int q = 0; q < size; ++q)
      pack(gs, grads, q * gs.capacity + lo, q * gs.capacity + lo + n, wide_.data() + q * n);
    gs.comm->reduce_scatter(wide_.data(), narrow_.data(), n, CommDType::f32, ReduceOp::sum);
    const int64_t valid = std::clamp(gs.end - (gs.begin + lo), int64_t{0}, n);
    if (valid > 0)
      be_.copy(grads + gs.offset + gs.begin + lo, narrow_.data(), size_t(valid) * sizeof(float));
  }
}

void DistributedOptimizer::all_gather(const GroupState& gs) {
  const int size = gs.comm->size();
  if (size == 1 || gs.count == 0) return;
  float* values = store_.all_values().data();
  const int64_t mine = gs.comm->rank() * gs.capacity;
  for (int64_t lo = 0; lo < gs.capacity; lo += gs.bucket) {
    const int64_t n = std::min(gs.bucket, gs.capacity - lo);
    pack(gs, values, mine + lo, mine + lo + n, narrow_.data());
    gs.comm->allgather(narrow_.data(), wide_.data(), n, CommDType::f32);
    for (int q = 0; q < size; ++q) {
      const int64_t at = q * gs.capacity + lo;
      const int64_t valid = std::clamp(gs.count - at, int64_t{0}, n);
      if (q != gs.comm->rank() && valid > 0)
        be_.copy(values + gs.offset + at, wide_.data() + q * n, size_t(valid) * sizeof(float));
    }
  }
}

void DistributedOptimizer::reduce_scatter_gradients() {
  for (const auto& gs : groups_) reduce_scatter(gs);
}

double DistributedOptimizer::shard_sum_squares(GradGroup g) const {
  const GroupState& gs = geom(g);
  if (gs.end <= gs.begin) return 0.0;
  return be_.sum_squares(store_.all_grads().data() + gs.offset + gs.begin, gs.end - gs.begin);
}

double DistributedOptimizer::shard_sum_squares(GradGroup g, int64_t begin, int64_t end) const {
  const GroupState& gs = geom(g);
  const int64_t lo = std::max(begin, gs.begin), hi = std::min(end, gs.end);
  if (hi <= lo) return 0.0;
  return be_.sum_squares(store_.all_grads().data() + gs.offset + lo, hi - lo);
}

void DistributedOptimizer::reduce_gradients() {
  reduce_replica_gradients(store_, comms_);
  reduce_scatter_gradients();
}

// Each rank holds the reduced gradient of its shard only. Dense shards partition the dense
// gradient over DP x CP (sum there, then weigh TP as AdamW does), expert shards the expert
// gradient over EDP; different experts (ETP x EP) add their squares.
double DistributedOptimizer::grad_norm() const {
  const double dense2 = dense_norm_squared(store_, comms_, [&](int64_t b, int64_t e) {
    return comms_.dense->allreduce_scalar(shard_sum_squares(GradGroup::dense, b, e));
  });
  const double expert2 = expert_norm_squared(
      comms_.expert->allreduce_scalar(shard_sum_squares(GradGroup::expert)), comms_);
  return global_norm(dense2, expert2, comms_);
}

double DistributedOptimizer::step(double lr, double grad_norm) {
  const double factor = clip_factor(grad_norm, cfg_.grad_clip);
  update_shards(lr, factor);
  return factor;
}

void DistributedOptimizer::update_shards(double lr, double grad_scale) {
  ++t_;
  float* values = store_.all_values().data();
  float* grads = store_.all_grads().data();
  for (auto& gs : groups_) {
    if (grad_scale != 1.0 && gs.end > gs.begin)
      be_.scale(grads + gs.offset + gs.begin, float(grad_scale), gs.end - gs.begin);
    for (const Segment& s : gs.segments)
      be_.adamw(values + s.flat, grads + s.flat, gs.m.data() + s.moment, gs.v.data() + s.moment,
                s.n, float(lr), float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps),
                s.weight_decay, t_);
    all_gather(gs);
  }
}

std::pair<float*, float*> DistributedOptimizer::moments_of(const Param& p) {
  GroupState& gs = state(p.spec.grad_group);
  const int64_t off = p.value.data() - store_.all_values().data() - gs.offset;  // group-local
  if (off < gs.begin || off + p.value.numel() > gs.end) return {nullptr, nullptr};
  return {gs.m.data() + (off - gs.begin), gs.v.data() + (off - gs.begin)};
}

std::pair<int64_t, int64_t> DistributedOptimizer::held_moments(const Param& p) const {
  const GroupState& gs = geom(p.spec.grad_group);
  const int64_t off = p.value.data() - store_.all_values().data() - gs.offset;  // group-local
  const int64_t lo = std::max(off, gs.begin), hi = std::min(off + p.value.numel(), gs.end);
  return lo < hi ? std::pair{lo - off, hi - off} : std::pair{int64_t{0}, int64_t{0}};
}

void DistributedOptimizer::read_moments(const Param& p, int64_t lo, int64_t hi, float* m,
                                        float* v) const {
  const GroupState& gs = geom(p.spec.grad_group);
  const int64_t at = p.value.data() - store_.all_values().data() - gs.offset + lo - gs.begin;
  check(lo >= held_moments(p).first && hi <= held_moments(p).second,
        "ZeRO-1: moments [{}, {}) of '{}' are not this rank's", lo, hi, p.spec.name);
  be_.copy_to_host(m, gs.m.data() + at, size_t(hi - lo) * sizeof(float));
  be_.copy_to_host(v, gs.v.data() + at, size_t(hi - lo) * sizeof(float));
}

void DistributedOptimizer::write_moments(const Param& p, int64_t lo, int64_t hi, const float* m,
                                         const float* v) {
  GroupState& gs = state(p.spec.grad_group);
  const int64_t at = p.value.data() - store_.all_values().data() - gs.offset + lo - gs.begin;
  check(lo >= held_moments(p).first && hi <= held_moments(p).second,
        "ZeRO-1: moments [{}, {}) of '{}' are not this rank's", lo, hi, p.spec.name);
  be_.copy_from_host(gs.m.data() + at, m, size_t(hi - lo) * sizeof(float));
  be_.copy_from_host(gs.v.data() + at, v, size_t(hi - lo) * sizeof(float));
}

void DistributedOptimizer::gather_moments(std::vector<float>& m, std::vector<float>& v) const {
  m.assign(size_t(store_.count()), 0.f);
  v.assign(size_t(store_.count()), 0.f);
  for (const GroupState& gs : groups_) {
    if (gs.count == 0) continue;
    const int size = gs.comm->size();
    std::vector<float> shard(size_t(gs.capacity)), all(size_t(gs.capacity * size));
    for (auto [src, dst] : {std::pair{&gs.m, &m}, std::pair{&gs.v, &v}}) {
      be_.copy_to_host(shard.data(), src->data(), shard.size() * sizeof(float));
      gs.comm->allgather(shard.data(), all.data(), gs.capacity, CommDType::f32);
      std::copy(all.begin(), all.begin() + gs.count, dst->begin() + gs.offset);
    }
  }
}

void DistributedOptimizer::load_moments(const std::vector<float>& m, const std::vector<float>& v,
                                        int64_t steps) {
  check(int64_t(m.size()) == store_.count() && int64_t(v.size()) == store_.count(),
        "DistributedOptimizer::load_moments: {} / {} moments for {} parameters", m.size(),
        v.size(), store_.count());
  for (GroupState& gs : groups_) {
    const int64_t n = gs.end - gs.begin;
    if (n <= 0) continue;
    be_.copy_from_host(gs.m.data(), m.data() + gs.offset + gs.begin, size_t(n) * sizeof(float));
    be_.copy_from_host(gs.v.data(), v.data() + gs.offset + gs.begin, size_t(n) * sizeof(float));
  }
  t_ = steps;
}

}  // namespace origami
