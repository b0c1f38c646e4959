#include "model/moe_transformer.h"

#include <fmt/format.h>

#include "base/error.h"
#include "base/logging.h"
#include "model/linear.h"

namespace origami {

bool MoeTransformer::is_moe_layer(const Config& cfg, int layer) {
  // Megatron's moe_layer_freq: layer l is MoE when l % freq == 0 (freq 1: every layer).
  return cfg.moe.num_experts > 0 && layer % cfg.moe.layer_freq == 0;
}

MoeTransformer::MoeTransformer(Backend& backend, const Config& config, MicroBatchShape shape,
                               uint64_t seed, ModelGroups groups, bool allocate_parameters)
    : ctx_{backend, config, shape, groups} {
  const auto& m = config.model;
  const int64_t V = m.vocab_size, H = m.hidden_size, N = shape.tokens();
  embedding_ = store_.declare({.name = "embedding.weight", .global_shape = {V, H},
                               .init_std = m.init_std});
  for (int l = 0; l < int(m.num_layers); ++l) {
    bool moe = is_moe_layer(config, l);
    num_moe_layers_ += moe;
    blocks_.push_back(std::make_unique<TransformerBlock>(ctx_, store_, l, moe));
  }
  final_norm_ = store_.declare({.name = "final_norm.weight", .global_shape = {H},
                                .init = InitKind::ones, .weight_decay = false});
  lm_head_ = m.tie_embeddings ? embedding_
                              : store_.declare({.name = "lm_head.weight", .global_shape = {V, H},
                                                .init_std = m.init_std});
  if (!allocate_parameters) return;
  store_.finalize(backend, seed);

  tokens_ = IndexTensor::zeros(backend, {N});
  targets_ = IndexTensor::zeros(backend, {N});
  positions_ = IndexTensor::zeros(backend, {N});
  std::vector<int32_t> pos(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) pos[size_t(i)] = int32_t(i % shape.seq);
  backend.copy_from_host(positions_.data(), pos.data(), pos.size() * sizeof(int32_t));
  for (int l = 0; l <= int(m.num_layers); ++l) residual_.push_back(Tensor::zeros(backend, {N, H}));
  for (Tensor* t : {&normed_, &dnormed_, &dres_a_, &dres_b_}) *t = Tensor::zeros(backend, {N, H});
  rstd_ = Tensor::zeros(backend, {N});
  logits_ = Tensor::zeros(backend, {N, V});
  dlogits_ = Tensor::zeros(backend, {N, V});
  losses_ = Tensor::zeros(backend, {N});
  lse_ = Tensor::zeros(backend, {N});
}

ForwardStats MoeTransformer::forward(const int32_t* tokens, const int32_t* targets,
                                     const RouterLossScales& s) {
  auto& be = ctx_.backend;
  const auto& m = ctx_.config.model;
  const int64_t V = m.vocab_size, H = m.hidden_size, N = ctx_.shape.tokens();
  ForwardStats st;
  for (int64_t i = 0; i < N; ++i) {
    check(tokens[i] >= 0 && tokens[i] < V, "token id {} at position {} is outside the model "
          "vocabulary [0, {}) (model.vocab_size too small for the tokenizer?)", tokens[i], i, V);
    st.loss_tokens += targets[i] >= 0;
  }
  be.copy_from_host(tokens_.data(), tokens, size_t(N) * sizeof(int32_t));
  be.copy_from_host(targets_.data(), targets, size_t(N) * sizeof(int32_t));

  be.embedding_forward(tokens_.data(), store_[embedding_].value.data(), residual_[0].data(), N, H);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    blocks_[l]->forward(residual_[l].data(), residual_[l + 1].data(), positions_.data(), s);
    if (const MoeLayer* moe = blocks_[l]->moe()) {
      st.balance_loss += moe->stats().balance_loss;
      st.z_loss += moe->stats().z_loss;
      st.expert_counts.push_back(moe->stats().expert_counts);
      st.dropped_slots += moe->stats().dropped_slots;
    }
  }
  be.rmsnorm_forward(residual_.back().data(), store_[final_norm_].value.data(), normed_.data(),
                     rstd_.data(), N, H, float(m.norm_eps));
  linear_forward(be, normed_.data(), store_[lm_head_].value.data(), logits_.data(), N, H, V);
  be.cross_entropy_forward(logits_.data(), targets_.data(), losses_.data(), lse_.data(), N, V);
  st.lm_loss_sum = be.sum(losses_.data(), N);
  return st;
}

