// Enumeration: nested loops over the divisors of the world (TP, CP, PP tile it; EP x ETP tile a
// stage), the layer split (v), the optimizer (ZeRO-1 or not), recomputation and the micro-batch
// sizes that divide each data-parallel rank's share of the global batch. validate() on the
// candidate config decides; the pre-checks only mirror its divisibility rules to keep a 512-rank
// search short.
#include "plan/layout_space.h"

#include <fmt/format.h>

#include "base/error.h"

namespace origami {
namespace {

std::vector<int> divisors(int64_t n) {
  std::vector<int> out;
  for (int64_t d = 1; d <= n; ++d)
    if (n % d == 0) out.push_back(int(d));
  return out;
}

}  // namespace

std::vector<std::string> layout_assignments(const Layout& l) {
  return {fmt::format("parallel.tensor={}", l.tp),
          fmt::format("parallel.context={}", l.cp),
          fmt::format("parallel.pipeline={}", l.pp),
          fmt::format("parallel.virtual_pipeline={}", l.v),
          fmt::format("parallel.pipeline_schedule={}", l.v > 1 ? "interleaved" : "1f1b"),
          fmt::format("parallel.expert={}", l.ep),
          fmt::format("parallel.expert_tensor={}", l.etp),
          fmt::format("parallel.sequence_parallel={}", l.tp > 1 ? "true" : "false"),
          fmt::format("optimizer.distributed={}", l.zero ? "true" : "false"),
          fmt::format("training.recompute={}", l.recompute),
          fmt::format("training.micro_batch_size={}", l.micro_batch_size)};
}

// The same settings as layout_assignments() without parsing YAML eleven times per candidate (a
// 512-rank search tries a few hundred thousand); a unit test checks both give the same Config.
void set_layout(Config& cfg, const Layout& l) {
  auto& p = cfg.parallel;
  p.tensor = l.tp, p.context = l.cp, p.pipeline = l.pp, p.virtual_pipeline = l.v;
  p.pipeline_schedule = l.v > 1 ? "interleaved" : "1f1b";
  p.expert = l.ep, p.expert_tensor = l.etp, p.sequence_parallel = l.tp > 1;
  cfg.optimizer.distributed = l.zero;
  cfg.training.recompute = l.recompute;
  cfg.training.micro_batch_size = l.micro_batch_size;
  cfg.origin["parallel.pipeline_schedule"] = "origami-plan";
}

Config apply_layout(const Config& base, const Layout& l) {
  Config cfg = base;
  for (const auto& a : layout_assignments(l)) apply_override(cfg, a);
  return cfg;
}

Layout layout_of(const Config& cfg, int world) {
  const auto& p = cfg.parallel;
  Layout l{.tp = int(p.tensor), .cp = int(p.context), .pp = int(p.pipeline),
           .v = int(p.virtual_pipeline), .ep = int(p.expert), .etp = int(p.expert_tensor),
           .zero = cfg.optimizer.distributed, .recompute = cfg.training.recompute,
           .micro_batch_size = cfg.training.micro_batch_size};
  const int stage = world / l.pp;
  l.dp = stage / (l.tp * l.cp);
  l.edp = stage / (l.ep * l.etp);
  l.micro_batches = cfg.training.global_batch_size / (l.micro_batch_size * l.dp);
  return l;
}

std::string describe_layout(const Layout& l) {
  return fmt::format("TP{} CP{} PP{}{} EP{} ETP{} (DP{} EDP{}) mbs{} x{}{} rc={}", l.tp, l.cp,
                     l.pp, l.v > 1 ? fmt::format("v{}", l.v) : "", l.ep, l.etp, l.dp, l.edp,
                     l.micro_batch_size, l.micro_batches, l.zero ? " zero1" : "", l.recompute);
}

LayoutSpace enumerate_layouts(const Config& base, int world) {
  check(world >= 1, "--world {}: need at least 1 rank", world);
  const auto& m = base.model;
  const auto& moe = base.moe;
  const int64_t gbs = base.training.global_batch_size;
  LayoutSpace space;
  Config trial = base;
  auto refuse = [&](const std::string& why) {
    ++space.refused;
    if (space.example_refusal.empty()) space.example_refusal = why;
  };
  for (int tp : divisors(world)) {
    if (m.num_attention_heads % tp || m.vocab_size % tp) continue;  // validate's TP rules
    for (int cp : divisors(world / tp)) {
      if (base.training.seq_length % (2 * cp) && cp > 1) continue;
      for (int pp : divisors(world / (tp * cp))) {
        if (pp > m.num_layers) continue;
        const int stage = world / pp, dp = stage / (tp * cp);
        if (gbs % dp) continue;
        for (int v : divisors(m.num_layers)) {
          if ((pp == 1 && v > 1) || int64_t(pp) * v > m.num_layers) continue;
          for (int ep : divisors(stage)) {
            if (moe.num_experts > 0 ? moe.num_experts % ep : ep > 1) continue;
            for (int etp : divisors(stage / ep)) {
              if (moe.num_experts > 0 ? moe.expert_ffn_hidden_size % etp : etp > 1) continue;
              for (int64_t mbs : divisors(gbs / dp)) {
                if (tp > 1 && (mbs * base.training.seq_length / cp) % tp) continue;
                for (bool zero : {false, true}) {
                  for (const char* rc : {"none", "selective", "full"}) {
                    Layout l{.tp = tp, .cp = cp, .pp = pp, .v = v, .ep = ep, .etp = etp,
                             .zero = zero, .recompute = rc, .micro_batch_size = mbs, .dp = dp,
                             .edp = stage / (ep * etp), .micro_batches = gbs / (mbs * dp)};
                    ++space.candidates;
                    try {
                      set_layout(trial, l);
                      validate(trial, world);
                      space.valid.push_back(l);
                    } catch (const Error& e) {
                      refuse(e.what());
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
  return space;
}

}  // namespace origami
