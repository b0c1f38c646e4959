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
#include "pipeline/stage_layers.h"

namespace origami {

bool MoeTransformer::is_moe_layer(const Config& cfg, int layer) {
  // Megatron's moe_layer_freq: layer l is MoE when l % freq == 0 (freq 1: every layer).
  return cfg.moe.num_experts > 0 && layer % cfg.moe.layer_freq == 0;
}

MoeTransformer::MoeTransformer(Backend& backend, const Config& config, MicroBatchShape shape,
                               uint64_t seed, ModelGroups groups, bool allocate_parameters)
    : ctx_{backend, config, shape, groups} {
  const auto& m = config.model;
  const auto& par = config.parallel;
  const int64_t V = m.vocab_size, H = m.hidden_size;
  const int tp = ctx_.tp_size(), pp = ctx_.pp_size(), rank = ctx_.pp_rank();
  const int v = pp > 1 ? int(par.virtual_pipeline) : 1;
  // This rank's chunks: virtual stages chunk * PP + rank, consecutive layers each.
  const auto stages = stage_layers(int(m.num_layers), pp, v,
                                   pp > 1 ? int(par.pipeline_first_stage_layers) : 0,
                                   pp > 1 ? int(par.pipeline_last_stage_layers) : 0);
  for (int c = 0; c < v; ++c) {
    const int s = c * pp + rank;
    chunks_.push_back(Chunk{.begin = stages[size_t(s)].first, .end = stages[size_t(s)].second,
                            .embeds = s == 0, .has_head = s == pp * v - 1});
  }
  for (int l = 0; l < int(m.num_layers); ++l) num_moe_layers_ += is_moe_layer(config, l);
  // Vocabulary-parallel embedding and LM head: each TP rank holds V/TP rows.
  vocab_ = V / tp;
  vocab_start_ = ctx_.tp_rank() * vocab_;
  const ShardSpec vocab_rows =
      tp > 1 ? ShardSpec{.dims = {{.dim = 0, .group = "tp", .offset = vocab_start_}}} : ShardSpec{};
  const ParamSpec embedding{.name = "embedding.weight", .global_shape = {V, H},
                            .local_shape = {vocab_, H}, .shard = vocab_rows,
                            .init_std = m.init_std};
  const bool embeds = chunks_.front().embeds, has_head = chunks_.back().has_head;
  if (embeds) embedding_ = store_.declare(embedding);
  for (Chunk& ch : chunks_)
    for (int l = ch.begin; l < ch.end; ++l) {
      int moe_index = -1;
      if (is_moe_layer(config, l)) {
        moe_index = 0;
        for (int j = 0; j < l; ++j) moe_index += is_moe_layer(config, j);
        ++local_moe_layers_;
      }
      ModelContext* ctx = &ctx_;
      if (moe_index >= 0 && !config.moe.num_experts_per_layer.empty()) {
        Config& c = layer_configs_.emplace_back(config);
        c.moe.num_experts = config.moe.experts_at(moe_index);
        c.moe.num_experts_per_layer.clear();
        ctx = &layer_contexts_.emplace_back(ctx_.with_config(c));
      }
      ch.blocks.push_back(
          {l, moe_index, std::make_unique<TransformerBlock>(*ctx, store_, l, moe_index >= 0)});
    }
  if (config.moe.num_experts > 0) state_width_ = Router::state_width(config.moe);
  // Every stage sums the recurrent router's shared cell over PP, so every stage declares it.
  if (config.moe.num_experts > 0 && config.moe.router.kind == "recurrent" && pp > 1 &&
      local_moe_layers_ == 0)
    gru_declared_ = std::make_unique<RouterGru>(ctx_, store_, config.moe.router.recurrent_dim);
  link_router_states();
  if (has_head) {
    final_norm_ = store_.declare({.name = "final_norm.weight", .global_shape = {H},
                                  .init = InitKind::ones, .weight_decay = false,
                                  .tp_replicas = tp > 1 ? "tp" : ""});
    if (!m.tie_embeddings) {
      lm_head_ = store_.declare({.name = "lm_head.weight", .global_shape = {V, H},
                                 .local_shape = {vocab_, H}, .shard = vocab_rows,
                                 .init_std = m.init_std});
    } else if (embeds) {
      lm_head_ = embedding_;
    } else {  // tied, on the last stage: a copy, initialised equal (same name, same draws)
      ParamSpec copy = embedding;
      copy.pipeline_copy = true;
      lm_head_ = store_.declare(copy);
    }
  }
  if (!allocate_parameters) return;  // specs only: no values, no communicators
  store_.finalize(backend, seed, ctx_.activation);
  // GQA with more TP ranks than kv heads: the ranks sharing a kv head sum its gradient over
  // groups.tp_kv, which ProcessGroups::create made with the others.
  check(tp <= m.num_query_groups || groups.tp_kv,
        "MoeTransformer: TP {} > {} kv heads needs the tp_kv group (ProcessGroups::create with "
        "the model's kv heads)", tp, m.num_query_groups);

  const int64_t Nc = ctx_.context_tokens(), n = ctx_.local_tokens();
  router_losses_ = TensorOf<double>::zeros(backend, {std::max(local_moe_layers_, 1), 2});
  {
    int l = 0;
    for (Chunk& ch : chunks_)
      for (Block& b : ch.blocks)
        if (MoeLayer* moe = b.block->moe()) moe->set_loss_accumulators(router_losses_.data() + 2 * l++);
  }
  tokens_ = IndexTensor::zeros(backend, {Nc});
  targets_ = IndexTensor::zeros(backend, {Nc});
  positions_ = IndexTensor::zeros(backend, {Nc});
  std::vector<int32_t> pos(static_cast<size_t>(Nc));
  for (int64_t r = 0; r < Nc; ++r) pos[size_t(r)] = int32_t(ctx_.position_of(r));
  backend.copy_from_host(positions_.data(), pos.data(), pos.size() * sizeof(int32_t));
  for (Chunk& ch : chunks_)
    for (int l = ch.begin; l <= ch.end; ++l) ch.residual.push_back(ctx_.activation_buffer({n, H}));
  for (Tensor* t : {&dres_a_, &dres_b_}) *t = ctx_.activation_buffer({n, H});
  if (has_head) {
    normed_ = ctx_.activation_buffer({n, H});
    rstd_ = Tensor::zeros(backend, {n});
    head_dx_ = ctx_.activation_buffer({Nc, H});
    head_ = std::make_unique<LmHeadLoss>(ctx_, vocab_, config.training.logits_chunk_tokens);
  }
}

std::vector<std::pair<int, int>> MoeTransformer::chunk_layers() const {
  std::vector<std::pair<int, int>> out;
  for (const Chunk& ch : chunks_) out.emplace_back(ch.begin, ch.end);
  return out;
}

int64_t MoeTransformer::prepare_inputs(const int32_t* tokens, const int32_t* targets,
                                       bool need_targets) {
  auto& be = ctx_.backend;
  const int64_t V = ctx_.config.model.vocab_size, T = ctx_.shape.seq;
  const int64_t Nc = ctx_.context_tokens();
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
  int64_t loss_tokens = 0;
  for (int64_t r = 0; r < Nc; ++r) {
    const int64_t i = ctx_.sequence_of(r) * T + ctx_.position_of(r);
    const int32_t id = tokens[i] - int32_t(vocab_start_), t = targets[i];
    local_ids_[size_t(r)] = id >= 0 && id < vocab_ ? id : -1;
    local_targets_[size_t(r)] = t < 0                                       ? -1
                                : t >= vocab_start_ && t < vocab_start_ + vocab_ ? t - int32_t(vocab_start_)
                                                                          : Backend::kTargetInOtherShard;
    loss_tokens += t >= 0;
  }
  be.copy_from_host(tokens_.data(), local_ids_.data(), size_t(Nc) * sizeof(int32_t));
  if (need_targets)
    be.copy_from_host(targets_.data(), local_targets_.data(), size_t(Nc) * sizeof(int32_t));
  return loss_tokens;
}

void MoeTransformer::link_router_states() {
  if (state_width_ == 0) return;
  const int64_t n = ctx_.local_tokens();
  for (Chunk& ch : chunks_) {
    ch.state_in = Tensor::zeros(ctx_.backend, {n, state_width_});
    ch.dstate_in = Tensor::zeros(ctx_.backend, {n, state_width_});
    // The model's first MoE layer (layer 0) starts the chain: nothing before it.
    const float* state = ch.embeds ? nullptr : ch.state_in.data();
    float* dstate = ch.embeds ? nullptr : ch.dstate_in.data();
    for (Block& b : ch.blocks) {
      MoeLayer* moe = b.block->moe();
      if (!moe) continue;
      moe->router().set_previous(state, dstate);
      state = moe->router().state();
      dstate = moe->router().state_grad();
    }
    ch.state_out = state;
    ch.dstate_out = dstate;
  }
}

int64_t MoeTransformer::boundary_elements() const {
  return ctx_.local_tokens() * (ctx_.config.model.hidden_size + state_width_);
}

ForwardStats MoeTransformer::forward(const int32_t* tokens, const int32_t* targets,
                                     const RouterLossScales& s,
                                     std::optional<float> lm_grad_scale) {
  check(chunks_.size() == 1 && chunks_[0].embeds && chunks_[0].has_head,
        "MoeTransformer::forward(): this rank holds a pipeline stage, not the whole model; run "
        "its chunks with forward_chunk() under a pipeline schedule");
  return forward_chunk(0, tokens, targets, nullptr, nullptr, s, lm_grad_scale, 0);
}

void MoeTransformer::backward() {
  check(head_grad_ready_, "MoeTransformer::backward() needs a training forward (one given "
        "lm_grad_scale) of the same micro-batch before it");
  backward_chunk(0, nullptr, nullptr, nullptr, nullptr, nullptr, {}, 0.f,
                 chunks_[0].live_micro_batch);
}

// The chunk's blocks (and embedding / head where it has them) over its residual buffers.
void MoeTransformer::run_chunk(Chunk& ch, const float* input, const RouterLossScales& s,
                               ForwardPass pass, std::optional<float> lm_grad_scale,
                               ForwardStats* st) {
  auto& be = ctx_.backend;
  const auto& m = ctx_.config.model;
  const int64_t H = m.hidden_size, Nc = ctx_.context_tokens(), n = ctx_.local_tokens();
  if (ch.embeds) {
    // Embedding: each TP rank looks up its vocabulary rows for all Nc tokens (zero elsewhere);
    // the reduce-scatter sums the shards and leaves this rank its sequence-parallel block.
    float* emb = ctx_.tp_size() > 1 ? ctx_.scratch("embedding.partial", {Nc, H}).data()
                                    : ch.residual[0].data();
    be.embedding_forward(tokens_.data(), store_[embedding_].compute.data(), emb, Nc, H);
    reduce_scatter_sequence(ctx_, emb, ch.residual[0].data(), H);
  } else {
    be.copy(ch.residual[0].data(), input, size_t(n * H) * sizeof(float));
    if (state_width_ > 0)
      be.copy(ch.state_in.data(), input + n * H, size_t(n * state_width_) * sizeof(float));
  }
  for (size_t i = 0; i < ch.blocks.size(); ++i) {
    ch.blocks[i].block->forward(ch.residual[i].data(), ch.residual[i + 1].data(),
                                positions_.data(), s, pass);
    if (!st) continue;
    if (const MoeLayer* moe = ch.blocks[i].block->moe()) {
      st->expert_counts[size_t(ch.blocks[i].moe_index)] = moe->stats().expert_counts;
      st->dropped_slots += moe->stats().dropped_slots;
    }
  }
  if (!ch.has_head) return;
  be.rmsnorm_forward(ch.residual.back().data(), store_[final_norm_].compute.data(), normed_.data(),
                     rstd_.data(), n, H, float(m.norm_eps));
  // LM head, column parallel over the vocabulary, and the loss, chunk by chunk; a training
  // pass forms the head's gradient here (dx into head_dx_, which backward continues from).
  const float* nf = gather_sequence(ctx_, normed_.data(), "lm_head.x", H);
  std::optional<LmHeadGrad> grad;
  if (lm_grad_scale)
    grad = LmHeadGrad{.scale = *lm_grad_scale,
                      .dx = head_dx_.data(),
                      .dw = store_[lm_head_].grad.data()};
  const double loss = head_->run(nf, store_[lm_head_].compute.data(), targets_.data(),
                                 local_targets_, grad);
  if (st) st->lm_loss_sum = loss;
  head_grad_ready_ = grad.has_value();
}

ForwardStats MoeTransformer::forward_chunk(int chunk, const int32_t* tokens,
                                           const int32_t* targets, const float* input,
                                           float* output, const RouterLossScales& s,
                                           std::optional<float> lm_grad_scale, int micro_batch) {
  Chunk& ch = chunks_.at(size_t(chunk));
  ForwardStats st;
  st.expert_counts.resize(size_t(num_moe_layers_));
  if (ch.embeds || ch.has_head) {
    const int64_t loss_tokens = prepare_inputs(tokens, targets, ch.has_head);
    if (ch.has_head) st.loss_tokens = loss_tokens;
  }
  run_chunk(ch, input, s, ForwardPass::first, lm_grad_scale, &st);
  if (!ch.has_head) {
    const int64_t nH = ctx_.local_tokens() * ctx_.config.model.hidden_size;
    ctx_.backend.copy(output, ch.residual.back().data(), size_t(nH) * sizeof(float));
    if (state_width_ > 0)
      ctx_.backend.copy(output + nH, ch.state_out,
                        size_t(ctx_.local_tokens() * state_width_) * sizeof(float));
  }
  ch.live_micro_batch = lm_grad_scale ? micro_batch : -1;
  return st;
}

void MoeTransformer::backward_chunk(int chunk, const int32_t* tokens, const int32_t* targets,
                                    const float* input, const float* output_grad,
                                    float* input_grad, const RouterLossScales& s,
                                    float lm_grad_scale, int micro_batch) {
  auto& be = ctx_.backend;
  const int64_t H = ctx_.config.model.hidden_size, Nc = ctx_.context_tokens(),
                n = ctx_.local_tokens();
  Chunk& ch = chunks_.at(size_t(chunk));
  if (ch.live_micro_batch != micro_batch) {
    // Other micro-batches' forwards ran since: rebuild this one's activations and gradients.
    if (ch.embeds || ch.has_head) prepare_inputs(tokens, targets, ch.has_head);
    run_chunk(ch, input, s, ForwardPass::replay, lm_grad_scale, nullptr);
  }
  ch.live_micro_batch = -1;
  Tensor* dy = &dres_a_;
  Tensor* dx = &dres_b_;
  if (ch.has_head) {
    check(head_grad_ready_, "MoeTransformer: the LM head's backward needs its training forward");
    head_grad_ready_ = false;
    // The LM head's input gradient, formed by forward (no block's scratch shares its key).
    Tensor dnormed = ctx_.scratch("final_norm.dy", {n, H});
    reduce_scatter_sequence(ctx_, head_dx_.data(), dnormed.data(), H);
    be.rmsnorm_backward(dnormed.data(), ch.residual.back().data(),
                        store_[final_norm_].compute.data(), rstd_.data(), dy->data(),
                        store_[final_norm_].grad.data(), n, H);
  } else {
    be.copy(dy->data(), output_grad, size_t(n * H) * sizeof(float));
    // The next stage's gradient of the state this chunk passed on (its router accumulates).
    if (state_width_ > 0) be.axpy(1.f, output_grad + n * H, ch.dstate_out, n * state_width_);
  }
  // Ping-pong two gradient buffers down the residual stream.
  for (size_t i = ch.blocks.size(); i-- > 0;) {
    ch.blocks[i].block->backward(dy->data(), ch.residual[i].data(), dx->data(), positions_.data());
    std::swap(dy, dx);
  }
  if (ch.embeds) {
    // Embedding: every TP rank needs all Nc rows' gradients for its vocabulary rows.
    const float* demb = gather_sequence(ctx_, dy->data(), "embedding.dout", H);
    be.embedding_backward(demb, tokens_.data(), store_[embedding_].grad.data(), Nc, H);
  } else {
    be.copy(input_grad, dy->data(), size_t(n * H) * sizeof(float));
    if (state_width_ > 0) {  // the gradient of the state that arrived, consumed
      be.copy(input_grad + n * H, ch.dstate_in.data(), size_t(n * state_width_) * sizeof(float));
      be.fill(ch.dstate_in.data(), 0.f, n * state_width_);
    }
  }
}

void MoeTransformer::begin_step() {
  // bf16: the compute copy from the masters the optimizer (or a load, or a re-shard) last wrote.
  store_.refresh_compute(ctx_.backend);
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) m->begin_step();
  if (router_losses_.empty()) return;
  const std::vector<double> zeros(size_t(router_losses_.numel()), 0.0);
  ctx_.backend.copy_from_host(router_losses_.data(), zeros.data(), zeros.size() * sizeof(double));
}

