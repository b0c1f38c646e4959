// defines: micro_batch_balance_loss(), router_z_loss()
// Auxiliary router losses of one MoE layer on one micro-batch (../shared/reference/algorithms.md):
//   balance (Switch/GShard, Megatron scaling): L = E * sum_i f_i P_i, f_i = c_i / (k N) detached,
//     P_i = mean_t probs[t, i]; 1 at perfect balance.
//   z-loss (ST-MoE): Z = mean_t logsumexp(z_t)^2.
// Each returns the unscaled value and writes the gradient of grad_scale * value into the backend
// buffer given (dprobs [N,E] / dlse [N], overwritten). The global-batch variant (f_i synchronised
// across ranks and micro-batches) arrives with the expert-parallelism issue.
#pragma once
#include <cstdint>

#include "backend/backend.h"

namespace origami {

double micro_batch_balance_loss(Backend& be, const int64_t* counts, const float* probs, int64_t N,
                                int64_t E, int64_t k, float grad_scale, float* dprobs);

double router_z_loss(Backend& be, const float* lse, int64_t N, float grad_scale, float* dlse);

}  // namespace origami
