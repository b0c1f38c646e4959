// Trainer: builds the run (layout, groups, data, model, optimizer, resume state) and runs the
// step top to bottom; every collective of the step is a named call.
#include "train/trainer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <set>

#include "base/error.h"
#include "base/logging.h"
#include "checkpoint/checkpoint.h"
#include "comm/collective_watchdog.h"
#include "comm/mpi_runtime.h"
#include "data/tokenizer.h"
#include "model/moe/expert_kinds.h"
#include "model/moe/gating_schedule.h"
#include "optim/lr_schedule.h"
#include "train/device_staged_communicator.h"
#include "train/flops.h"
#include "train/memory_estimate.h"
#include "train/placement_report.h"
#include "train/step_stats.h"
#include "pipeline/stage_layers.h"

namespace origami {
namespace {

// logging.profile: every op of the run timed (train/step_profile.h).
std::unique_ptr<Backend> profiled(std::unique_ptr<Backend> backend, bool profile) {
  if (!profile) return backend;
  return std::make_unique<ProfilingBackend>(std::move(backend));
}

}  // namespace

Trainer::Trainer(const Config& cfg, const Communicator& world)
    : cfg_(cfg),
      world_(world),
      layout_(ParallelLayout::from_config(cfg.parallel, world.size())),
      backend_(profiled(make_backend(cfg.training.backend, node_local_rank(), cfg.training.precision),
                        cfg.logging.profile)),
      device_world_(wrap_for_backend(world, *backend_)),
      timed_world_(cfg.logging.profile ? std::make_unique<TimedCommunicator>(
                                             device_world_ ? *device_world_ : world, comm_times_)
                                       : nullptr),
      groups_(ProcessGroups::create(timed_world_    ? *timed_world_
                                    : device_world_ ? *device_world_
                                                    : world,
                                    layout_,
                                    cfg.model.num_query_groups)) {
  const auto& t = cfg_.training;
  validate(cfg_, world.size());  // apps validate earlier; programmatic users get the same checks
  // A checkpoint to resume from must exist before anything large is allocated.
  const std::string resume = cfg_.checkpoint.load.empty() ? "" : resolve_checkpoint(cfg_.checkpoint.load);
  const int dp = layout_.dp();
  micro_batches_ = t.global_batch_size / (t.micro_batch_size * dp);

  // Run directory and effective config (rank 0).
  std::string run_dir;
  if (world_.rank() == 0) {
    run_dir = cfg_.logging.dir;
    std::error_code ec;
    std::filesystem::create_directories(run_dir, ec);
    check(!ec, "logging.dir: cannot create run directory '{}': {}", run_dir, ec.message());
    std::ofstream(run_dir + "/config.yaml") << to_yaml(cfg_);
  }
  metrics_ = std::make_unique<MetricsSink>(run_dir);
  if (cfg_.logging.profile)
    profile_ = std::make_unique<StepProfile>(static_cast<ProfilingBackend&>(*backend_), comm_times_,
                                             world_, run_dir);
  run_dir_ = run_dir;
  spdlog::info("parallel layout over {} ranks: {}", world_.size(), layout_.describe());
  log_placement(world_, layout_);  // which groups span nodes (train/placement_report.h)

  // Tokenizer and data: every file is checked before the model is allocated.
  auto tokenizer = make_tokenizer(cfg_.data.tokenizer);
  check(tokenizer->vocab_size() <= cfg_.model.vocab_size,
        "{}: model.vocab_size = {} is smaller than the tokenizer's vocabulary ({}, from {})",
        cfg_.source, cfg_.model.vocab_size, tokenizer->vocab_size(),
        cfg_.data.tokenizer.kind == "byte" ? "byte tokenizer" : cfg_.data.tokenizer.model);
  eod_id_ = tokenizer->eod_id();
  train_data_ = open_dataset(cfg_.data,
                             {.seq_length = t.seq_length, .seed = t.seed,
                              .num_samples = t.train_steps * t.global_batch_size, .split = 0},
                             world_);
  if (t.eval_interval > 0) {
    const int64_t evals = t.train_steps / t.eval_interval + 1;
    valid_data_ = open_dataset(cfg_.data,
                               {.seq_length = t.seq_length, .seed = t.seed,
                                .num_samples = evals * t.eval_steps * t.global_batch_size,
                                .split = 1},
                               world_);
  }

  if (cfg_.logging.expert_report_interval > 0) {
    // Each dataset alone, on its validation split when there is one.
    for (const auto& entry : cfg_.data.blend) {
      DataConfig one = cfg_.data;
      one.blend = {{entry.path, 1.0}};
      report_data_.push_back(open_dataset(
          one,
          {.seq_length = t.seq_length, .seed = t.seed,
           .num_samples = t.eval_steps * t.global_batch_size, .split = cfg_.data.split[1] > 0 ? 1 : 0},
          world_));
    }
  }

  // Model and optimizer: all parameters, gradients, moments and activations allocated once.
  model_ = std::make_unique<MoeTransformer>(
      *backend_, cfg_, MicroBatchShape{t.micro_batch_size, t.seq_length}, t.seed,
      ModelGroups::from(groups_));
  optimizer_ = make_optimizer(*backend_, model_->params(), cfg_.optimizer,
                              GradientGroups::from(groups_, cfg_.model.tie_embeddings,
                                                   cfg_.moe.fssdp.enabled));
  // The pipeline schedule of one step: m micro-batches through PP stages (one stage: the
  // degenerate list F0 B0 F1 B1 ...); activations cross stages as [local_tokens, H] (and the
  // cross-layer router state, MoeTransformer::boundary_elements).
  const ScheduleShape schedule{.pp = layout_.pp(),
                               .v = layout_.pp() > 1 ? int(cfg_.parallel.virtual_pipeline) : 1,
                               .m = int(micro_batches_),
                               .kind = pipeline_schedule_kind(cfg_)};
  pipeline_ = std::make_unique<PipelineExecutor>(
      *backend_, *groups_.pp, schedule,
      model_->boundary_elements());
  if (layout_.pp() > 1) {
    spdlog::info("pipeline: {} schedule, {} stages x {} chunks, {} micro-batches per step "
                 "(bubble in theory {:.3f})", schedule_kind_name(schedule.kind), schedule.pp,
                 schedule.v, schedule.m,
                 double(schedule.pp - 1) / double(schedule.v * schedule.m));
    const auto stages = stage_layers(int(cfg_.model.num_layers), schedule.pp, schedule.v,
                                     int(cfg_.parallel.pipeline_first_stage_layers),
                                     int(cfg_.parallel.pipeline_last_stage_layers));
    for (int r = 0; r < schedule.pp; ++r) {
      std::string chunks;
      for (int c = 0; c < schedule.v; ++c) {
        const auto [b, e] = stages[size_t(c * schedule.pp + r)];
        chunks += fmt::format(" [{}, {})", b, e);
      }
      spdlog::info("  stage {}: layers{}{}{}", r, chunks, r == 0 ? " + embedding" : "",
                   r == schedule.pp - 1 ? " + final norm, LM head, loss" : "");
    }
  }
  if (!resume.empty()) {
    // Under pipeline parallelism this stage's store is part of the model: check the
    // checkpoint's tensors against every stage's names (a spec-only model of the whole).
    std::set<std::string> whole;
    if (layout_.pp() > 1) {
      Config one = cfg_;
      one.parallel = ParallelConfig{};
      auto cpu = make_backend("cpu");
      const MoeTransformer specs(*cpu, one, MicroBatchShape{1, 1}, t.seed, {},
                                 /*allocate_parameters=*/false);
      for (const Param& p : specs.params().all()) whole.insert(p.spec.name);
    }
    // Each rank reads its own shards; a damaged checkpoint fails every rank with every rank's
    // reason (checkpoint.h: read_on_every_rank), not one rank while the others are killed.
    TrainingState s;
    read_on_every_rank(world_, fmt::format("checkpoint.load '{}' failed:", resume), [&] {
      // Buffers first: FSSDP's saved owners relabel this rank's expert boxes before they load.
      model_->load_buffers(read_checkpoint_buffers(resume));  // expert bias, FSSDP plan
      // The moments go straight into the optimizer, a parameter at a time (ZeRO-1: its shard).
      OptimizerMoments moments(*optimizer_);
      s = load_checkpoint(*backend_, resume, model_->params(), moments,
                          /*buffers=*/nullptr,  // read above
                          layout_.pp() > 1 ? &whole : nullptr);
    });
    optimizer_->set_steps(s.optimizer_steps);
    step_ = s.step;
    consumed_samples_ = s.consumed_samples;
    skipped_ = s.skipped;
    spdlog::info("resumed from {} at iteration {} ({} samples consumed)", resume, step_,
                 consumed_samples_);
  }
  const auto& ps = model_->params();
  spdlog::info("model: {} parameters ({} dense, {} expert) on this rank, {} MoE layers of {}",
               ps.count(), ps.count(GradGroup::dense), ps.count(GradGroup::expert),
               model_->num_moe_layers(), cfg_.model.num_layers);
  spdlog::info("memory per rank computed from the layout: {}",
               describe_memory(estimate_memory(cfg_, layout_, layout_.coord(world_.rank()).stage)));
  spdlog::info("memory on this rank: {} allocated at start-up (parameters, gradients, Adam "
               "moments, activations kept for backward, expert buffers at moe.dropless_reserve; "
               "scratch follows in the first step, expert buffers grow past the reserve if "
               "routing needs it)",
               format_bytes(double(backend_->peak_bytes())));
  tokens_.assign(size_t(micro_batches_), std::vector<int32_t>(size_t(t.micro_batch_size * t.seq_length)));
  targets_ = tokens_;
}

Trainer::~Trainer() = default;

// This data-parallel rank's contiguous slice of the global batch starting at first_sample, cut
// into micro-batches; targets are the inputs shifted by one, -1 where no loss is taken.
void Trainer::load_micro_batches(const SampleSource& source, int64_t first_sample) {
  const auto& t = cfg_.training;
  const auto coord = layout_.coord(world_.rank());
  const auto ids = dp_batch_slice(first_sample, t.global_batch_size, coord.dp, layout_.dp());
  std::vector<int32_t> sample(size_t(t.seq_length + 1));
  for (size_t i = 0; i < ids.size(); ++i) {
    source.get(ids[i], sample);
    auto& tok = tokens_[i / size_t(t.micro_batch_size)];
    auto& tgt = targets_[i / size_t(t.micro_batch_size)];
    const size_t row = (i % size_t(t.micro_batch_size)) * size_t(t.seq_length);
    for (int64_t p = 0; p < t.seq_length; ++p) {
      tok[row + size_t(p)] = sample[size_t(p)];
      tgt[row + size_t(p)] = sample[size_t(p) + 1];
      // Megatron's eod_mask_loss: no loss for predicting across a document boundary.
      if (cfg_.data.eod_mask_loss && sample[size_t(p)] == eod_id_) tgt[row + size_t(p)] = -1;
    }
  }
}

StepResult Trainer::train_step() {
  const auto& t = cfg_.training;
  const auto& router = cfg_.moe.router;
  auto& be = *backend_;
  auto& ps = model_->params();
  const int dp = layout_.dp();
  StepResult r;
  r.lr = learning_rate(cfg_.optimizer, step_, t.train_steps);
  const int64_t converted_before = be.converted_elements();

  // 1. Data: this rank's micro-batches of global batch `step_`.
  load_micro_batches(*train_data_, consumed_samples_);
  // Gating schedule: a function of the step; EvoMoE's expert-diversify phase may end here.
  model_->spawn_experts_at(step_);
  r.gate = gate_at(cfg_.moe, step_);
  const int64_t first_sequence = layout_.coord(world_.rank()).dp * (t.global_batch_size / dp);

  // 2. Loss normalisation over the global batch, whatever the layout.
  int64_t local_tokens = 0;
  for (const auto& tgt : targets_)
    local_tokens += std::count_if(tgt.begin(), tgt.end(), [](int32_t x) { return x >= 0; });
  const int64_t global_tokens = std::max<int64_t>(groups_.dp->allreduce_scalar(local_tokens), 1);
  const float lm_scale = 1.f / float(global_tokens);
  // Per-micro-batch router losses are averaged over all micro-batches of the global batch; a
  // micro-batch split over TP x CP ranks counts as that many equal parts.
  const int parts = layout_.tp() * layout_.cp();
  const float per_mb = 1.f / float(micro_batches_ * dp * parts);
  const RouterLossScales aux{float(router.aux_loss_coeff) * per_mb,
                             float(router.z_loss_coeff) * per_mb};

  // 3. Forward and backward of every micro-batch in the pipeline schedule's order (one stage:
  //    F0 B0 F1 B1 ...); parameter gradients accumulate.
  Tensor grads = ps.all_grads();
  be.fill(grads.data(), 0.f, grads.numel());
  model_->begin_step();
  const int L = model_->num_moe_layers();
  StepStats stats(router_rows_per_layer(cfg_.moe, L));  // every router row of every layer
  // The micro-batch's place in the global batch keys the dense-to-sparse gate's noise.
  auto clock = [&](int mb) {
    model_->set_router_clock({.step = step_,
                              .first_sequence = first_sequence + mb * t.micro_batch_size,
                              .noise = true, .micro_batch = mb});
  };
  StageWork work;
  work.forward = [&](int mb, int c, const float* in, float* out, bool backward_next) {
    clock(mb);
    stats.add(model_->forward_chunk(c, tokens_[size_t(mb)].data(), targets_[size_t(mb)].data(),
                                    in, out, aux,
                                    backward_next ? std::optional<float>(lm_scale) : std::nullopt,
                                    mb));
  };
  work.backward = [&](int mb, int c, const float* in, const float* og, float* ig) {
    clock(mb);
    model_->backward_chunk(c, tokens_[size_t(mb)].data(), targets_[size_t(mb)].data(), in, og, ig,
                           aux, lm_scale, mb);
  };
  r.pipeline_bubble = pipeline_->run(work).bubble();
  stats.add_router_losses(model_->router_losses());
  // FSSDP: the copies' gradients are summed into their owners (spRS) and the copies freed.
  model_->end_step();

  // 4. Gradient reduction: TP replicas, then data-parallel replicas (ZeRO-1: each rank's shard).
  optimizer_->reduce_gradients();

  // 5. Global gradient norm, clipping, AdamW (an iteration with a non-finite norm is skipped).
  r.grad_norm = optimizer_->grad_norm();
  if (std::isfinite(r.grad_norm)) {
    optimizer_->step(r.lr, r.grad_norm);
  } else {
    r.skipped = true;
    ++skipped_;
    spdlog::warn("iteration {}: gradient norm is {}; update skipped", step_ + 1, r.grad_norm);
  }

  // 6. Metrics of the whole global batch: every rank of the stage holds distinct tokens in the
  // MoE layers; the LM loss of a CP chunk is the same on all its TP ranks.
  stats.allreduce(*groups_.world);  // each pipeline stage adds its layers' and its loss
  r.lm_loss = stats.lm_loss_sum / layout_.tp() / double(global_tokens);
  const double router_terms = double(micro_batches_ * dp * parts) * std::max(L, 1);
  r.balance_loss = stats.balance_loss / router_terms;
  r.z_loss = stats.z_loss / router_terms;
  r.expert_counts = std::move(stats.expert_counts);
  const double slots = double(t.global_batch_size * t.seq_length * cfg_.moe.top_k) * std::max(L, 1);
  r.dropped_fraction = stats.dropped_slots / slots;
  // Auxiliary-loss-free balancing: each router's bias follows its global-batch expert load.
  model_->update_expert_bias(r.expert_counts);

  ++step_;
  consumed_samples_ += t.global_batch_size;
  r.bf16_conversions = be.converted_elements() - converted_before;
  // FSSDP re-sharding (every moe.fssdp.reshard_interval steps): owners move with their moments.
  r.experts_moved = model_->reshard_experts(
      step_, [&](const Param& p) { return optimizer_->moments_of(p); });
  const MoeExchangeStats ex = model_->take_exchange_stats();
  double sums[4] = {double(ex.dispatch_bytes), double(ex.fssdp_bytes), double(ex.copies),
                    double(ex.rows_computed)};
  groups_.world->allreduce(std::span<double>(sums, 4));
  r.dispatch_bytes = sums[0], r.fssdp_bytes = sums[1], r.fssdp_copies = sums[2];
  r.rows_mean = sums[3] / world_.size();
  r.rows_max = groups_.world->allreduce_scalar(double(ex.rows_computed), ReduceOp::max);
  return r;
}

std::string Trainer::save_checkpoint_now() {
  // The moments are read a piece at a time (ZeRO-1: each rank writes its shard).
  const OptimizerMoments moments(*optimizer_);
  const std::string dir =
      cfg_.checkpoint.dir.empty() ? cfg_.logging.dir + "/checkpoints" : cfg_.checkpoint.dir;
  return save_checkpoint(*backend_, dir, cfg_.checkpoint.keep_last,
                         {.step = step_, .consumed_samples = consumed_samples_, .skipped = skipped_,
                          .optimizer_steps = optimizer_->steps()},
                         to_yaml(cfg_), model_->params(), moments, groups_, world_,
                         model_->buffers());
}

// The loaded micro-batches forward only, through the pipeline (one stage: F0 F1 ...), each
// micro-batch's statistics handed to `take`.
void Trainer::forward_only(const std::function<void(const ForwardStats&)>& take) {
  model_->begin_step();
  StageWork work;
  work.forward = [&](int mb, int c, const float* in, float* out, bool) {
    take(model_->forward_chunk(c, tokens_[size_t(mb)].data(), targets_[size_t(mb)].data(), in, out,
                               {}, std::nullopt, mb));
  };
  pipeline_->run_forward(work);
}

double Trainer::evaluate() {
  const auto& t = cfg_.training;
  check(valid_data_ != nullptr, "evaluate(): training.eval_interval is 0, no validation data");
  const int64_t evals_done = step_ / std::max<int64_t>(t.eval_interval, 1);
  double sums[2] = {0.0, 0.0};
  model_->set_router_clock({.step = step_, .noise = false});  // the current gate, noiseless
  for (int64_t b = 0; b < t.eval_steps; ++b) {
    load_micro_batches(*valid_data_, (evals_done * t.eval_steps + b) * t.global_batch_size);
    forward_only([&](const ForwardStats& st) {
      sums[0] += st.lm_loss_sum;
      sums[1] += double(st.loss_tokens);
    });
  }
  // The last stage's losses; TP copies cancel in the ratio.
  groups_.world->allreduce(std::span<double>(sums, 2));
  return sums[0] / std::max(sums[1], 1.0);
}

ExpertReport Trainer::expert_report() {
  const auto& t = cfg_.training;
  const int L = model_->num_moe_layers();
  // Counts of every layer at one stride (the widest layer's rows; pyramid MoE differs per layer).
  const auto rows = router_rows_per_layer(cfg_.moe, L);
  const int64_t E = rows.empty() ? 0 : *std::max_element(rows.begin(), rows.end());
  ExpertReport r{.iteration = step_};
  model_->set_router_clock({.step = step_, .noise = false});
  for (size_t d = 0; d < report_data_.size(); ++d) {
    std::vector<double> counts(size_t(L * E), 0.0);
    for (int64_t b = 0; b < t.eval_steps; ++b) {
      load_micro_batches(*report_data_[d], b * t.global_batch_size);
      forward_only([&](const ForwardStats& st) {
        for (int l = 0; l < L; ++l)
          for (int64_t e = 0; e < int64_t(st.expert_counts[size_t(l)].size()); ++e)
            counts[size_t(l * E + e)] += double(st.expert_counts[size_t(l)][size_t(e)]);
      });
    }
    groups_.world->allreduce(std::span<double>(counts));  // each stage adds its layers
    const double slots = double(t.eval_steps * t.global_batch_size * t.seq_length * cfg_.moe.top_k);
    r.datasets.push_back(cfg_.data.blend[d].path);
    r.tokens.push_back(t.eval_steps * t.global_batch_size * t.seq_length);
    r.freq.emplace_back();
    for (int l = 0; l < L; ++l) {
      r.freq.back().emplace_back(size_t(rows[size_t(l)]));
      for (int64_t e = 0; e < rows[size_t(l)]; ++e)
        r.freq.back()[size_t(l)][size_t(e)] = counts[size_t(l * E + e)] / slots;
    }
  }
  return r;
}

std::vector<double> Trainer::train() {
  const auto& t = cfg_.training;
  const double flops_per_step =
      training_flops_per_token(cfg_) * double(t.global_batch_size * t.seq_length);
  std::vector<double> losses;
  const int L = model_->num_moe_layers();
  spdlog::info("training {} steps of {} samples x {} tokens ({:.3f} GFLOP per step)",
               t.train_steps, t.global_batch_size, t.seq_length, flops_per_step / 1e9);
  while (step_ < t.train_steps) {
    watchdog_set_step(step_ + 1);  // what a hung collective reports (comm/collective_watchdog.h)
    if (profile_) profile_->begin_step();
    const auto start = std::chrono::steady_clock::now();
    StepResult r = train_step();
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    losses.push_back(r.lm_loss);
    if (step_ == 1 || step_ == t.train_steps)
      spdlog::info("memory on this rank after iteration {}: peak {} allocated (estimate {})", step_,
                   format_bytes(double(backend_->peak_bytes())),
                   format_bytes(estimate_memory(cfg_, layout_, layout_.coord(world_.rank()).stage).total()));
    if (step_ % cfg_.logging.interval == 0 || step_ == t.train_steps) {
      if (profile_) profile_->end_step(step_, secs);
      IterationMetrics m{.iteration = step_, .train_steps = t.train_steps,
                         .consumed_samples = consumed_samples_,
                         .global_batch = t.global_batch_size, .ms_per_iter = 1e3 * secs,
                         .tokens_per_s = double(t.global_batch_size * t.seq_length) / secs,
                         .tflops_per_device = flops_per_step / secs / 1e12 / world_.size(),
                         .lr = r.lr, .lm_loss = r.lm_loss, .balance_loss = r.balance_loss,
                         .z_loss = r.z_loss, .grad_norm = r.grad_norm,
                         .skipped_iterations = skipped_};
      if (cfg_.moe.capacity_factor) m.dropped_fraction = r.dropped_fraction;
      if (cfg_.training.precision == "bf16") m.bf16_conversions = r.bf16_conversions;
      if (L > 0 && world_.size() > 1) {
        m.dispatch_bytes = r.dispatch_bytes;
        m.straggler_ratio = r.rows_mean > 0 ? r.rows_max / r.rows_mean : 1.0;
        m.rows_max = r.rows_max, m.rows_mean = r.rows_mean;
        if (cfg_.moe.fssdp.enabled) {
          m.fssdp_bytes = r.fssdp_bytes;
          m.fssdp_copies = r.fssdp_copies;
        }
      }
      const double peak_mib = double(backend_->peak_bytes()) / double(1 << 20);
      if (world_.size() > 1) m.peak_mib_max = world_.allreduce_scalar(peak_mib, ReduceOp::max);
      if (layout_.pp() > 1) {  // every stage's measured bubble and peak: one gather over PP
        const double mine[2] = {r.pipeline_bubble, peak_mib};
        std::vector<double> all(size_t(2 * layout_.pp()));
        groups_.pp->allgather(mine, all.data(), 2, CommDType::f64);
        for (int s = 0; s < layout_.pp(); ++s) {
          m.pipeline_bubble.push_back(all[size_t(2 * s)]);
          m.pipeline_peak_mib.push_back(all[size_t(2 * s + 1)]);
        }
        const ScheduleShape& s = pipeline_->shape();
        m.pipeline_bubble_theory = double(s.pp - 1) / double(s.v * s.m);
      }
      if (schedule_is_active(cfg_.moe) && L > 0) {
        // The gate of this step and how many experts each token actually used, per layer.
        m.router_gate = r.gate.kind == GateKind::single_expert     ? "single_expert"
                        : r.gate.kind == GateKind::dense_to_sparse ? "dense_to_sparse"
                                                                   : "topk";
        m.router_top_k = r.gate.k;
        if (r.gate.kind == GateKind::dense_to_sparse) m.router_temperature = r.gate.temperature;
        for (const auto& counts : r.expert_counts)
          m.experts_per_token.push_back(
              double(std::accumulate(counts.begin(), counts.end(), int64_t{0})) /
              double(t.global_batch_size * t.seq_length));
      }
      if (L > 0) {
        m.ffn_flops_per_token =
            ffn_flops_per_token(cfg_, r.expert_counts, t.global_batch_size * t.seq_length);
        for (int l = 0; l < L && ExpertKinds::of(cfg_.moe).any_extra(); ++l) {
          const auto& counts = r.expert_counts[size_t(l)];
          const int64_t ffn = ExpertKinds::of(cfg_.moe, l).ffn;
          const auto all = std::accumulate(counts.begin(), counts.end(), int64_t{0});
          const auto extra = std::accumulate(counts.begin() + ffn, counts.end(), int64_t{0});
          m.zero_compute_share.push_back(all > 0 ? double(extra) / double(all) : 0.0);
        }
      }
      const int64_t every = cfg_.logging.expert_load_interval;
      if (every > 0 && (step_ % every == 0 || step_ == 1)) {
        for (const auto& counts : r.expert_counts) {
          const double total = double(std::accumulate(counts.begin(), counts.end(), int64_t{0}));
          const double max = double(*std::max_element(counts.begin(), counts.end()));
          m.expert_load_imbalance.push_back(total > 0 ? max * double(counts.size()) / total : 0.0);
        }
      }
      metrics_->log(m);
    }
    if (t.eval_interval > 0 && step_ % t.eval_interval == 0) metrics_->log_eval(step_, evaluate());
    const int64_t save_every = cfg_.checkpoint.save_interval;
    if (save_every > 0 && (step_ % save_every == 0 || step_ == t.train_steps)) save_checkpoint_now();
    const int64_t report_every = cfg_.logging.expert_report_interval;
    if (report_every > 0 && (step_ % report_every == 0 || step_ == t.train_steps)) {
      ExpertReport report = expert_report();
      if (world_.rank() == 0) {
        write_expert_report(run_dir_, report);
        spdlog::info("expert-specialisation report for {} datasets written to {}/expert_report.json",
                     report.datasets.size(), run_dir_);
      }
    }
  }
  return losses;
}

}  // namespace origami