void MoeTransformer::end_step() {
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) m->end_step();
}

int64_t MoeTransformer::fssdp_copy_bytes() const {
  int64_t bytes = 0;
  for (const Chunk& ch : chunks_)
    for (const Block& b : ch.blocks)
      if (const MoeLayer* m = b.block->moe(); m && m->fssdp()) bytes += m->fssdp()->copy_bytes();
  return bytes;
}

MoeExchangeStats MoeTransformer::take_exchange_stats() {
  MoeExchangeStats total;
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) total += m->take_exchange_stats();
  return total;
}

int64_t MoeTransformer::reshard_experts(int64_t step, const FssdpExperts::MomentsOf& moments) {
  const int64_t every = ctx_.config.moe.fssdp.reshard_interval;
  if (!ctx_.config.moe.fssdp.enabled || every <= 0 || step % every != 0) return 0;
  int64_t moved = 0;
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) moved += m->fssdp()->reshard(moments);
  return moved;
}

RouterLosses MoeTransformer::router_losses() const {
  RouterLosses r;
  if (router_losses_.empty() || local_moe_layers_ == 0) return r;
  std::vector<double> v(size_t(router_losses_.numel()));
  ctx_.backend.copy_to_host(v.data(), router_losses_.data(), v.size() * sizeof(double));
  for (int l = 0; l < local_moe_layers_; ++l) r.balance += v[size_t(2 * l)], r.z += v[size_t(2 * l + 1)];
  return r;
}

