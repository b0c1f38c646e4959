// MoeLayer: route -> (capacity) -> dispatch -> experts -> combine, the router losses on the
// backend, and the backward in reverse; the one host sync is the dispatcher's counts.
#include "model/moe/moe_layer.h"

#include <utility>

#include "model/moe/balance_loss.h"
#include "model/moe/capacity.h"
#include "model/moe/gating_schedule.h"

namespace origami {

MoeLayer::MoeLayer(ModelContext& ctx, ParamStore& store, const std::string& prefix,
                   int num_layers)
    : ctx_(ctx),
      balance_(parse_balance_mode(ctx.config.moe.router.load_balance),
               ExpertKinds::of(ctx.config.moe).routed(),
               router_slots(ctx.config.moe), ctx.groups.balance,
               /*share_of_routed=*/ctx.config.moe.router.schedule.kind != "static",
               ctx.groups.tp_cp),
      router_(ctx, store, prefix + ".router"),
      dispatcher_(ctx),
      experts_(ctx, store, prefix + ".experts", num_layers,
               /*declare=*/!ctx.config.moe.fssdp.enabled) {
  const auto& moe = ctx.config.moe;
  if (moe.fssdp.enabled)
    fssdp_ = std::make_unique<FssdpExperts>(ctx, store, prefix + ".experts", num_layers);
  if (ExpertKinds::of(moe).computed_beside())
    zero_compute_ = std::make_unique<ZeroComputeExperts>(ctx, store, prefix);
  if (moe.residual) residual_ = std::make_unique<ResidualMoe>(ctx, store, prefix, num_layers);
  if (moe.shared_expert_ffn_hidden_size > 0)
    shared_expert_ = std::make_unique<SwigluMlp>(ctx, store, prefix + ".shared_expert",
                                                 moe.shared_expert_ffn_hidden_size, num_layers,
                                                 /*tensor_parallel=*/false);
  const int64_t N = ctx.local_tokens();
  const int64_t E = router_.rows(), k = router_.slots();
  if (ctx.tp_size() * ctx.cp_size() > 1) {  // rows are parts of sequences
    std::vector<int32_t> seq(static_cast<size_t>(N));
    for (int64_t r = 0; r < N; ++r)
      seq[size_t(r)] = int32_t(ctx.micro_batch_index(r) / ctx.shape.seq);
    balance_.set_row_sequences(std::move(seq), ctx.shape.batch, ctx.shape.seq);
  }
  auto& be = ctx.backend;
  dispatch_experts_ = IndexTensor::zeros(be, {N, k});
  dweights_ = Tensor::zeros(be, {N, k});
  dprobs_ = Tensor::zeros(be, {N, E});
  dlse_ = Tensor::zeros(be, {N});
  // The routing-sized buffers at their start-up reserve (moe.dropless_reserve): their memory
  // shows at start-up, and a fresh router's rising highs up to it reallocate nothing.
  const ExpertRows rows = expert_rows(moe, N, moe.num_experts, ctx.ep_size(), ctx.etp_size(),
                                      /*imbalance=*/1.0);
  const Communicator* route_group = moe.fssdp.enabled ? ctx.groups.fssdp : ctx.groups.ep;
  const bool exchanges = ctx.etp_size() > 1 || (route_group && route_group->size() > 1);
  dispatcher_.reserve(rows, exchanges);
  if (exchanges) grow_rows(be, plan_.sort_row, rows.computed, 1);
  experts_.reserve(rows.computed);
  for (Tensor* t : {&expert_out_, &dexpert_out_, &dexpert_in_})
    grow_rows(be, *t, rows.computed, ctx.config.model.hidden_size, ctx.activation);
  own_losses_ = TensorOf<double>::zeros(be, {2});  // until the model hands out its own
  replay_losses_ = TensorOf<double>::zeros(be, {2});
  losses_ = own_losses_.data();
}

void MoeLayer::begin_step() {
  balance_.begin_step();
  if (fssdp_) {
    fssdp_->begin_step();
    copies_this_step_ = fssdp_->copies_held();
  }
}

void MoeLayer::end_step() {
  if (fssdp_) fssdp_->end_step();
}

MoeExchangeStats MoeLayer::take_exchange_stats() {
  MoeExchangeStats s{.dispatch_bytes = dispatcher_.take_bytes_sent(),
                     .fssdp_bytes = fssdp_ ? fssdp_->take_bytes_sent() : 0,
                     .rows_computed = std::exchange(rows_computed_, 0),
                     .copies = copies_this_step_};
  return s;
}

int64_t MoeLayer::apply_capacity() {
  const auto& moe = ctx_.config.moe;
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), k = router_.slots(), E = moe.num_experts;
  stats_.dropped_slots = 0;
  if (!moe.capacity_factor) return 0;
  const int64_t C = expert_capacity(N, k, E, *moe.capacity_factor);
  std::vector<int32_t> experts(size_t(N * k));
  std::vector<float> weights(size_t(N * k));
  be.copy_to_host(experts.data(), router_.experts(), experts.size() * sizeof(int32_t));
  be.copy_to_host(weights.data(), router_.weights(), weights.size() * sizeof(float));
  // The router's own choice (before dropping) is what the router losses and the logs count.
  router_counts_.assign(size_t(E), 0);
  for (int32_t e : experts)
    if (e >= 0) router_counts_[size_t(e)]++;
  stats_.dropped_slots = drop_over_capacity(experts, weights, N, k, E, C, moe.drop_policy);
  be.copy_from_host(dispatch_experts_.data(), experts.data(), experts.size() * sizeof(int32_t));
  return C;
}

