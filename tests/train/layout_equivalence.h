// defines: expect_same_gradients(), LayoutCheck, expect_layout_matches(), expect_zero1_matches()
// The layout-equivalence oracle of the multi-rank training tests: a parallel run and a 1-rank
// run of the same model agree. expect_same_gradients maps every local gradient element of the
// parallel run to its global index through the parameter's shard spec and compares it with the
// 1-rank run's; expect_layout_matches adds the losses of every step (and the model's buffers);
// expect_zero1_matches does the same for a run with the distributed optimizer (ZeRO-1). The
// expert-parallel and tensor/context-parallel tests call these with their own layout tables.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "model/parameters.h"
#include "train/trainer.h"

namespace origami {

// zero_ok: parameters without gradient are expected (the diversify phase trains expert 0 alone).
// rtol: 1e-5 for a first step (fp32 sums in another order); later steps add the parameters'
// fp32 drift through the optimizer and need more.
inline void expect_same_gradients(const ParamStore& par, const ParamStore& ref, const std::string& name,
                           bool zero_ok = false, float rtol = 1e-5f) {
  for (const Param& p : par.all()) {
    const Param& r = ref.find(p.spec.name);
    ASSERT_EQ(r.spec.global_shape, p.spec.global_shape) << p.spec.name;
    float max_abs = 0.f;
    for (int64_t i = 0; i < r.grad.numel(); ++i) max_abs = std::max(max_abs, std::abs(r.grad.data()[i]));
    if (!zero_ok) ASSERT_GT(max_abs, 0.f) << p.spec.name << " has no gradient in the reference";
    int bad = 0;
    for (int64_t i = 0; i < p.grad.numel() && bad < 3; ++i) {
      const float a = p.grad.data()[i], b = r.grad.data()[p.spec.global_index(i)];
      // fp32 sums in another order: ~1e-6 of the tensor's scale.
      if (std::abs(a - b) > rtol * max_abs + rtol * std::abs(b)) {
        ++bad;
        ADD_FAILURE() << name << ": " << p.spec.name << " local " << i << ": " << a << " vs 1-rank "
                      << b;
      }
    }
  }
}

// The parallel sizes of a layout-table row (sequence parallelism whenever TP > 1, as the
// equivalence tests run it).
inline void set_parallel(Config& c, int tp, int cp, int pp, int ep, int etp) {
  c.parallel.tensor = tp;
  c.parallel.sequence_parallel = tp > 1;
  c.parallel.context = cp;
  c.parallel.pipeline = pp;
  c.parallel.expert = ep;
  c.parallel.expert_tensor = etp;
}

struct LayoutCheck {
  bool zero_ok = false;       // parameters may have no gradient (see expect_same_gradients)
  bool same_buffers = false;  // the model's buffers (the expert bias) must match bit for bit
};

// par_cfg on `world` against ref_cfg on `solo` (this rank alone): the first step's gradients,
// then every step's LM loss over training.train_steps within 1e-5 relative.
inline void expect_layout_matches(const Config& par_cfg, const Config& ref_cfg,
                                  const Communicator& world, const Communicator& solo,
                                  const std::string& label, LayoutCheck check = {}) {
  SCOPED_TRACE(label);
  validate(par_cfg, world.size());
  Trainer par(par_cfg, world), ref(ref_cfg, solo);
  std::vector<double> par_losses{par.train_step().lm_loss}, ref_losses{ref.train_step().lm_loss};
  expect_same_gradients(par.model().params(), ref.model().params(), label, check.zero_ok);
  for (int s = 1; s < par_cfg.training.train_steps; ++s) {
    par_losses.push_back(par.train_step().lm_loss);
    ref_losses.push_back(ref.train_step().lm_loss);
  }
  for (size_t i = 0; i < ref_losses.size(); ++i)
    EXPECT_NEAR(par_losses[i], ref_losses[i], 1e-5 * ref_losses[i]) << "step " << i + 1;
  if (check.same_buffers)
    EXPECT_EQ(par.model().buffers(), ref.model().buffers());  // the expert bias, bit for bit
}

// The same pair with the distributed optimizer (ZeRO-1) on the parallel side: `steps` steps'
// LM losses and gradient norms. Run directories get a "-zero" suffix.
inline void expect_zero1_matches(Config par_cfg, Config ref_cfg, const Communicator& world,
                                 const Communicator& solo, const std::string& label, int steps) {
  SCOPED_TRACE(label);
  par_cfg.optimizer.distributed = true;
  par_cfg.logging.dir += "-zero";
  ref_cfg.logging.dir += "-zero";
  Trainer par(par_cfg, world), ref(ref_cfg, solo);
  for (int s = 0; s < steps; ++s) {
    const StepResult a = par.train_step(), b = ref.train_step();
    EXPECT_NEAR(a.lm_loss, b.lm_loss, 1e-5 * b.lm_loss) << "step " << s + 1;
    // Squares summed over ranks in another order, after fp32 drift: measured <= 3e-7 (2-8 ranks).
    EXPECT_NEAR(a.grad_norm, b.grad_norm, 1e-4 * b.grad_norm) << "step " << s + 1;
  }
}

}  // namespace origami