const float* MoeTransformer::logits() const {
  check(head_->whole_logits(), "logits(): the LM head ran in chunks of {} rows "
        "(training.logits_chunk_tokens), so the micro-batch's {} rows of logits never exist at "
        "once; set it to 0", head_->chunk_rows(), ctx_.context_tokens());
  return head_->logits();
}

void MoeTransformer::set_router_clock(const RouterClock& clock) {
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) m->set_router_clock(clock);
}

bool MoeTransformer::spawn_experts_at(int64_t step) {
  const auto& d = ctx_.config.moe.router.schedule.diversify;
  if (d.steps == 0 || step != d.steps || num_moe_layers_ == 0) return false;
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) m->spawn_experts(d);
  spdlog::info("expert-diversify phase over at iteration {}: the experts of every MoE layer "
               "spawned from expert 0 (mask ratio {}, noise std {})", step, d.mask_ratio,
               d.noise_std);
  return true;
}

void MoeTransformer::update_expert_bias(const std::vector<std::vector<int64_t>>& counts) {
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks)
      if (MoeLayer* m = b.block->moe()) m->router().update_expert_bias(counts.at(size_t(b.moe_index)));
}

std::map<std::string, std::vector<float>> MoeTransformer::buffers() const {
  std::map<std::string, std::vector<float>> out;
  for (const Chunk& ch : chunks_)
    for (const Block& b : ch.blocks)
      if (const MoeLayer* m = b.block->moe()) {
        if (ctx_.config.moe.router.expert_bias)
          out[fmt::format("layers.{}.moe.router.expert_bias", b.layer)] = m->router().expert_bias();
        if (m->fssdp()) out.merge(m->fssdp()->buffers(fmt::format("layers.{}.moe.fssdp", b.layer)));
      }
  return out;
}

