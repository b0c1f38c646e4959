// AdamW (adamw.h): whole-buffer all-reduce, norm over every parameter, clip, per-parameter
// update through the backend's fused adamw op.
#include "optim/adamw.h"

#include <cmath>

#include "base/error.h"
#include "optim/grad_norm.h"

namespace origami {

AdamW::AdamW(Backend& backend, ParamStore& store, const OptimizerConfig& cfg,
             const GradientGroups& groups)
    : be_(backend), store_(store), cfg_(cfg), groups_(groups) {
  m_ = Tensor::zeros(backend, {store.count()});
  v_ = Tensor::zeros(backend, {store.count()});
}

void AdamW::reduce_gradients() {
  reduce_replica_gradients(store_, groups_);
  for (auto [g, comm] : {std::pair{GradGroup::dense, groups_.dense},
                         std::pair{GradGroup::expert, groups_.expert}}) {
    Tensor grads = store_.grads(g);
    if (comm && comm->size() > 1 && grads.numel() > 0)
      comm->allreduce(grads.data(), grads.data(), grads.numel(), CommDType::f32, ReduceOp::sum);
  }
}

double AdamW::grad_norm() const {
  const float* dense = store_.grads(GradGroup::dense).data();
  const double dense2 = dense_norm_squared(store_, groups_, [&](int64_t b, int64_t e) {
    return e > b ? be_.sum_squares(dense + b, e - b) : 0.0;
  });
  const Tensor expert = store_.grads(GradGroup::expert);
  const double expert2 = expert_norm_squared(be_.sum_squares(expert.data(), expert.numel()), groups_);
  return global_norm(dense2, expert2, groups_);
}

double AdamW::step(double lr, double grad_norm) {
  const double factor = clip_factor(grad_norm, cfg_.grad_clip);
  if (factor != 1.0) {
    Tensor g = store_.all_grads();
    be_.scale(g.data(), float(factor), g.numel());
  }
  ++t_;
  const float* base = store_.all_values().data();
  for (auto& p : store_.all()) {
    if (p.spec.frozen) continue;  // as initialised: no update, no weight decay
    const int64_t off = p.value.data() - base;
    const float wd = p.spec.weight_decay ? float(cfg_.weight_decay) : 0.f;
    be_.adamw(p.value.data(), p.grad.data(), m_.data() + off, v_.data() + off, p.value.numel(),
              float(lr), float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps), wd, t_);
  }
  return factor;
}

void AdamW::gather_state(std::vector<float>& m, std::vector<float>& v) const {
  m.resize(size_t(m_.numel()));
  v.resize(size_t(v_.numel()));
  be_.copy_to_host(m.data(), m_.data(), m_.bytes());
  be_.copy_to_host(v.data(), v_.data(), v_.bytes());
}

std::pair<float*, float*> AdamW::moments_of(const Param& p) {
  const int64_t off = p.value.data() - store_.all_values().data();
  return {m_.data() + off, v_.data() + off};
}

void AdamW::read_moments(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const {
  const int64_t off = p.value.data() - store_.all_values().data() + lo;
  be_.copy_to_host(m, m_.data() + off, size_t(hi - lo) * sizeof(float));
  be_.copy_to_host(v, v_.data() + off, size_t(hi - lo) * sizeof(float));
}

void AdamW::write_moments(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) {
  const int64_t off = p.value.data() - store_.all_values().data() + lo;
  be_.copy_from_host(m_.data() + off, m, size_t(hi - lo) * sizeof(float));
  be_.copy_from_host(v_.data() + off, v, size_t(hi - lo) * sizeof(float));
}

void AdamW::load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps) {
  check(int64_t(m.size()) == m_.numel() && int64_t(v.size()) == v_.numel(),
        "AdamW::load_state: {} / {} moments for {} parameters", m.size(), v.size(), m_.numel());
  be_.copy_from_host(m_.data(), m.data(), m_.bytes());
  be_.copy_from_host(v_.data(), v.data(), v_.bytes());
  t_ = steps;
}

}  // namespace origami
