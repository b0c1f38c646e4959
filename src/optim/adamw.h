// defines: AdamW
// Adam with decoupled weight decay over a ParamStore, every rank holding all moments: fp32
// moments (one flat buffer each, laid out like the parameters), weight decay only where the
// parameter's spec asks for it (not on norms), bias correction by the optimizer step count.
// Gradients are all-reduced whole over their groups; the norm and clipping cover every
// parameter before the update.
#pragma once
#include <cstdint>
#include <vector>

#include "optim/optimizer.h"

namespace origami {

class AdamW final : public Optimizer {
 public:
  // groups: {} for one rank; the store and the groups must outlive this.
  AdamW(Backend& backend, ParamStore& store, const OptimizerConfig& cfg,
        const GradientGroups& groups = {});
  // TP replicas, then dense gradients over groups.dense and expert gradients over groups.expert.
  void reduce_gradients() override;
  double grad_norm() const override;
  double step(double lr, double grad_norm) override;
  int64_t steps() const override { return t_; }
  void gather_state(std::vector<float>& m, std::vector<float>& v) const override;
  void load_state(const std::vector<float>& m, const std::vector<float>& v, int64_t steps) override;
  std::pair<float*, float*> moments_of(const Param& p) override;
  bool shards_moments() const override { return false; }
  std::pair<int64_t, int64_t> held_moments(const Param& p) const override {
    return {0, p.value.numel()};
  }
  void read_moments(const Param& p, int64_t lo, int64_t hi, float* m, float* v) const override;
  void write_moments(const Param& p, int64_t lo, int64_t hi, const float* m, const float* v) override;
  void set_steps(int64_t steps) override { t_ = steps; }

  const Tensor& exp_avg() const { return m_; }
  const Tensor& exp_avg_sq() const { return v_; }

 private:
  Backend& be_;
  ParamStore& store_;
  OptimizerConfig cfg_;
  GradientGroups groups_;
  Tensor m_, v_;
  int64_t t_ = 0;
};

}  // namespace origami
