// defines: LmHeadLoss, LmHeadGrad
// The LM head and the softmax cross-entropy, fused over chunks of rows (Liger-style): for each
// chunk of training.logits_chunk_tokens rows, logits = x W^T, the loss, and, on a training
// pass, the logits' gradient (in place) and from it dx and dW, before the next chunk reuses the
// buffer. No more than one chunk's [rows, V/TP] logits ever exist, and the gradient costs no
// second LM-head GEMM: the softmax of a whole row is at hand, so it is formed in forward.
// Under tensor parallelism the vocabulary is sharded and each chunk's log-sum-exp and target
// logit are combined over TP (Megatron's vocabulary-parallel cross-entropy).
#pragma once
#include <cstdint>
#include <optional>
#include <span>

#include "model/model_context.h"

namespace origami {

// A training pass: dlogits = scale * (softmax - onehot); dx = dlogits W (overwritten),
// dw += dlogits^T x.
struct LmHeadGrad {
  float scale = 1.f;  // 1 / loss tokens of the global batch
  float* dx = nullptr;  // [rows, H]
  float* dw = nullptr;  // [V/TP, H]
};

class LmHeadLoss {
 public:
  // vocab: this rank's vocabulary rows (V/TP); chunk_rows: rows per chunk (0 = all at once).
  // The rows are the rank's context_tokens().
  LmHeadLoss(ModelContext& ctx, int64_t vocab, int64_t chunk_rows);

  // x [rows, H] (the gathered final-norm output), w [vocab, H]; targets: device [rows] and the
  // same on the host, relative to this rank's shard (-1 = no loss, -2 = in another shard).
  // Returns the sum of the rows' token losses (identical on every TP rank).
  double run(const float* x, const float* w, const int32_t* targets,
             std::span<const int32_t> host_targets, std::optional<LmHeadGrad> grad);

  // The last chunk's logits [chunk_rows, vocab] (their gradient after a training pass): all of
  // the rows' logits when one chunk holds them all (whole_logits()).
  const float* logits() const { return logits_.data(); }
  bool whole_logits() const { return chunk_ == rows_; }
  int64_t chunk_rows() const { return chunk_; }

 private:
  // Vocabulary parallelism: rows [r0, r0+n)'s shard lse and losses -> the global ones; the global
  // lse replaces the shard's (backward needs it). Returns the rows' loss sum.
  double combine_over_tp(int64_t r0, int64_t n, std::span<const int32_t> host_targets);

  ModelContext& ctx_;
  int64_t rows_, vocab_, chunk_;
  Tensor logits_, losses_, lse_;
};

}  // namespace origami
