// ParamStore: declaration, the flat value / gradient buffers (dense: tp, tp_kv, rest; then
// expert) and initialisation from the counter-based RNG by global index.
#include "model/parameters.h"

#include "base/error.h"
#include "base/rng.h"

namespace origami {

size_t ParamStore::declare(ParamSpec spec) {
  check(values_.empty(), "ParamStore: parameter '{}' declared after finalize()", spec.name);
  if (spec.local_shape.empty()) spec.local_shape = spec.global_shape;
  // One name may have several boxes on a rank (FSSDP's owned experts), never the same box twice.
  for (auto& p : params_) {
    if (p.spec.name != spec.name) continue;
    bool same_box = p.spec.global_shape == spec.global_shape;
    for (size_t d = 0; same_box && d < spec.global_shape.size(); ++d)
      same_box = p.spec.shard.offset_along(int(d)) == spec.shard.offset_along(int(d));
    check(!same_box && p.spec.global_shape == spec.global_shape,
          "ParamStore: parameter '{}' declared twice", spec.name);
  }
  params_.push_back(Param{std::move(spec), {}, {}});
  return params_.size() - 1;
}

size_t ParamStore::index_of(const std::string& name) const {
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].spec.name == name) return i;
  return npos;
}

void init_param_values(const ParamSpec& spec, uint64_t seed, std::vector<float>& local) {
  const auto& gs = spec.global_shape;
  const auto& ls = spec.local_shape.empty() ? gs : spec.local_shape;  // unsplit when not given
  const int64_t n = numel_of(ls);
  local.assign(size_t(n), 0.f);
  if (spec.init == InitKind::ones) std::fill(local.begin(), local.end(), 1.f);
  if (spec.init != InitKind::normal) return;
  // Each local element draws the number of its global index, so any shard draws the same.
  // Counter-based draws: elements are independent, so the loop is parallel and still exact.
  const Rng rng(seed, hash_name(spec.name));
  float* out = local.data();
  const int64_t row = gs.empty() ? 1 : numel_of(gs) / gs[0];
  const auto drawn = [&](int64_t g) {  // the global index whose number element g draws
    if (spec.tile_period <= 0 || g / row < spec.tile_from) return g;
    return ((g / row - spec.tile_from) % spec.tile_period) * row + g % row;
  };
#pragma omp parallel for schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i)
    out[i] = float(spec.init_std * rng.normal(uint64_t(drawn(spec.global_index(i)))));
}

void ParamStore::finalize(Backend& backend, uint64_t seed, DType compute_dtype) {
  dense_count_ = expert_count_ = tp_count_ = tp_kv_count_ = 0;
  for (auto& p : params_) {
    const int64_t n = numel_of(p.spec.local_shape);
    (p.spec.grad_group == GradGroup::dense ? dense_count_ : expert_count_) += n;
    if (p.spec.grad_group != GradGroup::dense) continue;
    if (p.spec.tp_replicas == "tp") tp_count_ += n;
    else if (p.spec.tp_replicas == "tp_kv") tp_kv_count_ += n;
    else check(p.spec.tp_replicas.empty(), "ParamStore: parameter '{}' has tp_replicas '{}'; "
               "allowed: \"\", tp, tp_kv", p.spec.name, p.spec.tp_replicas);
  }
  values_ = Tensor::zeros(backend, {dense_count_ + expert_count_});
  grads_ = Tensor::zeros(backend, {dense_count_ + expert_count_});
  // bf16: the copy the model computes with, rounded from the fp32 masters by refresh_compute();
  // fp32, or a backend that stores every buffer in fp32 (cuda today: its GEMMs keep their own
  // bf16 weight copies), the masters themselves.
  compute_ = backend.storage_for(compute_dtype) == DType::f32
                 ? values_
                 : Tensor::zeros(backend, {dense_count_ + expert_count_}, compute_dtype);
  // Dense range: TP-replicated first, then kv-replicated, then the rest (one reduction each).
  int64_t tp_off = 0, kv_off = tp_count_, dense_off = tp_count_ + tp_kv_count_,
          expert_off = dense_count_;
  std::vector<float> host;
  for (auto& p : params_) {
    int64_t& off = p.spec.grad_group == GradGroup::expert ? expert_off
                   : p.spec.tp_replicas == "tp"           ? tp_off
                   : p.spec.tp_replicas == "tp_kv"        ? kv_off
                                                          : dense_off;
    p.value = values_.view(off, p.spec.local_shape);
    p.grad = grads_.view(off, p.spec.local_shape);
    p.compute = compute_.view(off, p.spec.local_shape);
    off += p.value.numel();
    init_param_values(p.spec, seed, host);
    backend.copy_from_host(p.value.data(), host.data(), p.value.bytes());
  }
  refresh_compute(backend);
}

void ParamStore::refresh_compute(Backend& backend) const {
  if (compute_.data() != values_.data()) backend.convert(values_.data(), compute_.data(), count());
}

const Param& ParamStore::find(const std::string& name) const {
  for (auto& p : params_)
    if (p.spec.name == name) return p;
  fail("no parameter named '{}'", name);
}

Tensor ParamStore::values(GradGroup g) const {
  return g == GradGroup::dense ? values_.view(0, {dense_count_})
                               : values_.view(dense_count_, {expert_count_});
}

Tensor ParamStore::grads(GradGroup g) const {
  return g == GradGroup::dense ? grads_.view(0, {dense_count_})
                               : grads_.view(dense_count_, {expert_count_});
}

int64_t ParamStore::count(GradGroup g) const {
  return g == GradGroup::dense ? dense_count_ : expert_count_;
}

Tensor ParamStore::replica_grads(const std::string& group) const {
  if (group == "tp") return grads_.view(0, {tp_count_});
  if (group == "tp_kv") return grads_.view(tp_count_, {tp_kv_count_});
  fail("ParamStore: no replica group '{}' (allowed: tp, tp_kv)", group);
}

Tensor ParamStore::replica_values(const std::string& group) const {
  if (group == "tp") return values_.view(0, {tp_count_});
  if (group == "tp_kv") return values_.view(tp_count_, {tp_kv_count_});
  fail("ParamStore: no replica group '{}' (allowed: tp, tp_kv)", group);
}

}  // namespace origami
