// The config key table (see config_schema.h): one row per key with its type and allowed range.
// Rows are built by a macro from the struct path, so the YAML key is spelled exactly like the
// C++ field ("moe.router.z_loss_coeff" reads into cfg.moe.router.z_loss_coeff) and cannot drift.
#include "config/config_schema.h"

#include <fmt/format.h>

#include <algorithm>
#include <limits>
#include <map>

#include "base/error.h"
#include "config/yaml_values.h"

namespace origami {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

// An interval of allowed values; `text` says it the way an error message should.
struct Bound {
  double lo = -kInf, hi = kInf;
  bool lo_open = false, hi_open = false;
  bool contains(double v) const {
    return (lo_open ? v > lo : v >= lo) && (hi_open ? v < hi : v <= hi);
  }
  std::string text() const {
    std::string lo_s = fmt::format("{} {}", lo_open ? ">" : ">=", lo);
    std::string hi_s = fmt::format("{} {}", hi_open ? "<" : "<=", hi);
    if (hi == kInf) return lo_s;
    if (lo == -kInf) return hi_s;
    return lo_s + " and " + hi_s;
  }
};
Bound at_least(double lo) { return {.lo = lo}; }
Bound above(double lo) { return {.lo = lo, .lo_open = true}; }
Bound unit_interval_open_above() { return {.lo = 0, .hi = 1, .hi_open = true}; }
Bound unit_interval() { return {.lo = 0, .hi = 1}; }

template <typename T>
void check_bound(T v, const Bound& b, const std::string& where, const std::string& key) {
  check(b.contains(double(v)), "{}: {}: {} is out of range; allowed: {}", where, key, v, b.text());
}

// Reads a field through the accessor of a mutable Config; writes go through the same accessor.
template <typename Get>
auto& field_of(const Config& cfg, const Get& get) {
  return get(const_cast<Config&>(cfg));
}

template <typename Get>
ConfigField int_field(std::string key, Get get, Bound b) {
  return {key, "integer " + b.text(),
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            int64_t v = read_int(n, w, key);
            check_bound(v, b, w, key);
            get(c) = v;
          },
          [=](const Config& c) { return std::to_string(field_of(c, get)); }};
}

template <typename Get>
ConfigField uint_field(std::string key, Get get) {
  return {key, "integer >= 0",
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            get(c) = read_uint(n, w, key);
          },
          [=](const Config& c) { return std::to_string(field_of(c, get)); }};
}

template <typename Get>
ConfigField number_field(std::string key, Get get, Bound b) {
  return {key, "number " + b.text(),
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            double v = read_number(n, w, key);
            check_bound(v, b, w, key);
            get(c) = v;
          },
          [=](const Config& c) { return yaml_number(field_of(c, get)); }};
}

// A number or null (capacity_factor: null = dropless).
template <typename Get>
ConfigField optional_number_field(std::string key, Get get, Bound b) {
  return {key, "null or number " + b.text(),
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            if (n.IsNull()) {
              get(c).reset();
              return;
            }
            double v = read_number(n, w, key);
            check_bound(v, b, w, key);
            get(c) = v;
          },
          [=](const Config& c) {
            const auto& v = field_of(c, get);
            return v ? yaml_number(*v) : std::string("null");
          }};
}

template <typename Get>
ConfigField bool_field(std::string key, Get get) {
  return {key, "true or false",
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            get(c) = read_bool(n, w, key);
          },
          [=](const Config& c) { return std::string(field_of(c, get) ? "true" : "false"); }};
}

template <typename Get>
ConfigField string_field(std::string key, Get get) {
  return {key, "string",
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            get(c) = read_string(n, w, key);
          },
          [=](const Config& c) { return yaml_quote(field_of(c, get)); }};
}

std::string join(const std::vector<std::string>& items, const char* sep = ", ") {
  std::string out;
  for (const auto& s : items) out += (out.empty() ? "" : sep) + s;
  return out;
}

