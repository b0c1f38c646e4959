// validate(): the cross-field rules that one key alone cannot check, run once the world size is
// known and before any allocation. All problems are reported together, one per line, each naming
// the keys involved with the file line (or --set) they came from, and what would be allowed.
// Features whose issue has not landed yet are refused here with a message saying so.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <optional>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "base/error.h"
#include "config/config.h"
#include "pipeline/schedule.h"
#include "pipeline/stage_layers.h"

namespace origami {
namespace {

// "parallel.tensor=2 (configs/x.yaml:12)", or "(default)" for keys the config left unset.
std::string ref(const Config& cfg, const std::string& key, const auto& value) {
  auto it = cfg.origin.find(key);
  return fmt::format("{}={} ({})", key, value, it == cfg.origin.end() ? "default" : it->second);
}

// a × b × ..., saturating: absurd sizes (2^40 each) must give "does not divide", not overflow.
int64_t product(std::initializer_list<int64_t> factors) {
  int64_t out = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(out, f, &out)) return INT64_MAX;
  return out;
}

// The router options and the gating schedule (docs/moe.md): combinations that would be silently
// meaningless are refused, so every accepted config means what it says.
void validate_router(const Config& cfg, const auto& require) {
  const auto& moe = cfg.moe;
  const auto& r = moe.router;
  const auto& s = r.schedule;
  const bool dts = s.kind == "dense_to_sparse", anneal_k = s.kind == "topk_anneal";
  require(r.pre_softmax || r.score == "softmax",
          fmt::format("{} applies to softmax scores only; {} (sigmoid scores are selected and "
                      "weighted as they are); allowed with sigmoid: true",
                      ref(cfg, "moe.router.pre_softmax", "false"),
                      ref(cfg, "moe.router.score", r.score)));
  require(r.pre_softmax || r.renormalize,
          fmt::format("{} takes a softmax over the k selected logits, whose weights always sum to "
                      "1, so {} would be ignored; allowed: renormalize true (or pre_softmax true "
                      "for un-renormalised softmax weights)",
                      ref(cfg, "moe.router.pre_softmax", "false"),
                      ref(cfg, "moe.router.renormalize", "false")));
  if (r.num_groups > 0 || r.group_topk > 0) {
    const std::string groups = ref(cfg, "moe.router.num_groups", r.num_groups);
    const std::string topk = ref(cfg, "moe.router.group_topk", r.group_topk);
    require(r.num_groups >= 1 && r.group_topk >= 1,
            fmt::format("group-limited routing needs both {} and {} >= 1 (0 and 0 = off)", groups,
                        topk));
    if (r.num_groups >= 1 && r.group_topk >= 1) {
      require(moe.num_experts % r.num_groups == 0,
              fmt::format("{} is not divisible by {}; every group needs the same number of experts",
                          ref(cfg, "moe.num_experts", moe.num_experts), groups));
      require(r.group_topk <= r.num_groups,
              fmt::format("{} exceeds {}; allowed: <= {}", topk, groups, r.num_groups));
      const int64_t reach = r.group_topk * (moe.num_experts / r.num_groups);
      std::vector<std::pair<std::string, int64_t>> ks{{"moe.top_k", moe.top_k}};
      if (anneal_k) ks.push_back({"moe.router.schedule.k_start", s.k_start});
      for (const auto& [key, k] : ks)
        require(k >= r.group_topk && k <= reach,
                fmt::format("{} must lie between {} (one expert from each kept group) and {} "
                            "(the experts of the kept groups: group_topk x num_experts / "
                            "num_groups)",
                            ref(cfg, key, k), topk, reach));
    }
    require(!dts, fmt::format("{} selects a variable number of experts per token and cannot be "
                              "group-limited; set num_groups 0 or another schedule kind",
                              ref(cfg, "moe.router.schedule.kind", s.kind)));
  }
  // A frozen router learns nothing from a balance loss (its weight has no gradient): the loss
  // would only push the layer's input. SMoE-Dropout needs none.
  require(!r.freeze || r.load_balance == "none" || r.aux_loss_coeff == 0.0,
          fmt::format("{} keeps the router at its random initialisation, so {} with {} would only "
                      "push the layer input; allowed: load_balance none or aux_loss_coeff 0 with "
                      "a frozen router",
                      ref(cfg, "moe.router.freeze", "true"),
                      ref(cfg, "moe.router.load_balance", r.load_balance),
                      ref(cfg, "moe.router.aux_loss_coeff", r.aux_loss_coeff)));
  require(!(dts && r.expert_bias),
          fmt::format("{} selects by a Gumbel-softmax threshold, which {} cannot shift; allowed: "
                      "expert_bias false with dense_to_sparse",
                      ref(cfg, "moe.router.schedule.kind", s.kind),
                      ref(cfg, "moe.router.expert_bias", "true")));
  const int64_t rows = moe.num_experts + moe.zero_compute_experts.total() + moe.null_experts;
  require(!anneal_k || s.k_start <= rows,
          fmt::format("{} exceeds {}; allowed: <= {}",
                      ref(cfg, "moe.router.schedule.k_start", s.k_start),
                      ref(cfg, "moe.num_experts", moe.num_experts), rows));
  require(s.end_step >= s.start_step,
          fmt::format("{} is before {}; allowed: >= {}",
                      ref(cfg, "moe.router.schedule.end_step", s.end_step),
                      ref(cfg, "moe.router.schedule.start_step", s.start_step), s.start_step));
  const bool scheduled = s.kind != "static" || s.diversify.steps > 0;
  require(!scheduled || !moe.capacity_factor,
          fmt::format("{} needs dropless routing (the number of experts per token changes with "
                      "the step), but {}; allowed: capacity_factor null",
                      s.kind != "static" ? ref(cfg, "moe.router.schedule.kind", s.kind)
                                         : ref(cfg, "moe.router.schedule.diversify.steps",
                                               s.diversify.steps),
                      ref(cfg, "moe.capacity_factor",
                          moe.capacity_factor ? fmt::format("{}", *moe.capacity_factor) : "null")));
}

// The MoE variants (docs/moe.md "Variants"): what each needs and what it cannot serve.
void validate_variants(const Config& cfg, const auto& require) {
  const auto& moe = cfg.moe;
  const auto& zc = moe.zero_compute_experts;
  std::vector<std::pair<std::string, std::string>> extra;  // the keys that add router rows
  for (auto [key, n] : {std::pair{"moe.zero_compute_experts.zero", zc.zero},
                        std::pair{"moe.zero_compute_experts.copy", zc.copy},
                        std::pair{"moe.zero_compute_experts.constant", zc.constant},
                        std::pair{"moe.null_experts", moe.null_experts}})
    if (n > 0) extra.push_back({key, ref(cfg, key, n)});
  std::vector<std::string> on;  // every variant that is switched on
  for (const auto& [key, r] : extra) on.push_back(r);
  if (moe.residual) on.push_back(ref(cfg, "moe.residual", "true"));
  if (moe.router.gating_residual) on.push_back(ref(cfg, "moe.router.gating_residual", "true"));
  if (moe.router.kind != "linear") on.push_back(ref(cfg, "moe.router.kind", moe.router.kind));
  for (const auto& v : on)
    require(moe.num_experts > 0,
            fmt::format("{} changes the MoE layer, but {} is a dense model; allowed: "
                        "num_experts > 0", v, ref(cfg, "moe.num_experts", moe.num_experts)));
  // The cross-layer routers: one kind at a time, a router that trains from the first step.
  const auto& r = moe.router;
  const bool recurrent = r.kind == "recurrent";
  if (recurrent || r.gating_residual) {
    const std::string chain = recurrent ? ref(cfg, "moe.router.kind", r.kind)
                                        : ref(cfg, "moe.router.gating_residual", "true");
    require(!(recurrent && r.gating_residual),
            fmt::format("{} and {} both carry a state between MoE layers; allowed: one of them",
                        ref(cfg, "moe.router.kind", r.kind),
                        ref(cfg, "moe.router.gating_residual", "true")));
    require(r.schedule.diversify.steps == 0,
            fmt::format("{} needs every MoE layer's router from the first step, but {} routes "
                        "without it; allowed: diversify.steps 0",
                        chain, ref(cfg, "moe.router.schedule.diversify.steps",
                                   r.schedule.diversify.steps)));
    require(!r.freeze,
            fmt::format("{} would freeze only part of what routes under {} (the recurrent cell "
                        "and W_in, or W_map, would train); allowed: freeze false with a "
                        "cross-layer router",
                        ref(cfg, "moe.router.freeze", "true"), chain));
  }
  // Pyramid MoE: one count per MoE layer, each one EP can split and the router can serve.
  if (const auto& counts = moe.num_experts_per_layer; !counts.empty()) {
    const std::string list = ref(cfg, "moe.num_experts_per_layer",
                                 fmt::format("[{}]", fmt::join(counts, ", ")));
    int64_t moe_layers = 0;
    if (moe.layer_freq > 0)
      for (int64_t l = 0; l < cfg.model.num_layers; ++l) moe_layers += l % moe.layer_freq == 0;
    require(moe.num_experts > 0,
            fmt::format("{} needs MoE layers, but {} is a dense model", list,
                        ref(cfg, "moe.num_experts", moe.num_experts)));
    require(int64_t(counts.size()) == moe_layers,
            fmt::format("{} has {} counts for the {} MoE layers of {} with {}; allowed: one count "
                        "per MoE layer", list, counts.size(), moe_layers,
                        ref(cfg, "model.num_layers", cfg.model.num_layers),
                        ref(cfg, "moe.layer_freq", moe.layer_freq)));
    const int64_t extra_rows = zc.total() + moe.null_experts;
    for (size_t i = 0; i < counts.size(); ++i) {
      require(counts[i] % cfg.parallel.expert == 0,
              fmt::format("{}: MoE layer {} has {} experts, not divisible by {}; allowed: "
                          "multiples of the expert-parallel size", list, i, counts[i],
                          ref(cfg, "parallel.expert", cfg.parallel.expert)));
      require(moe.top_k <= counts[i] + extra_rows,
              fmt::format("{}: MoE layer {} routes among {} rows, fewer than {}", list, i,
                          counts[i] + extra_rows, ref(cfg, "moe.top_k", moe.top_k)));
      if (moe.router.num_groups > 0)
        require(counts[i] % moe.router.num_groups == 0,
                fmt::format("{}: MoE layer {} has {} experts, not divisible by {}", list, i,
                            counts[i], ref(cfg, "moe.router.num_groups", moe.router.num_groups)));
    }
    // W_map maps the previous layer's logits onto this layer's: one count for both.
    require(!moe.router.gating_residual,
            fmt::format("{} with {} would need a W_map between layers of different widths; "
                        "allowed: the gating residual with one expert count",
                        list, ref(cfg, "moe.router.gating_residual", "true")));
    require(!moe.fssdp.enabled,
            fmt::format("{} with {}: FSSDP plans one expert count per stage; allowed: fssdp "
                        "with one expert count", list, ref(cfg, "moe.fssdp.enabled", "true")));
  }
  for (const auto& [key, r] : extra) {
    // Capacity is counted per FFN expert; a slot on a zero-computation or null row has none.
    require(!moe.capacity_factor,
            fmt::format("{} routes tokens to experts outside the dispatcher, which {} cannot "
                        "count; allowed: capacity_factor null (dropless) with these experts",
                        r, ref(cfg, "moe.capacity_factor",
                               moe.capacity_factor ? fmt::format("{}", *moe.capacity_factor) : "null")));
    require(moe.router.num_groups == 0,
            fmt::format("{} adds router rows outside the expert groups of {}; allowed: "
                        "num_groups 0 with these experts",
                        r, ref(cfg, "moe.router.num_groups", moe.router.num_groups)));
  }
}

// FSSDP (docs/moe.md): the layouts and features it serves.
void validate_fssdp(const Config& cfg, int world_size, const auto& require) {
  const auto& moe = cfg.moe;
  const auto& p = cfg.parallel;
  const std::string on = ref(cfg, "moe.fssdp.enabled", "true");
  require(moe.num_experts > 0,
          fmt::format("{} shards experts, but {} is a dense model; allowed: num_experts > 0",
                      on, ref(cfg, "moe.num_experts", moe.num_experts)));
  if (world_size % p.pipeline == 0 && p.pipeline > 0 && p.expert_tensor > 0) {
    const int64_t owners = world_size / p.pipeline / p.expert_tensor;  // EP x EDP of a stage
    require(owners > 1,
            fmt::format("{} shards each layer's experts over the EP x EDP ranks of a pipeline "
                        "stage, and this layout has one ({} ranks / {} / {}); allowed: more ranks "
                        "per stage than expert_tensor",
                        on, world_size, ref(cfg, "parallel.pipeline", p.pipeline),
                        ref(cfg, "parallel.expert_tensor", p.expert_tensor)));
  }
  require(moe.router.schedule.diversify.steps == 0,
          fmt::format("{} cannot serve EvoMoE's diversify phase ({}): spawning copies expert 0 "
                      "into every expert before owners exist; allowed: diversify.steps 0",
                      on, ref(cfg, "moe.router.schedule.diversify.steps",
                              moe.router.schedule.diversify.steps)));
}

// The pipeline keys (issue 15, docs/configuration.md). The rules are the pipeline layer's own
// (stage_layers(), check_schedule_shape()), so the config and the trainer cannot disagree; this
// adds the file line of every key and, for the micro-batch count, the global batch sizes that
// would work. `micro_batches` is 0 when the global batch does not split (reported already).
void validate_pipeline(const Config& cfg, int64_t micro_batches, const auto& require) {
  const auto& p = cfg.parallel;
  const auto& t = cfg.training;
  const int64_t layers = cfg.model.num_layers;
  const int64_t first = p.pipeline_first_stage_layers, last = p.pipeline_last_stage_layers;
  const std::string layers_ref = ref(cfg, "model.num_layers", layers);
  const std::string pp_ref = ref(cfg, "parallel.pipeline", p.pipeline);
  const std::string v_ref = ref(cfg, "parallel.virtual_pipeline", p.virtual_pipeline);
  const std::string first_ref = ref(cfg, "parallel.pipeline_first_stage_layers", first);
  const std::string last_ref = ref(cfg, "parallel.pipeline_last_stage_layers", last);
  const auto fits_int = [](int64_t x) { return x >= 0 && x <= std::numeric_limits<int>::max(); };

  // The schedule kind. The schema allows only 1f1b | interleaved | gpipe, but a Config built in
  // code can hold anything.
  std::optional<ScheduleKind> kind;
  try {
    kind = pipeline_schedule_kind(cfg);
  } catch (const Error& e) {
    require(false, fmt::format("{}: {}", ref(cfg, "parallel.pipeline_schedule",
                                             p.pipeline_schedule), e.what()));
  }
  const bool schedule_unset = !cfg.origin.contains("parallel.pipeline_schedule");
  const std::string kind_ref =
      kind && schedule_unset && p.virtual_pipeline > 1
          ? fmt::format("parallel.pipeline_schedule={} (default with virtual_pipeline > 1)",
                        schedule_kind_name(*kind))
          : ref(cfg, "parallel.pipeline_schedule", p.pipeline_schedule);

  // Virtual stages interleave chunks across pipeline ranks: with one stage there is nothing to
  // interleave (and a rank would send to itself).
  require(p.virtual_pipeline == 1 || p.pipeline > 1,
          fmt::format("{} needs parallel.pipeline > 1, found {}; allowed: virtual_pipeline 1 "
                      "with one pipeline stage",
                      ref(cfg, "parallel.virtual_pipeline", p.virtual_pipeline),
                      ref(cfg, "parallel.pipeline", p.pipeline)));

  // The layer split. One stage has no first or last rank to set apart; its chunks still must
  // divide the layers, so the split is checked without the two counts then.
  const bool ends_of_one_stage = p.pipeline == 1 && (first > 0 || last > 0);
  require(!ends_of_one_stage,
          fmt::format("{} and {} set the layers of the first and the last of several pipeline "
                      "ranks, but {} has one stage holding all {} layers; allowed: 0 (the "
                      "default) with parallel.pipeline=1, or parallel.pipeline > 1",
                      first_ref, last_ref, pp_ref, layers));
  if (!fits_int(layers) || !fits_int(p.pipeline) || !fits_int(p.virtual_pipeline) ||
      !fits_int(first) || !fits_int(last)) {  // beyond the split's int arithmetic
    if (p.pipeline > layers)
      require(false, fmt::format("{} is larger than {}: every pipeline stage needs at least one "
                                 "layer; allowed: parallel.pipeline <= {}",
                                 pp_ref, layers_ref, layers));
    else
      require(false, fmt::format("{}, {}, {}, {} or {} is too large; allowed: at most {}",
                                 layers_ref, pp_ref, v_ref, first_ref, last_ref,
                                 std::numeric_limits<int>::max()));
  } else {
    try {
      stage_layers(int(layers), int(p.pipeline), int(p.virtual_pipeline),
                   ends_of_one_stage ? 0 : int(first), ends_of_one_stage ? 0 : int(last));
    } catch (const Error& e) {
      // The split's own message names every key; the lines are added for those in play.
      std::string keys = fmt::format("{}, {}, {}", layers_ref, pp_ref, v_ref);
      for (const auto& [key, value, r] : {std::tuple{"parallel.pipeline_first_stage_layers",
                                                     first, first_ref},
                                          std::tuple{"parallel.pipeline_last_stage_layers", last,
                                                     last_ref}})
        if (value > 0 || cfg.origin.contains(key)) keys += ", " + r;
      require(false, fmt::format("the pipeline layer split of {}: {}", keys, e.what()));
    }
  }

  // The micro-batch count per step against the schedule (interleaved: Megatron's group rule).
  if (!kind || micro_batches <= 0 || !fits_int(micro_batches) || !fits_int(p.pipeline) ||
      !fits_int(p.virtual_pipeline))
    return;
  const auto shape = [&](int64_t count) {
    return ScheduleShape{.pp = int(p.pipeline), .v = int(p.virtual_pipeline), .m = int(count),
                         .kind = *kind};
  };
  try {
    check_schedule_shape(shape(micro_batches));
  } catch (const Error& e) {
    // The nearest counts below and above that the same rule accepts, as global batch sizes; none
    // when no count would do (1f1b with virtual_pipeline > 1). The group size is pp here (no key
    // sets it), and a multiple of it always runs, so the search above is short.
    const auto runs = [&](int64_t count) {
      try {
        check_schedule_shape(shape(count));
        return true;
      } catch (const Error&) {
        return false;
      }
    };
    int64_t below = 0, above = 0;
    for (int64_t c = micro_batches - 1; c >= 1 && below == 0; --c)
      if (runs(c)) below = c;
    const int64_t limit = std::min<int64_t>(micro_batches + 2 * p.pipeline + 2,
                                            std::numeric_limits<int>::max());
    for (int64_t c = micro_batches + 1; c <= limit && above == 0; ++c)
      if (runs(c)) above = c;
    if (below == 0 && above == 0) {  // not the count: the kind and v do not go together
      require(false, fmt::format("{} with {} and {}: {}", kind_ref, pp_ref, v_ref, e.what()));
      return;
    }
    const int64_t dp = t.global_batch_size / (t.micro_batch_size * micro_batches);
    const int64_t per = t.micro_batch_size * dp;  // sequences per micro-batch over all DP ranks
    const std::string allowed =
        below > 0 && above > 0
            ? fmt::format("training.global_batch_size {} or {} ({} or {} micro-batches per step)",
                          product({below, per}), product({above, per}), below, above)
            : fmt::format("training.global_batch_size {} ({} micro-batches per step)",
                          product({below + above, per}), below + above);
    require(false, fmt::format("{}, {}, {}, {}, {} (data-parallel size {}): {}; allowed: {}",
                               kind_ref, pp_ref, v_ref,
                               ref(cfg, "training.global_batch_size", t.global_batch_size),
                               ref(cfg, "training.micro_batch_size", t.micro_batch_size), dp,
                               e.what(), allowed));
  }
}

}  // namespace

