// LmHeadLoss: logits, cross-entropy and (training) the logits' gradient, dx and dW per row
// chunk, with the vocabulary-parallel combine per chunk under TP.
#include "model/lm_head_loss.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "model/linear.h"

namespace origami {

LmHeadLoss::LmHeadLoss(ModelContext& ctx, int64_t vocab, int64_t chunk_rows)
    : ctx_(ctx),
      rows_(ctx.context_tokens()),
      vocab_(vocab),
      chunk_(chunk_rows > 0 ? std::min(chunk_rows, rows_) : rows_) {
  logits_ = ctx.activation_buffer({chunk_, vocab_});  // the CE reads them in fp32
  losses_ = Tensor::zeros(ctx.backend, {rows_});
  lse_ = Tensor::zeros(ctx.backend, {rows_});
}

double LmHeadLoss::run(const float* x, const float* w, const int32_t* targets,
                       std::span<const int32_t> host_targets, std::optional<LmHeadGrad> grad) {
  auto& be = ctx_.backend;
  const int64_t H = ctx_.config.model.hidden_size;
  double total = 0.0;
  for (int64_t r0 = 0; r0 < rows_; r0 += chunk_) {
    const int64_t n = std::min(chunk_, rows_ - r0);
    const float* xc = x + r0 * H;
    float* logits = logits_.data();
    linear_forward(be, xc, w, logits, n, H, vocab_);
    be.cross_entropy_forward(logits, targets + r0, losses_.data() + r0, lse_.data() + r0, n,
                             vocab_);
    // Vocabulary parallelism needs the global lse before the gradient; with the whole
    // vocabulary here the losses are summed once at the end (one device sync, not one a chunk).
    if (ctx_.tp_size() > 1) total += combine_over_tp(r0, n, host_targets);
    if (!grad) continue;
    // In place: each gradient element depends only on its own logit, which is not needed
    // afterwards.
    be.cross_entropy_backward(logits, targets + r0, lse_.data() + r0, grad->scale, logits, n,
                              vocab_);
    linear_backward(be, logits, xc, w, grad->dx + r0 * H, grad->dw, n, H, vocab_);
  }
  return ctx_.tp_size() > 1 ? total : be.sum(losses_.data(), rows_);
}

// Vocabulary-parallel cross-entropy (Megatron): from each shard's log-sum-exp and, on the shard
// holding it, the target's logit, the global lse = max + log sum exp(lse_shard - max) and the
// loss lse - logit[target]: an all-reduce (max) of n values and one (sum) of 2n over TP, no
// rank ever holding more than its [n, V/TP] logits.
double LmHeadLoss::combine_over_tp(int64_t r0, int64_t n, std::span<const int32_t> host_targets) {
  auto& be = ctx_.backend;
  std::vector<float> lse(static_cast<size_t>(n)), loss(static_cast<size_t>(n));
  be.copy_to_host(lse.data(), lse_.data() + r0, lse.size() * sizeof(float));
  be.copy_to_host(loss.data(), losses_.data() + r0, loss.size() * sizeof(float));
  const size_t m = size_t(n);
  std::vector<double> mx(lse.begin(), lse.end());
  const Communicator& tp = *ctx_.groups.tp;
  tp.allreduce(std::span<double>(mx), ReduceOp::max);
  // [0, n): sum of exp(lse_shard - max); [n, 2n): the target's logit (0 off its shard).
  std::vector<double> sums(2 * m, 0.0);
  for (size_t i = 0; i < m; ++i) {
    sums[i] = std::exp(double(lse[i]) - mx[i]);
    // The shard's loss is lse_shard - logit[target] where it holds the target.
    if (host_targets[size_t(r0) + i] >= 0) sums[m + i] = double(lse[i]) - double(loss[i]);
  }
  tp.allreduce(std::span<double>(sums));
  double total = 0.0;
  for (size_t i = 0; i < m; ++i) {
    const double l = mx[i] + std::log(sums[i]);
    lse[i] = float(l);
    if (host_targets[size_t(r0) + i] != -1) total += l - sums[m + i];
  }
  be.copy_from_host(lse_.data() + r0, lse.data(), lse.size() * sizeof(float));
  return total;
}

}  // namespace origami