void MoeTransformer::backward(float lm_grad_scale) {
  auto& be = ctx_.backend;
  const auto& m = ctx_.config.model;
  const int64_t V = m.vocab_size, H = m.hidden_size, N = ctx_.shape.tokens();
  be.cross_entropy_backward(logits_.data(), targets_.data(), lse_.data(), lm_grad_scale,
                            dlogits_.data(), N, V);
  linear_backward(be, dlogits_.data(), normed_.data(), store_[lm_head_].value.data(),
                  dnormed_.data(), store_[lm_head_].grad.data(), N, H, V);
  be.rmsnorm_backward(dnormed_.data(), residual_.back().data(), store_[final_norm_].value.data(),
                      rstd_.data(), dres_a_.data(), store_[final_norm_].grad.data(), N, H);
  // Ping-pong two gradient buffers down the residual stream.
  Tensor* dy = &dres_a_;
  Tensor* dx = &dres_b_;
  for (size_t l = blocks_.size(); l-- > 0;) {
    blocks_[l]->backward(dy->data(), residual_[l].data(), dx->data(), positions_.data());
    std::swap(dy, dx);
  }
  be.embedding_backward(dy->data(), tokens_.data(), store_[embedding_].grad.data(), N, H);
}

void MoeTransformer::set_router_clock(const RouterClock& clock) {
  for (auto& b : blocks_)
    if (MoeLayer* m = b->moe()) m->set_router_clock(clock);
}

bool MoeTransformer::spawn_experts_at(int64_t step) {
  const auto& d = ctx_.config.moe.router.schedule.diversify;
  if (d.steps == 0 || step != d.steps || num_moe_layers_ == 0) return false;
  for (auto& b : blocks_)
    if (MoeLayer* m = b->moe()) m->spawn_experts(d);
  spdlog::info("expert-diversify phase over at iteration {}: {} experts per MoE layer spawned "
               "from expert 0 (mask ratio {}, noise std {})", step, ctx_.config.moe.num_experts,
               d.mask_ratio, d.noise_std);
  return true;
}

void MoeTransformer::update_expert_bias(const std::vector<std::vector<int64_t>>& counts) {
  size_t l = 0;
  for (auto& b : blocks_)
    if (MoeLayer* m = b->moe()) m->router().update_expert_bias(counts.at(l++));
}

std::map<std::string, std::vector<float>> MoeTransformer::buffers() const {
  std::map<std::string, std::vector<float>> out;
  if (!ctx_.config.moe.router.expert_bias) return out;
  for (size_t l = 0; l < blocks_.size(); ++l)
    if (const MoeLayer* m = blocks_[l]->moe())
      out[fmt::format("layers.{}.moe.router.expert_bias", l)] = m->router().expert_bias();
  return out;
}

void MoeTransformer::load_buffers(const std::map<std::string, std::vector<float>>& saved) {
  for (const auto& [name, values] : buffers()) {
    auto it = saved.find(name);
    const size_t l = std::stoul(name.substr(7));  // "layers.L...."
    if (it == saved.end()) {
      spdlog::warn("{}: not in the checkpoint; it starts from zeros", name);
      continue;
    }
    check(it->second.size() == values.size(), "checkpoint buffer '{}' has {} values, the run's "
          "model needs {} (moe.num_experts)", name, it->second.size(), values.size());
    blocks_[l]->moe()->router().set_expert_bias(it->second);
  }
  const auto mine = buffers();
  for (const auto& [name, values] : saved)
    if (!mine.contains(name))
      spdlog::warn("checkpoint buffer '{}' is not used by this run's model (moe.router.expert_bias "
                   "is off?); ignored", name);
}

}  // namespace origami