void MoeLayer::split_extra_slots() {
  auto& be = ctx_.backend;
  const int64_t N = ctx_.local_tokens(), k = router_.slots(), ffn = router_.kinds().ffn;
  std::vector<int32_t> experts(size_t(N * k));
  be.copy_to_host(experts.data(), router_.experts(), experts.size() * sizeof(int32_t));
  router_counts_.assign(size_t(router_.rows()), 0);
  for (int32_t& e : experts) {
    if (e < 0) continue;
    router_counts_[size_t(e)]++;
    if (e >= ffn) e = -1;  // computed beside the dispatcher, or nothing at all
  }
  be.copy_from_host(dispatch_experts_.data(), experts.data(), experts.size() * sizeof(int32_t));
}

void MoeLayer::forward(const float* x, float* out, const RouterLossScales& scales,
                       ForwardPass pass) {
  auto& be = ctx_.backend;
  const auto& moe = ctx_.config.moe;
  const int64_t N = ctx_.local_tokens(), H = ctx_.config.model.hidden_size;
  // route
  router_.forward(x);
  const int64_t capacity = apply_capacity();
  const bool extra = router_.kinds().any_extra();  // (capacity mode refuses extra rows)
  if (extra) split_extra_slots();
  // dispatch (dropless: the router's choice as it is)
  // (FSSDP: where the iteration's placement computes each expert; the copies gathered first)
  const bool capped = moe.capacity_factor.has_value() || extra;
  if (fssdp_) fssdp_->materialize();
  dispatcher_.dispatch(x, capped ? dispatch_experts_.data() : router_.experts(),
                       moe.pad_to_capacity ? capacity : 0, plan_,
                       fssdp_ ? &fssdp_->route() : nullptr);
  if (pass == ForwardPass::first) {
    rows_computed_ += plan_.rows;
    if (fssdp_) fssdp_->add_load(plan_.routed_counts);
  }
  // experts
  grow_rows(be, expert_out_, plan_.rows, H, ctx_.activation);
  experts_.forward(fssdp_ ? fssdp_->weights() : experts_.local_weights(),
                   dispatcher_.expert_input(plan_), plan_.expert_counts, expert_out_.data());
  if (fssdp_ && moe.fssdp.rematerialize) fssdp_->release();
  // combine
  dispatcher_.combine(plan_, expert_out_.data(), router_.weights(), out);
  if (zero_compute_) zero_compute_->forward(x, router_.experts(), router_.weights(), out);
  if (residual_) residual_->forward(x, out);
  if (shared_expert_) shared_expert_->forward(x, out, /*accumulate=*/true);
  if (pass == ForwardPass::recompute_activations) return;  // the first pass's results stand
  const bool replay = pass == ForwardPass::replay;

  // Router losses see the router's own choice (before any dropping), as in Megatron: in
  // dropless mode exactly what the dispatcher counted. Unused slots (-1: fewer experts for this
  // token under a gating schedule) count for nothing.
  const std::vector<int64_t>& counts = capped ? router_counts_ : plan_.routed_counts;
  if (!replay) stats_.expert_counts = counts;
  // Router losses on the backend, into this layer's accumulators (read once per step): nothing
  // more crosses to the host here.
  const bool trains = router_.trains();  // diversify phase: no routing decision, no losses
  has_balance_grad_ = trains && balance_.mode() != BalanceMode::none;
  has_z_grad_ = trains && moe.router.z_loss_coeff != 0.0;
  double* losses = replay ? replay_losses_.data() : losses_;  // a replay's values are not kept
  if (has_balance_grad_)
    balance_.forward(be, counts.data(), capped ? nullptr : plan_.routed_counts_dev.data(),
                     router_.experts(), router_.probs(), balance_batch(), N / balance_batch(),
                     scales.balance, losses, dprobs_.data(),
                     {.replay = replay, .micro_batch = router_.clock().micro_batch});
  if (has_z_grad_) router_z_loss(be, router_.lse(), N, scales.z, losses + 1, dlse_.data());
}

void MoeLayer::backward(const float* dout, const float* x, float* dx) {
  auto& be = ctx_.backend;
  const int64_t H = ctx_.config.model.hidden_size;
  grow_rows(be, dexpert_out_, plan_.rows, H, ctx_.activation);
  grow_rows(be, dexpert_in_, plan_.rows, H, ctx_.activation);
  const float* drouted = dout;  // the gradient of the routed experts' output
  if (residual_) {
    grow_rows(be, drouted_, ctx_.local_tokens(), H, ctx_.activation);
    residual_->backward_mix(dout, drouted_.data());
    drouted = drouted_.data();
  }
  dispatcher_.combine_backward(plan_, drouted, expert_out_.data(), router_.weights(),
                               dexpert_out_.data(), dweights_.data());
  if (fssdp_) fssdp_->materialize();  // rematerialising: gathered again for the backward
  experts_.backward(fssdp_ ? fssdp_->weights() : experts_.local_weights(), dexpert_out_.data(),
                    dispatcher_.expert_input(plan_), plan_.expert_counts, dexpert_in_.data());
  if (fssdp_ && ctx_.config.moe.fssdp.rematerialize) {
    fssdp_->reduce_copies();  // this micro-batch's copy gradients to their owners
    fssdp_->release();
  }
  dispatcher_.dispatch_backward(plan_, dexpert_in_.data(), dx);
  if (zero_compute_)
    zero_compute_->backward(drouted, x, router_.experts(), router_.weights(), dx, dweights_.data());
  if (residual_) residual_->backward_input(x, dx);
  router_.backward(dweights_.data(), has_balance_grad_ ? dprobs_.data() : nullptr,
                   has_z_grad_ ? dlse_.data() : nullptr, x, dx);
  if (shared_expert_) shared_expert_->backward(dout, x, dx, /*accumulate=*/true);
}

}  // namespace origami
