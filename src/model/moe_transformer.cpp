// MoeTransformer: inputs checked and mapped to this rank's rows and vocabulary shard, the
// blocks, the chunked LM head; backward from the head's dx; router losses read once a step.
#include "model/moe_transformer.h"

#include <fmt/format.h>

#include <cmath>
#include <span>

#include "base/error.h"
#include "base/logging.h"
#include "model/lm_head_loss.h"
#include "model/sequence_parallel.h"

namespace origami {

bool MoeTransformer::is_moe_layer(const Config& cfg, int layer) {
  // Megatron's moe_layer_freq: layer l is MoE when l % freq == 0 (freq 1: every layer).
  return cfg.moe.num_experts > 0 && layer % cfg.moe.layer_freq == 0;
}

MoeTransformer::MoeTransformer(Backend& backend, const Config& config, MicroBatchShape shape,
                               uint64_t seed, ModelGroups groups, bool allocate_parameters)
    : ctx_{backend, config, shape, groups} {
  const auto& m = config.model;
  const int64_t V = m.vocab_size, H = m.hidden_size;
  const int tp = ctx_.tp_size();
  // Vocabulary-parallel embedding and LM head: each TP rank holds V/TP rows.
  vocab_ = V / tp;
  vocab_start_ = ctx_.tp_rank() * vocab_;
  const ShardSpec vocab_rows =
      tp > 1 ? ShardSpec{.dims = {{.dim = 0, .group = "tp", .offset = vocab_start_}}} : ShardSpec{};
  embedding_ = store_.declare({.name = "embedding.weight", .global_shape = {V, H},
                               .local_shape = {vocab_, H}, .shard = vocab_rows,
                               .init_std = m.init_std});
  for (int l = 0; l < int(m.num_layers); ++l) {
    bool moe = is_moe_layer(config, l);
    num_moe_layers_ += moe;
    blocks_.push_back(std::make_unique<TransformerBlock>(ctx_, store_, l, moe));
  }
  final_norm_ = store_.declare({.name = "final_norm.weight", .global_shape = {H},
                                .init = InitKind::ones, .weight_decay = false,
                                .tp_replicas = tp > 1 ? "tp" : ""});
  lm_head_ = m.tie_embeddings ? embedding_
                              : store_.declare({.name = "lm_head.weight", .global_shape = {V, H},
                                                .local_shape = {vocab_, H}, .shard = vocab_rows,
                                                .init_std = m.init_std});
  if (!allocate_parameters) return;  // specs only: no values, no communicators
  store_.finalize(backend, seed);
  // GQA with more TP ranks than kv heads: the ranks sharing a kv head sum its gradient over
  // groups.tp_kv, which ProcessGroups::create made with the others.
  check(tp <= m.num_query_groups || groups.tp_kv,
        "MoeTransformer: TP {} > {} kv heads needs the tp_kv group (ProcessGroups::create with "
        "the model's kv heads)", tp, m.num_query_groups);

  const int64_t Nc = ctx_.context_tokens(), n = ctx_.local_tokens();
  router_losses_ = TensorOf<double>::zeros(backend, {std::max(num_moe_layers_, 1), 2});
  {
    int l = 0;
    for (auto& b : blocks_)
      if (MoeLayer* moe = b->moe()) moe->set_loss_accumulators(router_losses_.data() + 2 * l++);
  }
  tokens_ = IndexTensor::zeros(backend, {Nc});
  targets_ = IndexTensor::zeros(backend, {Nc});
  positions_ = IndexTensor::zeros(backend, {Nc});
  std::vector<int32_t> pos(static_cast<size_t>(Nc));
  for (int64_t r = 0; r < Nc; ++r) pos[size_t(r)] = int32_t(ctx_.position_of(r));
  backend.copy_from_host(positions_.data(), pos.data(), pos.size() * sizeof(int32_t));
  for (int l = 0; l <= int(m.num_layers); ++l) residual_.push_back(Tensor::zeros(backend, {n, H}));
  for (Tensor* t : {&normed_, &dres_a_, &dres_b_}) *t = Tensor::zeros(backend, {n, H});
  rstd_ = Tensor::zeros(backend, {n});
  head_dx_ = Tensor::zeros(backend, {Nc, H});
  head_ = std::make_unique<LmHeadLoss>(ctx_, vocab_, config.training.logits_chunk_tokens);
}

ForwardStats MoeTransformer::forward(const int32_t* tokens, const int32_t* targets,
                                     const RouterLossScales& s,
                                     std::optional<float> lm_grad_scale) {
  auto& be = ctx_.backend;
  const auto& m = ctx_.config.model;
  const int64_t V = m.vocab_size, H = m.hidden_size, T = ctx_.shape.seq;
  const int64_t Nc = ctx_.context_tokens(), n = ctx_.local_tokens();
  ForwardStats st;
  // Inputs are checked here, where they are built, so no backend op has to check (and wait for)
  // them on the device.
  for (int64_t i = 0; i < ctx_.shape.tokens(); ++i) {
    check(tokens[i] >= 0 && tokens[i] < V, "token id {} at position {} is outside the model "
          "vocabulary [0, {}) (model.vocab_size too small for the tokenizer?)", tokens[i], i, V);
    check(targets[i] >= -1 && targets[i] < V, "target id {} at position {} is outside the model "
          "vocabulary [0, {}) and is not -1 (no loss)", targets[i], i, V);
  }
  // This rank's rows (its context-parallel chunks), with token ids and targets relative to its
  // vocabulary shard: -1 = not in the shard (embedding) / no loss, -2 = target in another shard.
  local_ids_.resize(size_t(Nc));
  local_targets_.resize(size_t(Nc));
  for (int64_t r = 0; r < Nc; ++r) {
    const int64_t i = ctx_.sequence_of(r) * T + ctx_.position_of(r);
    const int32_t id = tokens[i] - int32_t(vocab_start_), t = targets[i];
    local_ids_[size_t(r)] = id >= 0 && id < vocab_ ? id : -1;
    local_targets_[size_t(r)] = t < 0                                       ? -1
                                : t >= vocab_start_ && t < vocab_start_ + vocab_ ? t - int32_t(vocab_start_)
                                                                          : Backend::kTargetInOtherShard;
    st.loss_tokens += t >= 0;
  }
  be.copy_from_host(tokens_.data(), local_ids_.data(), size_t(Nc) * sizeof(int32_t));
  be.copy_from_host(targets_.data(), local_targets_.data(), size_t(Nc) * sizeof(int32_t));

  // Embedding: each TP rank looks up its vocabulary rows for all Nc tokens (zero elsewhere);
  // the reduce-scatter sums the shards and leaves this rank its sequence-parallel block.
  float* emb = ctx_.tp_size() > 1 ? ctx_.scratch("embedding.partial", {Nc, H}).data()
                                  : residual_[0].data();
  be.embedding_forward(tokens_.data(), store_[embedding_].value.data(), emb, Nc, H);
  reduce_scatter_sequence(ctx_, emb, residual_[0].data(), H);
  for (size_t l = 0; l < blocks_.size(); ++l) {
    blocks_[l]->forward(residual_[l].data(), residual_[l + 1].data(), positions_.data(), s);
    if (const MoeLayer* moe = blocks_[l]->moe()) {
      st.expert_counts.push_back(moe->stats().expert_counts);
      st.dropped_slots += moe->stats().dropped_slots;
    }
  }
  be.rmsnorm_forward(residual_.back().data(), store_[final_norm_].value.data(), normed_.data(),
                     rstd_.data(), n, H, float(m.norm_eps));
  // LM head, column parallel over the vocabulary, and the loss, chunk by chunk; a training
  // pass forms the head's gradient here (dx into head_dx_, which backward() continues from).
  const float* nf = gather_sequence(ctx_, normed_.data(), "lm_head.x", H);
  std::optional<LmHeadGrad> grad;
  if (lm_grad_scale)
    grad = LmHeadGrad{.scale = *lm_grad_scale,
                      .dx = head_dx_.data(),
                      .dw = store_[lm_head_].grad.data()};
  st.lm_loss_sum = head_->run(nf, store_[lm_head_].value.data(), targets_.data(), local_targets_,
                              grad);
  head_grad_ready_ = grad.has_value();
  return st;
}

const float* MoeTransformer::logits() const {
  check(head_->whole_logits(), "logits(): the LM head ran in chunks of {} rows "
        "(training.logits_chunk_tokens), so the micro-batch's {} rows of logits never exist at "
        "once; set it to 0", head_->chunk_rows(), ctx_.context_tokens());
  return head_->logits();
}

void MoeTransformer::backward() {
  auto& be = ctx_.backend;
  const auto& m = ctx_.config.model;
  const int64_t H = m.hidden_size, Nc = ctx_.context_tokens(), n = ctx_.local_tokens();
  check(head_grad_ready_, "MoeTransformer::backward() needs a training forward (one given "
        "lm_grad_scale) of the same micro-batch before it");
  head_grad_ready_ = false;
  // The LM head's input gradient, formed by forward (no block's scratch shares its key).
  const Tensor& dnf = head_dx_;
  Tensor dnormed = ctx_.scratch("final_norm.dy", {n, H});
  reduce_scatter_sequence(ctx_, dnf.data(), dnormed.data(), H);
  be.rmsnorm_backward(dnormed.data(), residual_.back().data(), store_[final_norm_].value.data(),
                      rstd_.data(), dres_a_.data(), store_[final_norm_].grad.data(), n, H);
  // Ping-pong two gradient buffers down the residual stream.
  Tensor* dy = &dres_a_;
  Tensor* dx = &dres_b_;
  for (size_t l = blocks_.size(); l-- > 0;) {
    blocks_[l]->backward(dy->data(), residual_[l].data(), dx->data(), positions_.data());
    std::swap(dy, dx);
  }
  // Embedding: every TP rank needs all Nc rows' gradients for its vocabulary rows.
  const float* demb =
      gather_sequence(ctx_, dy->data(), "embedding.dout", H);
  be.embedding_backward(demb, tokens_.data(), store_[embedding_].grad.data(), Nc, H);
}

void MoeTransformer::begin_step() {
  for (auto& b : blocks_)
    if (MoeLayer* m = b->moe()) m->begin_step();
  if (router_losses_.empty()) return;
  const std::vector<double> zeros(size_t(router_losses_.numel()), 0.0);
  ctx_.backend.copy_from_host(router_losses_.data(), zeros.data(), zeros.size() * sizeof(double));
}

RouterLosses MoeTransformer::router_losses() const {
  RouterLosses r;
  if (router_losses_.empty() || num_moe_layers_ == 0) return r;
  std::vector<double> v(size_t(router_losses_.numel()));
  ctx_.backend.copy_to_host(v.data(), router_losses_.data(), v.size() * sizeof(double));
  for (int l = 0; l < num_moe_layers_; ++l) r.balance += v[size_t(2 * l)], r.z += v[size_t(2 * l + 1)];
  return r;
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
