#include "optim/adamw.h"

#include <cmath>

#include "base/error.h"

namespace origami {

AdamW::AdamW(Backend& backend, const ParamStore& store, const OptimizerConfig& cfg)
    : be_(backend), cfg_(cfg) {
  m_ = Tensor::zeros(backend, {store.count()});
  v_ = Tensor::zeros(backend, {store.count()});
}

void AdamW::step(ParamStore& store, double lr) {
  ++t_;
  const float* base = store.all_values().data();
  for (auto& p : store.all()) {
    const int64_t off = p.value.data() - base;
    const float wd = p.spec.weight_decay ? float(cfg_.weight_decay) : 0.f;
    be_.adamw(p.value.data(), p.grad.data(), m_.data() + off, v_.data() + off, p.value.numel(),
              float(lr), float(cfg_.beta1), float(cfg_.beta2), float(cfg_.eps), wd, t_);
  }
}

void AdamW::load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps) {
  check(int64_t(m.size()) == m_.numel() && int64_t(v.size()) == v_.numel(),
        "AdamW::load_state: {} / {} moments for {} parameters", m.size(), v.size(), m_.numel());
  be_.copy_from_host(m_.data(), m.data(), m_.bytes());
  be_.copy_from_host(v_.data(), v.data(), v_.bytes());
  t_ = steps;
}

double global_grad_norm(Backend& be, const ParamStore& store, const Communicator& expert_shards) {
  const Tensor dense = store.grads(GradGroup::dense), expert = store.grads(GradGroup::expert);
  double expert2 = be.sum_squares(expert.data(), expert.numel());
  if (expert_shards.size() > 1) expert2 = expert_shards.allreduce_scalar(expert2);
  return std::sqrt(be.sum_squares(dense.data(), dense.numel()) + expert2);
}

double clip_factor(double norm, double clip) {
  if (clip <= 0.0 || norm <= clip || !std::isfinite(norm)) return 1.0;
  return clip / (norm + 1e-6);
}

double clip_gradients(Backend& be, ParamStore& store, double norm, double clip) {
  const double factor = clip_factor(norm, clip);
  if (factor == 1.0) return 1.0;
  Tensor g = store.all_grads();
  be.scale(g.data(), float(factor), g.numel());
  return factor;
}

}  // namespace origami
