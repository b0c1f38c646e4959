// Router: the fp32 gate GEMM, the fused default router op or the generalised gate, the
// expert-bias update; backward into the router weight and the layer input.
#include "model/moe/router.h"

#include "base/error.h"
#include "model/linear.h"

namespace origami {

Router::Router(ModelContext& ctx, ParamStore& store, const std::string& prefix)
    : ctx_(ctx), store_(store), prefix_(prefix),
      score_(parse_router_score(ctx.config.moe.router.score)),
      kinds_(ExpertKinds::of(ctx.config.moe)) {
  const auto& moe = ctx.config.moe;
  H_ = ctx.config.model.hidden_size;
  E_ = kinds_.routed();
  slots_ = router_slots(moe);
  const auto& r = moe.router;
  recurrent_ = r.kind == "recurrent";
  const int64_t D = r.recurrent_dim;
  const std::string tp = ctx.tp_size() > 1 ? "tp" : "";
  if (recurrent_) {  // u = W_in x, to the GRU's dimension
    input_ = store.declare({.name = prefix + ".input.weight", .global_shape = {D, H_},
                            .init_std = ctx.config.model.init_std, .tp_replicas = tp});
    gru_ = std::make_unique<RouterGru>(ctx, store, D);
  }
  // The model's first MoE layer (layer 0: is_moe_layer) has no previous logits to add.
  if (r.gating_residual && prefix != "layers.0.moe.router")
    residual_ = store.declare({.name = prefix + ".residual.weight", .global_shape = {E_, E_},
                               .init_std = ctx.config.model.init_std, .tp_replicas = tp});
  // AdaMoE initialises the null experts' rows by tiling the true experts' rows.
  weight_ = store.declare({.name = prefix + ".weight",
                           .global_shape = {E_, recurrent_ ? D : H_},
                           .init_std = ctx.config.model.init_std,
                           .tp_replicas = ctx.tp_size() > 1 ? "tp" : "",
                           .frozen = moe.router.freeze,
                           .tile_from = kinds_.null > 0 ? kinds_.null_begin() : 0,
                           .tile_period = kinds_.null > 0 ? kinds_.ffn : 0});
  const int64_t N = ctx.local_tokens();
  auto& be = ctx.backend;
  logits_ = Tensor::zeros(be, {N, E_});
  probs_ = Tensor::zeros(be, {N, E_});
  weights_ = Tensor::zeros(be, {N, slots_});
  lse_ = Tensor::zeros(be, {N});
  dlogits_ = Tensor::zeros(be, {N, E_});
  idx_ = IndexTensor::zeros(be, {N, slots_});
  if (const int64_t S = state_width(moe); S > 0) dstate_ = Tensor::zeros(be, {N, S});
  if (recurrent_) {
    u_ = Tensor::zeros(be, {N, D});
    g_ = Tensor::zeros(be, {N, D});
    dg_ = ctx.scratch("router.dg", {N, D}, /*fp32=*/true);
    du_ = ctx.scratch("router.du", {N, D}, /*fp32=*/true);
  }
  if (moe.router.schedule.kind == "dense_to_sparse") {
    gate_buf_ = Tensor::zeros(be, {N, E_});
    noise_ = Tensor::zeros(be, {N, E_});
  }
  bias_host_.assign(size_t(E_), 0.f);
  if (moe.router.expert_bias) bias_ = Tensor::zeros(be, {E_});
  const auto& zc = moe.zero_compute_experts;
  if (zc.total() > 0 && zc.balance_weight != 1.0) {
    std::vector<float> w(size_t(E_), 1.f);
    for (int64_t e = kinds_.copy_begin(); e < kinds_.null_begin(); ++e)
      w[size_t(e)] = float(zc.balance_weight);
    score_weight_ = Tensor::zeros(be, {E_});
    be.copy_from_host(score_weight_.data(), w.data(), w.size() * sizeof(float));
  }
  set_clock({});
}

int64_t Router::state_width(const MoeConfig& moe) {
  if (moe.router.kind == "recurrent") return moe.router.recurrent_dim;
  return moe.router.gating_residual ? ExpertKinds::of(moe).routed() : 0;
}

const float* Router::state() const { return recurrent_ ? g_.data() : logits_.data(); }

void Router::set_clock(const RouterClock& clock) {
  clock_ = clock;
  gate_ = gate_at(ctx_.config.moe, clock.step);
}

bool Router::plain() const {
  const auto& r = ctx_.config.moe.router;
  return score_ == RouterScore::softmax && r.pre_softmax && r.scaling_factor == 1.0 && r.num_groups == 0 &&
         !r.expert_bias && gate_.kind == GateKind::topk && gate_.k == slots_ &&
         kinds_.silent_begin() == E_ && score_weight_.empty();
}

RouterGate Router::gate_desc() const {
  const auto& r = ctx_.config.moe.router;
  const bool dts = gate_.kind == GateKind::dense_to_sparse;
  return RouterGate{.sigmoid = score_ == RouterScore::sigmoid,
                    .topk_on_logits = !r.pre_softmax,
                    .renormalize = r.renormalize,
                    .scaling_factor = float(r.scaling_factor),
                    .k = gate_.k,
                    .slots = slots_,
                    .num_groups = r.num_groups,
                    .group_topk = r.group_topk,
                    .bias = r.expert_bias ? bias_.data() : nullptr,
                    .dense_to_sparse = dts,
                    .noise = dts && clock_.noise ? noise_.data() : nullptr,
                    .temperature = float(gate_.temperature),
                    .threshold = float(r.schedule.threshold),
                    .gate_weights = r.schedule.gumbel_weights,
                    .silent_from = kinds_.silent_begin() < E_ ? kinds_.silent_begin() : 0,
                    .score_weight = score_weight_.empty() ? nullptr : score_weight_.data()};
}

void Router::forward(const float* x) {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  if (gate_.kind == GateKind::single_expert) {
    // EvoMoE's first phase: one expert, no routing decision, so the router takes no part. The
    // routing is a constant: uploaded once, until another gate overwrites the buffers.
    if (fixed_routing_) return;
    fixed_routing_ = true;
    std::vector<int32_t> idx(size_t(N * slots_), -1);
    std::vector<float> w(size_t(N * slots_), 0.f);
    for (int64_t t = 0; t < N; ++t) idx[size_t(t * slots_)] = 0, w[size_t(t * slots_)] = 1.f;
    be.copy_from_host(idx_.data(), idx.data(), idx.size() * sizeof(int32_t));
    be.copy_from_host(weights_.data(), w.data(), w.size() * sizeof(float));
    be.fill(probs_.data(), 0.f, N * E_);
    be.fill(lse_.data(), 0.f, N);
    return;
  }
  fixed_routing_ = false;
  if (recurrent_) {
    const int64_t D = ctx_.config.moe.router.recurrent_dim;
    linear_forward(be, x, store_[input_].compute.data(), u_.data(), N, H_, D);
    gru_->forward(u_.data(), prev_, g_.data());
    linear_forward(be, g_.data(), store_[weight_].compute.data(), logits_.data(), N, D, E_);
  } else {
    linear_forward(be, x, store_[weight_].compute.data(), logits_.data(), N, H_, E_);
  }
  if (residual_ != ParamStore::npos && prev_)  // MoE++: + W_map z_{l-1}
    linear_forward(be, prev_, store_[residual_].compute.data(), logits_.data(), N, E_, E_, 1.f);
  if (plain()) {
    be.router_forward(logits_.data(), probs_.data(), idx_.data(), weights_.data(), lse_.data(), N,
                      E_, slots_, ctx_.config.moe.router.renormalize);
    return;
  }
  if (gate_.kind == GateKind::dense_to_sparse && clock_.noise) {
    noise_host_.resize(size_t(N * E_));
    // Keyed by each row's global token index, so every layout draws the same noise per token.
    tokens_host_.resize(size_t(N));
    for (int64_t r = 0; r < N; ++r)
      tokens_host_[size_t(r)] = clock_.first_sequence * ctx_.shape.seq + ctx_.micro_batch_index(r);
    gumbel_noise(ctx_.config.training.seed, clock_.step, prefix_, tokens_host_, E_,
                 noise_host_.data());
    be.copy_from_host(noise_.data(), noise_host_.data(), noise_host_.size() * sizeof(float));
  }
  be.router_gate_forward(logits_.data(), gate_desc(), probs_.data(),
                         gate_buf_.empty() ? nullptr : gate_buf_.data(), idx_.data(),
                         weights_.data(), lse_.data(), N, E_);
}

void Router::backward(const float* dweights, const float* dprobs, const float* dlse,
                      const float* x, float* dx) {
  if (!trains()) return;
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens();
  if (plain())
    be.router_backward(dweights, dprobs, dlse, probs_.data(), idx_.data(), weights_.data(),
                       dlogits_.data(), N, E_, slots_, ctx_.config.moe.router.renormalize);
  else
    be.router_gate_backward(dweights, dprobs, dlse, logits_.data(),
                            gate_buf_.empty() ? nullptr : gate_buf_.data(), idx_.data(),
                            weights_.data(), gate_desc(), dlogits_.data(), N, E_);
  if (!dstate_.empty() && !recurrent_) {
    // Gating residual: the next layer's gradient of these logits joins the gate's (then cleared).
    be.axpy(1.f, dstate_.data(), dlogits_.data(), N * E_);
    be.fill(dstate_.data(), 0.f, N * E_);
  }
  if (residual_ != ParamStore::npos && prev_) {  // through W_map to the previous logits
    linear_backward(be, dlogits_.data(), prev_, store_[residual_].compute.data(), prev_grad_,
                    store_[residual_].grad.data(), N, E_, E_, /*accumulate_dx=*/true);
  }
  if (recurrent_) {
    // logits = W g: dg = dlogits W + the next layer's gradient of g; then the cell and W_in.
    const int64_t D = ctx_.config.moe.router.recurrent_dim;
    linear_backward(be, dlogits_.data(), g_.data(), store_[weight_].compute.data(), dg_.data(),
                    store_[weight_].grad.data(), N, D, E_);
    be.axpy(1.f, dstate_.data(), dg_.data(), N * D);
    be.fill(dstate_.data(), 0.f, N * D);
    gru_->backward(dg_.data(), u_.data(), prev_, du_.data(), prev_grad_);
    linear_backward(be, du_.data(), x, store_[input_].compute.data(), dx, store_[input_].grad.data(),
                    N, H_, D, /*accumulate_dx=*/true);
    return;
  }
  if (store_[weight_].spec.frozen) {  // the input still gets its gradient through the gate
    be.gemm(linear_dx_desc(dlogits_.data(), store_[weight_].compute.data(), dx, N, H_, E_, 1.f));
    return;
  }
  linear_backward(be, dlogits_.data(), x, store_[weight_].compute.data(), dx,
                  store_[weight_].grad.data(), N, H_, E_, /*accumulate_dx=*/true);
}

void Router::set_expert_bias(const std::vector<float>& bias) {
  check(int64_t(bias.size()) == E_, "{}: expert bias of {} values for {} experts", prefix_,
        bias.size(), E_);
  bias_host_ = bias;
  if (!bias_.empty())
    ctx_.backend.copy_from_host(bias_.data(), bias_host_.data(), bias_host_.size() * sizeof(float));
}

void Router::update_expert_bias(const std::vector<int64_t>& counts) {
  const auto& r = ctx_.config.moe.router;
  if (!r.expert_bias) return;
  check(int64_t(counts.size()) == E_, "{}: {} expert counts for {} experts", prefix_,
        counts.size(), E_);
  double mean = 0;
  for (int64_t c : counts) mean += double(c);
  mean /= double(E_);
  const float rate = float(r.bias_update_rate);
  std::vector<float> b = bias_host_;
  for (size_t i = 0; i < b.size(); ++i) {
    const double gap = mean - double(counts[i]);
    b[i] += gap > 0 ? rate : gap < 0 ? -rate : 0.f;  // underloaded experts become likelier
  }
  set_expert_bias(b);
}

}  // namespace origami