void MoeTransformer::load_buffers(const std::map<std::string, std::vector<float>>& saved) {
  for (Chunk& ch : chunks_)
    for (Block& b : ch.blocks) {
      MoeLayer* m = b.block->moe();
      if (m && m->fssdp()) m->fssdp()->load_buffers(fmt::format("layers.{}.moe.fssdp", b.layer), saved);
      if (!m || !ctx_.config.moe.router.expert_bias) continue;
      const std::string name = fmt::format("layers.{}.moe.router.expert_bias", b.layer);
      auto it = saved.find(name);
      if (it == saved.end()) {
        spdlog::warn("{}: not in the checkpoint; it starts from zeros", name);
        continue;
      }
      check(int64_t(it->second.size()) == m->router().rows(), "checkpoint buffer '{}' has {} "
            "values, the run's model needs {} (the layer's router rows: moe.num_experts or "
            "num_experts_per_layer, plus zero-computation and null experts)", name,
            it->second.size(), m->router().rows());
      m->router().set_expert_bias(it->second);
    }
  // Buffers of other stages' layers are theirs; warn about those no stage uses.
  for (const auto& [name, values] : saved) {
    if (name.find(".moe.fssdp.") != std::string::npos) continue;  // FSSDP's plan: used or logged above
    const bool ours = ctx_.config.moe.router.expert_bias && name.starts_with("layers.") &&
                      is_moe_layer(ctx_.config, std::stoi(name.substr(7))) &&
                      std::stoi(name.substr(7)) < int(ctx_.config.model.num_layers);
    if (!ours)
      spdlog::warn("checkpoint buffer '{}' is not used by this run's model (moe.router.expert_bias "
                   "is off?); ignored", name);
  }
}

}  // namespace origami