// One of `allowed`; values in `planned` are recognised and refused with "not implemented yet".
template <typename Get>
ConfigField enum_field(std::string key, Get get, std::vector<std::string> allowed,
                       std::vector<std::string> planned = {}) {
  return {key, "one of " + join(allowed, "|"),
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            std::string v = read_string(n, w, key);
            if (std::find(allowed.begin(), allowed.end(), v) != allowed.end()) {
              get(c) = v;
              return;
            }
            if (std::find(planned.begin(), planned.end(), v) != planned.end())
              fail("{}: {}: '{}' is not implemented yet; allowed: {}", w, key, v, join(allowed));
            std::string hint;
            for (const auto& a : allowed)
              if (edit_distance(v, a) <= 2) hint = fmt::format(" (did you mean '{}'?)", a);
            fail("{}: {}: '{}' is not an allowed value{}; allowed: {}", w, key, v, hint,
                 join(allowed));
          },
          // Allowed values are plain identifiers, so they need no quotes.
          [=](const Config& c) { return field_of(c, get); }};
}

// data.split: train/valid/test document weights.
ConfigField split_field() {
  const std::string key = "data.split";
  return {key, "list of 3 numbers >= 0 with a positive sum",
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            check(n.IsSequence() && n.size() == 3,
                  "{}: {}: expected a list of 3 numbers [train, valid, test], found {}", w, key,
                  describe_node(n));
            std::vector<double> split;
            double sum = 0;
            for (size_t i = 0; i < 3; ++i) {
              std::string item = fmt::format("{}[{}]", key, i);
              double v = read_number(n[i], w, item);
              check(v >= 0, "{}: {}: {} is out of range; allowed: >= 0", w, item, v);
              split.push_back(v);
              sum += v;
            }
            check(sum > 0,
                  "{}: {}: the weights sum to 0; allowed: non-negative with a positive sum", w,
                  key);
            c.data.split = split;
          },
          [](const Config& c) {
            std::vector<std::string> items;
            for (double v : c.data.split) items.push_back(yaml_number(v));
            return "[" + join(items) + "]";
          }};
}

// moe.num_experts_per_layer: a list of counts >= 1 (empty or null: moe.num_experts everywhere).
ConfigField experts_per_layer_field() {
  const std::string key = "moe.num_experts_per_layer";
  return {key, "list of integers >= 1 (one per MoE layer), or []",
          [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin&) {
            std::vector<int64_t> counts;
            if (!n.IsNull()) {
              check(n.IsSequence(), "{}: {}: expected a list of expert counts, found {}", w, key,
                    describe_node(n));
              for (size_t i = 0; i < n.size(); ++i) {
                const std::string item = fmt::format("{}[{}]", key, i);
                const int64_t v = read_int(n[i], w, item);
                check(v >= 1, "{}: {}: {} is out of range; allowed: >= 1", w, item, v);
                counts.push_back(v);
              }
            }
            c.moe.num_experts_per_layer = counts;
          },
          [](const Config& c) {
            std::vector<std::string> items;
            for (int64_t v : c.moe.num_experts_per_layer) items.push_back(std::to_string(v));
            return "[" + join(items) + "]";
          }};
}

// data.blend: [{path, weight}], weight > 0 (normalised by the data layer).
ConfigField blend_field() {
  const std::string key = "data.blend";
  return {
      key, "list of {path: string, weight: number > 0}",
      [=](Config& c, const YAML::Node& n, const std::string& w, const ConfigOrigin& origin) {
        std::vector<BlendEntry> blend;
        if (!n.IsNull()) {
          check(n.IsSequence(), "{}: {}: expected a list of {{path, weight}} maps, found {}", w,
                key, describe_node(n));
          for (size_t i = 0; i < n.size(); ++i) {
            const YAML::Node& e = n[i];
            std::string item = fmt::format("{}[{}]", key, i);
            std::string at = origin.at(e.Mark(), w);
            check(e.IsMap(), "{}: {}: expected a map {{path, weight}}, found {}", at, item,
                  describe_node(e));
            BlendEntry entry;
            bool has_path = false;
            for (const auto& kv : e) {
              std::string kat = origin.at(kv.first.Mark(), at);
              check(kv.first.IsScalar(), "{}: {}: expected key names path and weight, found {}",
                    kat, item, describe_node(kv.first));
              const std::string& k = kv.first.Scalar();
              if (k == "path") {
                entry.path = read_string(kv.second, kat, item + ".path");
                has_path = true;
              } else if (k == "weight") {
                entry.weight = read_number(kv.second, kat, item + ".weight");
                check(entry.weight > 0, "{}: {}.weight: {} is out of range; allowed: > 0", kat,
                      item, entry.weight);
              } else {
                fail("{}: unknown key '{}.{}'; allowed keys in {}: path, weight", kat, item, k,
                     item);
              }
            }
            check(has_path && !entry.path.empty(),
                  "{}: {}.path: missing; each blend entry needs a dataset prefix (no .bin/.idx)",
                  at, item);
            blend.push_back(entry);
          }
        }
        c.data.blend = blend;
      },
      [](const Config& c) {
        std::vector<std::string> items;
        for (const auto& e : c.data.blend)
          items.push_back(
              fmt::format("{{path: {}, weight: {}}}", yaml_quote(e.path), yaml_number(e.weight)));
        return "[" + join(items) + "]";
      }};
}

