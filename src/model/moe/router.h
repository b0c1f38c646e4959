// defines: Router (linear gate, softmax scores, top-k, gate weights)
// Logits = x W_r^T in fp32 always; the backend's fused router op yields probabilities, the top-k
// experts of each token, their (optionally renormalised) weights and the logits' log-sum-exp
// (for z-loss). Backward takes the gradients of all three outputs.
#pragma once
#include <string>

#include "model/model_context.h"
#include "model/parameters.h"

namespace origami {

class Router {
 public:
  Router(ModelContext& ctx, ParamStore& store, const std::string& prefix);
  void forward(const float* x);
  // dprobs / dlse may be null. dx is accumulated into.
  void backward(const float* dweights, const float* dprobs, const float* dlse, const float* x,
                float* dx);

  const float* probs() const { return probs_.data(); }
  const int32_t* experts() const { return idx_.data(); }   // [N, k]
  const float* weights() const { return weights_.data(); } // [N, k]
  const float* lse() const { return lse_.data(); }         // [N]

 private:
  ModelContext& ctx_;
  ParamStore& store_;
  size_t weight_;
  int64_t H_, E_, k_;
  Tensor logits_, probs_, weights_, lse_, dlogits_;
  IndexTensor idx_;
};

}  // namespace origami