void validate(const Config& cfg, int world_size) {
  std::vector<std::string> problems;
  auto require = [&](bool ok, std::string msg) {
    if (!ok) problems.push_back(std::move(msg));
  };
  const auto& m = cfg.model;
  const auto& moe = cfg.moe;
  const auto& p = cfg.parallel;
  const auto& t = cfg.training;
  const auto& o = cfg.optimizer;
  check(world_size >= 1, "{}: world size {} is invalid; need at least 1 rank", cfg.source,
        world_size);

  // Layout: TP×CP×PP tiles the world, ETP×EP tiles each pipeline stage (DESIGN.md, folding).
  const int64_t model_parallel = product({p.tensor, p.context, p.pipeline});
  const bool dense_fits = world_size % model_parallel == 0;
  require(dense_fits,
          fmt::format(
              "{} × {} × {} = {} does not divide the world size {} (mpirun -np); "
              "allowed: a product that divides {}",
              ref(cfg, "parallel.tensor", p.tensor), ref(cfg, "parallel.context", p.context),
              ref(cfg, "parallel.pipeline", p.pipeline), model_parallel, world_size, world_size));
  if (world_size % p.pipeline == 0) {
    const int64_t stage = world_size / p.pipeline;
    require(stage % product({p.expert_tensor, p.expert}) == 0,
            fmt::format("{} × {} = {} does not divide the {} ranks of a pipeline stage "
                        "(world {} / pipeline {}); allowed: a product that divides {}",
                        ref(cfg, "parallel.expert_tensor", p.expert_tensor),
                        ref(cfg, "parallel.expert", p.expert), product({p.expert_tensor, p.expert}),
                        stage, world_size, p.pipeline, stage));
  }
  require(!moe.num_experts_per_layer.empty() || moe.num_experts % p.expert == 0,
          fmt::format("{} is not divisible by {}; each expert-parallel rank needs the same number "
                      "of experts",
                      ref(cfg, "moe.num_experts", moe.num_experts),
                      ref(cfg, "parallel.expert", p.expert)));
  int64_t micro_batches = 0;  // per step and data-parallel rank, when the batch splits evenly
  if (dense_fits) {
    const int64_t dp = world_size / model_parallel;
    const bool splits = t.global_batch_size % product({t.micro_batch_size, dp}) == 0;
    require(
        splits,
        fmt::format("{} is not divisible by {} × data-parallel size {} (world {} / (tensor {} × "
                    "context {} × pipeline {})); allowed: a multiple of {}",
                    ref(cfg, "training.global_batch_size", t.global_batch_size),
                    ref(cfg, "training.micro_batch_size", t.micro_batch_size), dp, world_size,
                    p.tensor, p.context, p.pipeline, product({t.micro_batch_size, dp})));
    if (splits) micro_batches = t.global_batch_size / product({t.micro_batch_size, dp});
  }
  validate_pipeline(cfg, micro_batches, require);

  // Model shapes.
  require(m.hidden_size % m.num_attention_heads == 0,
          fmt::format("{} is not divisible by {}", ref(cfg, "model.hidden_size", m.hidden_size),
                      ref(cfg, "model.num_attention_heads", m.num_attention_heads)));
  require(m.num_attention_heads % m.num_query_groups == 0,
          fmt::format("{} is not divisible by {} (each key/value head serves the same number of "
                      "query heads)",
                      ref(cfg, "model.num_attention_heads", m.num_attention_heads),
                      ref(cfg, "model.num_query_groups", m.num_query_groups)));
  if (m.hidden_size % m.num_attention_heads == 0)
    require(
        (m.hidden_size / m.num_attention_heads) % 2 == 0,
        fmt::format("head dimension {} / {} = {} is odd; RoPE rotates pairs, so it must be even",
                    ref(cfg, "model.hidden_size", m.hidden_size),
                    ref(cfg, "model.num_attention_heads", m.num_attention_heads),
                    m.hidden_size / m.num_attention_heads));
  require(
      t.seq_length <= m.max_seq_length,
      fmt::format("{} exceeds {}; allowed: <= {}", ref(cfg, "training.seq_length", t.seq_length),
                  ref(cfg, "model.max_seq_length", m.max_seq_length), m.max_seq_length));
  {
    // The router chooses among the FFN experts and the zero-computation / null rows.
    const int64_t rows = moe.num_experts + moe.zero_compute_experts.total() + moe.null_experts;
    require(moe.num_experts == 0 || moe.top_k <= rows,
            fmt::format("{} exceeds {}; allowed: <= {}", ref(cfg, "moe.top_k", moe.top_k),
                        rows == moe.num_experts
                            ? ref(cfg, "moe.num_experts", moe.num_experts)
                            : fmt::format("the router's {} rows (moe.num_experts + "
                                          "zero_compute_experts + null_experts)", rows),
                        rows));
  }
  if (p.tensor > 1) {
    for (auto [key, value] : {std::pair{"model.num_attention_heads", m.num_attention_heads},
                              std::pair{"model.ffn_hidden_size", m.ffn_hidden_size},
                              std::pair{"model.vocab_size", m.vocab_size}})
      require(value % p.tensor == 0,
              fmt::format("{} is not divisible by {}{}", ref(cfg, key, value),
                          ref(cfg, "parallel.tensor", p.tensor),
                          std::string(key) == "model.vocab_size"
                              ? " (the embedding and LM head are split by vocabulary rows; pad "
                                "the vocabulary, as Megatron pads to a multiple of 128 x TP)"
                              : ""));
    // kv heads split over TP, or each shared by TP / kv ranks (GQA replication).
    require(m.num_query_groups % p.tensor == 0 || p.tensor % m.num_query_groups == 0,
            fmt::format("{} and {}: one must divide the other (kv heads are split over the TP "
                        "ranks, or replicated on TP / kv_heads of them)",
                        ref(cfg, "model.num_query_groups", m.num_query_groups),
                        ref(cfg, "parallel.tensor", p.tensor)));
    require(p.sequence_parallel,
            fmt::format("{} needs parallel.sequence_parallel: true (Origami runs tensor "
                        "parallelism with sequence parallelism: norms, residuals and the MoE layer "
                        "work on each rank's share of the tokens); found {}",
                        ref(cfg, "parallel.tensor", p.tensor),
                        ref(cfg, "parallel.sequence_parallel", "false")));
    const int64_t rows = t.micro_batch_size * t.seq_length / p.context;
    require(rows % p.tensor == 0,
            fmt::format("{} x {} / {} = {} tokens per rank and micro-batch is not divisible by {} "
                        "(sequence parallelism splits them evenly)",
                        ref(cfg, "training.micro_batch_size", t.micro_batch_size),
                        ref(cfg, "training.seq_length", t.seq_length),
                        ref(cfg, "parallel.context", p.context), rows,
                        ref(cfg, "parallel.tensor", p.tensor)));
  }
  require(moe.expert_ffn_hidden_size % p.expert_tensor == 0,
          fmt::format("{} is not divisible by {}",
                      ref(cfg, "moe.expert_ffn_hidden_size", moe.expert_ffn_hidden_size),
                      ref(cfg, "parallel.expert_tensor", p.expert_tensor)));
  if (p.context > 1)  // each CP rank takes two mirrored chunks of every sequence (causal balance)
    require(
        t.seq_length % product({2, p.context}) == 0,
        fmt::format("{} is not divisible by 2 × {}", ref(cfg, "training.seq_length", t.seq_length),
                    ref(cfg, "parallel.context", p.context)));

  // Training and optimizer.
  require(o.min_lr <= o.lr,
          fmt::format("{} exceeds {}; allowed: <= {}", ref(cfg, "optimizer.min_lr", o.min_lr),
                      ref(cfg, "optimizer.lr", o.lr), o.lr));
  require(t.eval_interval == 0 || (cfg.data.split.size() == 3 && cfg.data.split[1] > 0),
          fmt::format("{} needs a validation split, but data.split[1] is 0 ({}); set a positive "
                      "valid weight or eval_interval: 0",
                      ref(cfg, "training.eval_interval", t.eval_interval),
                      cfg.origin.contains("data.split") ? cfg.origin.at("data.split") : "default"));

  if (moe.num_experts > 0) validate_router(cfg, require);
  validate_variants(cfg, require);
  if (moe.fssdp.enabled) validate_fssdp(cfg, world_size, require);


  if (problems.empty()) return;
  std::string msg = fmt::format("{}: config is not valid for {} rank(s):",
                                cfg.source.empty() ? "<embedded default>" : cfg.source, world_size);
  for (const auto& problem : problems) msg += "\n  - " + problem;
  throw Error(msg);
}

}  // namespace origami