// The accessor is written from the same path as the key, so the two cannot disagree.
// clang-format off
#define ORIGAMI_KEY(kind, path, ...) \
  kind(#path, [](Config& c) -> auto& { return c.path; } __VA_OPT__(,) __VA_ARGS__)
// clang-format on

// parallel.pipeline_schedule: an enum whose written value is the effective one (interleaved
// when left unset with virtual_pipeline > 1), so the effective config loads back unchanged.
ConfigField pipeline_schedule_field() {
  ConfigField f =
      ORIGAMI_KEY(enum_field, parallel.pipeline_schedule, {"1f1b", "interleaved", "gpipe"});
  f.write = [](const Config& c) -> std::string {
    return schedule_kind_name(pipeline_schedule_kind(c));
  };
  return f;
}

std::vector<ConfigField> build_schema() {
  const Bound positive_int = at_least(1), non_negative = at_least(0), positive = above(0);
  return {
      ORIGAMI_KEY(int_field, model.vocab_size, positive_int),
      ORIGAMI_KEY(int_field, model.hidden_size, positive_int),
      ORIGAMI_KEY(int_field, model.num_layers, positive_int),
      ORIGAMI_KEY(int_field, model.num_attention_heads, positive_int),
      ORIGAMI_KEY(int_field, model.num_query_groups, positive_int),
      ORIGAMI_KEY(int_field, model.ffn_hidden_size, positive_int),
      ORIGAMI_KEY(int_field, model.max_seq_length, positive_int),
      ORIGAMI_KEY(number_field, model.rope_theta, positive),
      ORIGAMI_KEY(number_field, model.norm_eps, positive),
      ORIGAMI_KEY(bool_field, model.tie_embeddings),
      ORIGAMI_KEY(number_field, model.init_std, positive),

      ORIGAMI_KEY(int_field, moe.num_experts, non_negative),
      ORIGAMI_KEY(int_field, moe.top_k, positive_int),
      ORIGAMI_KEY(int_field, moe.expert_ffn_hidden_size, positive_int),
      ORIGAMI_KEY(int_field, moe.shared_expert_ffn_hidden_size, non_negative),
      ORIGAMI_KEY(int_field, moe.layer_freq, positive_int),
      ORIGAMI_KEY(optional_number_field, moe.capacity_factor, positive),
      ORIGAMI_KEY(enum_field, moe.drop_policy, {"probs", "position"}),
      ORIGAMI_KEY(bool_field, moe.pad_to_capacity),
      ORIGAMI_KEY(number_field, moe.dropless_reserve, at_least(1)),
      ORIGAMI_KEY(enum_field, moe.router.score, {"softmax", "sigmoid"}),
      ORIGAMI_KEY(bool_field, moe.router.pre_softmax),
      ORIGAMI_KEY(bool_field, moe.router.renormalize),
      ORIGAMI_KEY(number_field, moe.router.scaling_factor, positive),
      ORIGAMI_KEY(int_field, moe.router.num_groups, non_negative),
      ORIGAMI_KEY(int_field, moe.router.group_topk, non_negative),
      ORIGAMI_KEY(bool_field, moe.router.expert_bias),
      ORIGAMI_KEY(number_field, moe.router.bias_update_rate, non_negative),
      ORIGAMI_KEY(enum_field, moe.router.load_balance,
                  {"none", "micro_batch", "sequence", "global_batch"}),
      ORIGAMI_KEY(number_field, moe.router.aux_loss_coeff, non_negative),
      ORIGAMI_KEY(number_field, moe.router.z_loss_coeff, non_negative),
      ORIGAMI_KEY(enum_field, moe.router.schedule.kind,
                  {"static", "dense_to_sparse", "topk_anneal"}),
      ORIGAMI_KEY(enum_field, moe.router.schedule.anneal, {"linear", "cosine", "exponential"}),
      ORIGAMI_KEY(int_field, moe.router.schedule.start_step, non_negative),
      ORIGAMI_KEY(int_field, moe.router.schedule.end_step, non_negative),
      ORIGAMI_KEY(number_field, moe.router.schedule.tau_start, positive),
      ORIGAMI_KEY(number_field, moe.router.schedule.tau_end, positive),
      ORIGAMI_KEY(number_field, moe.router.schedule.threshold, unit_interval_open_above()),
      ORIGAMI_KEY(bool_field, moe.router.schedule.gumbel_weights),
      ORIGAMI_KEY(int_field, moe.router.schedule.k_start, positive_int),
      ORIGAMI_KEY(int_field, moe.router.schedule.diversify.steps, non_negative),
      ORIGAMI_KEY(number_field, moe.router.schedule.diversify.mask_ratio, unit_interval()),
      ORIGAMI_KEY(number_field, moe.router.schedule.diversify.noise_std, non_negative),
      // Added after the schedule keys: existing configs and their key lists keep their order.
      ORIGAMI_KEY(bool_field, moe.router.freeze),
      ORIGAMI_KEY(bool_field, moe.router.gating_residual),
      ORIGAMI_KEY(enum_field, moe.router.kind, {"linear", "recurrent"}),
      ORIGAMI_KEY(int_field, moe.router.recurrent_dim, positive_int),
      ORIGAMI_KEY(bool_field, moe.fssdp.enabled),
      ORIGAMI_KEY(enum_field, moe.fssdp.placement, {"planned", "ep"}),
      ORIGAMI_KEY(int_field, moe.fssdp.max_replicas_per_rank, non_negative),
      ORIGAMI_KEY(int_field, moe.fssdp.load_window, positive_int),
      ORIGAMI_KEY(int_field, moe.fssdp.reshard_interval, non_negative),
      ORIGAMI_KEY(bool_field, moe.fssdp.rematerialize),
      ORIGAMI_KEY(int_field, moe.zero_compute_experts.zero, non_negative),
      ORIGAMI_KEY(int_field, moe.zero_compute_experts.copy, non_negative),
      ORIGAMI_KEY(int_field, moe.zero_compute_experts.constant, non_negative),
      ORIGAMI_KEY(number_field, moe.zero_compute_experts.balance_weight, non_negative),
      ORIGAMI_KEY(int_field, moe.null_experts, non_negative),
      ORIGAMI_KEY(bool_field, moe.residual),
      experts_per_layer_field(),

      ORIGAMI_KEY(int_field, parallel.tensor, positive_int),
      ORIGAMI_KEY(int_field, parallel.context, positive_int),
      ORIGAMI_KEY(int_field, parallel.pipeline, positive_int),
      ORIGAMI_KEY(int_field, parallel.virtual_pipeline, positive_int),
      pipeline_schedule_field(),
      ORIGAMI_KEY(int_field, parallel.pipeline_first_stage_layers, non_negative),
      ORIGAMI_KEY(int_field, parallel.pipeline_last_stage_layers, non_negative),
      ORIGAMI_KEY(int_field, parallel.expert, positive_int),
      ORIGAMI_KEY(int_field, parallel.expert_tensor, positive_int),
      ORIGAMI_KEY(bool_field, parallel.sequence_parallel),

      ORIGAMI_KEY(enum_field, training.backend, {"cpu", "cuda"}),
      ORIGAMI_KEY(int_field, training.micro_batch_size, positive_int),
      ORIGAMI_KEY(int_field, training.global_batch_size, positive_int),
      ORIGAMI_KEY(int_field, training.seq_length, positive_int),
      ORIGAMI_KEY(int_field, training.train_steps, positive_int),
      ORIGAMI_KEY(uint_field, training.seed),
      ORIGAMI_KEY(enum_field, training.precision, {"fp32", "bf16"}),
      ORIGAMI_KEY(enum_field, training.recompute, {"none", "selective", "full"}),
      ORIGAMI_KEY(int_field, training.logits_chunk_tokens, non_negative),
      ORIGAMI_KEY(int_field, training.eval_interval, non_negative),
      ORIGAMI_KEY(int_field, training.eval_steps, positive_int),
      ORIGAMI_KEY(number_field, training.collective_timeout_s, non_negative),

      ORIGAMI_KEY(number_field, optimizer.lr, non_negative),
      ORIGAMI_KEY(number_field, optimizer.min_lr, non_negative),
      ORIGAMI_KEY(int_field, optimizer.warmup_steps, non_negative),
      ORIGAMI_KEY(enum_field, optimizer.decay, {"cosine", "linear", "constant"}),
      ORIGAMI_KEY(int_field, optimizer.decay_steps, non_negative),
      ORIGAMI_KEY(number_field, optimizer.weight_decay, non_negative),
      ORIGAMI_KEY(number_field, optimizer.beta1, unit_interval_open_above()),
      ORIGAMI_KEY(number_field, optimizer.beta2, unit_interval_open_above()),
      ORIGAMI_KEY(number_field, optimizer.eps, positive),
      ORIGAMI_KEY(number_field, optimizer.grad_clip, non_negative),
      ORIGAMI_KEY(bool_field, optimizer.distributed),

      blend_field(),
      split_field(),
      ORIGAMI_KEY(string_field, data.cache_dir),
      ORIGAMI_KEY(bool_field, data.eod_mask_loss),
      ORIGAMI_KEY(enum_field, data.tokenizer.kind, {"sentencepiece", "byte"}),
      ORIGAMI_KEY(string_field, data.tokenizer.model),

      ORIGAMI_KEY(string_field, checkpoint.dir),
      ORIGAMI_KEY(int_field, checkpoint.save_interval, non_negative),
      ORIGAMI_KEY(int_field, checkpoint.keep_last, positive_int),
      ORIGAMI_KEY(string_field, checkpoint.load),

      ORIGAMI_KEY(string_field, logging.dir),
      ORIGAMI_KEY(int_field, logging.interval, positive_int),
      ORIGAMI_KEY(enum_field, logging.level, {"trace", "debug", "info", "warn", "error"}),
      ORIGAMI_KEY(int_field, logging.expert_load_interval, non_negative),
      ORIGAMI_KEY(int_field, logging.expert_report_interval, non_negative),
      ORIGAMI_KEY(bool_field, logging.profile),
  };
}
#undef ORIGAMI_KEY

}  // namespace

std::string ConfigOrigin::at(const YAML::Mark& mark, const std::string& fallback) const {
  if (is_override) return source;
  if (mark.is_null() || mark.line < 0) return fallback.empty() ? source : fallback;
  return fmt::format("{}:{}", source, mark.line + 1);
}

const std::vector<ConfigField>& config_schema() {
  static const std::vector<ConfigField> schema = build_schema();
  return schema;
}

const ConfigField* find_field(const std::string& key) {
  for (const auto& f : config_schema())
    if (f.key == key) return &f;
  return nullptr;
}

bool is_config_section(const std::string& prefix) {
  if (prefix.empty()) return true;
  for (const auto& f : config_schema())
    if (f.key.starts_with(prefix + ".")) return true;
  return false;
}

std::vector<std::string> section_children(const std::string& prefix) {
  std::vector<std::string> out;
  const std::string head = prefix.empty() ? "" : prefix + ".";
  for (const auto& f : config_schema()) {
    if (!f.key.starts_with(head)) continue;
    std::string rest = f.key.substr(head.size());
    std::string child = rest.substr(0, rest.find('.'));
    if (std::find(out.begin(), out.end(), child) == out.end()) out.push_back(child);
  }
  return out;
}

std::vector<std::string> config_keys() {
  std::vector<std::string> keys;
  for (const auto& f : config_schema()) keys.push_back(f.key);
  return keys;
}

}  // namespace origami
