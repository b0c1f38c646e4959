// Text only: every figure comes from the Plan; nothing is computed here but shares and units.
#include "plan/plan_report.h"

#include <fmt/format.h>

#include <map>

#include "base/logging.h"
#include "comm/parallel_layout.h"

namespace origami {
namespace {

double mib(double bytes) { return bytes / double(1 << 20); }

std::string human_bytes(double b) {
  if (b >= 1e9) return fmt::format("{:.2f} GB", b / 1e9);
  if (b >= 1e6) return fmt::format("{:.2f} MB", b / 1e6);
  if (b >= 1e3) return fmt::format("{:.1f} kB", b / 1e3);
  return fmt::format("{:.0f} B", b);
}

}  // namespace

std::string plan_table(const Plan& plan, size_t top) {
  std::string out = fmt::format(
      "{:>4}  {:<52} {:>11} {:>11} {:>12} {:>8} {:>6} {:>7}\n", "rank", "layout",
      "memory/rank", "ms/step", "tokens/s", "compute", "comm", "bubble");
  for (size_t i = 0; i < plan.ranked.size() && i < top; ++i) {
    const auto& [l, p] = plan.ranked[i];
    const double t = p.step_ms;
    out += fmt::format("{:>4}  {:<52} {:>11} {:>11.2f} {:>12.0f} {:>7.1f}% {:>5.1f}% {:>6.1f}%\n",
                       i + 1, describe_layout(l), format_bytes(p.memory_bytes), t, p.tokens_per_s,
                       100 * p.compute_ms / t, 100 * p.comm_ms / t, 100 * p.bubble_ms / t);
  }
  return out;
}

std::string rejected_table(const Plan& plan, size_t top) {
  if (plan.too_large.empty()) return "";
  std::string out = fmt::format("{} valid layouts do not fit {} per rank, e.g.:\n",
                                plan.too_large.size(), format_bytes(plan.device_bytes));
  for (size_t i = 0; i < plan.too_large.size() && i < top; ++i) {
    const TooLarge& r = plan.too_large[i];
    out += fmt::format("      {:<52} needs {} on stage {} ({} over)\n", describe_layout(r.layout),
                       format_bytes(r.memory_bytes), r.stage,
                       format_bytes(r.memory_bytes - plan.device_bytes));
  }
  return out;
}

std::string explain_layout(const Config& base, const Plan& plan, const RankedLayout& r,
                           const ClusterSpec& cluster) {
  const auto& [l, p] = r;
  const int world = plan.world;
  std::string out = fmt::format("why {} on {} ranks of {} ({} per node):\n", describe_layout(l),
                                world, cluster.name, cluster.ranks_per_node);
  out += fmt::format("  step {:.2f} ms = compute {:.2f} (optimizer {:.2f}) + exposed "
                     "communication {:.2f} + pipeline bubble {:.2f}; {:.0f} tokens/s\n",
                     p.step_ms, p.compute_ms, p.optimizer_ms, p.comm_ms, p.bubble_ms,
                     p.tokens_per_s);
  out += "  compute per step, one rank of the slowest stage:";
  for (const auto& [kind, ms] : p.compute_terms_ms)
    if (ms > 0) out += fmt::format(" {} {:.2f}", kind, ms);
  out += " ms\n";
  if (l.pp > 1)
    out += fmt::format("  pipeline: {} micro-batches x {} chunks; up to {:.0f}% of a stage's backward "
                       "passes replay their forward (another micro-batch's forward ran in "
                       "between)\n",
                       l.micro_batches, l.v, 100 * p.replay_share);
  out += fmt::format("  memory per rank {} (stage {}) of {} per device\n",
                     format_bytes(p.memory_bytes), p.memory_stage,
                     format_bytes(cluster.device_memory_gib * double(1 << 30)));
  out += "  communication per step, one rank of the slowest stage (largest first):\n";
  out += fmt::format("    {:<14} {:>5} {:<7} {:>10} {:>8} {:>10} {:>9}  {}\n", "group", "size",
                     "link", "GB/s", "calls", "sent", "ms", "what");
  for (const CommTerm& t : p.terms)
    out += fmt::format("    {:<14} {:>5} {:<7} {:>10.1f} {:>8.4g} {:>10} {:>9.3f}  {}\n", t.group,
                       t.group_size, t.spans_nodes ? "inter" : "intra", t.bandwidth_gbps,
                       t.calls, human_bytes(t.bytes), t.ms, t.what);
  // The groups the layout keeps in one node or spreads, from the rank order.
  const ParallelLayout layout = ParallelLayout::from_config(apply_layout(base, l).parallel, world);
  out += "  groups of rank 0 (ranks fill nodes in order, TP fastest, then CP, DP; ETP, EP, EDP):\n";
  for (auto [g, name] : {std::pair{ParallelLayout::Group::tp, "tp"},
                         std::pair{ParallelLayout::Group::cp, "cp"},
                         std::pair{ParallelLayout::Group::dp_cp, "dp_cp"},
                         std::pair{ParallelLayout::Group::ep, "ep"},
                         std::pair{ParallelLayout::Group::etp, "etp"},
                         std::pair{ParallelLayout::Group::edp, "edp"},
                         std::pair{ParallelLayout::Group::pp, "pp"}}) {
    const auto members = layout.group(g, 0);
    if (members.size() <= 1) continue;
    out += fmt::format("    {:<6} {} ranks, {} (ranks {}..{})\n", name, members.size(),
                       group_spans_nodes(members, cluster.ranks_per_node) ? "spans nodes"
                                                                          : "inside one node",
                       members.front(), members.back());
  }
  // The alternatives: per dimension, the fastest fitting layout at every other value.
  out += "  the best layout at other values of each dimension (ms/step, vs this one):\n";
  const std::pair<const char*, int Layout::*> dims[] = {
      {"TP", &Layout::tp}, {"CP", &Layout::cp}, {"PP", &Layout::pp}, {"v", &Layout::v},
      {"EP", &Layout::ep}, {"ETP", &Layout::etp}};
  for (const auto& [name, field] : dims) {
    std::map<int, const RankedLayout*> best;
    for (const RankedLayout& c : plan.ranked)
      if (c.layout.*field != l.*field && !best.contains(c.layout.*field))
        best[c.layout.*field] = &c;
    for (const auto& [value, c] : best)
      out += fmt::format("    {}{:<3} {:<52} {:>10.2f} ms ({:+.1f}%)\n", name, value,
                         describe_layout(c->layout), c->prediction.step_ms,
                         100 * (c->prediction.step_ms / p.step_ms - 1));
  }
  return out;
}

std::string overlay_text(const std::vector<std::string>& assignments) {
  std::string out;
  for (const auto& a : assignments) out += "--set " + a + "\n";
  return out;
}

std::string plan_csv(const Plan& plan) {
  std::string out =
      "rank,tp,cp,pp,v,ep,etp,dp,edp,zero,recompute,micro_batch_size,micro_batches,memory_mib,"
      "step_ms,compute_ms,comm_ms,bubble_ms,tokens_per_s,collectives";
  for (const char* kind : kComputeKinds) out += fmt::format(",{}_ms", kind);
  out += ",overlay\n";
  for (size_t i = 0; i < plan.ranked.size(); ++i) {
    const auto& [l, p] = plan.ranked[i];
    std::string overlay;
    for (const auto& a : layout_assignments(l)) overlay += (overlay.empty() ? "" : " ") + a;
    double collectives = 0;  // per step, every group's calls (the terms --explain lists)
    for (const auto& t : p.terms) collectives += t.calls;
    out += fmt::format("{},{},{},{},{},{},{},{},{},{},{},{},{},{:.3f},{:.4f},{:.4f},{:.4f},{:.4f},"
                       "{:.1f},{:.2f}",
                       i + 1, l.tp, l.cp, l.pp, l.v, l.ep, l.etp, l.dp, l.edp, int(l.zero),
                       l.recompute, l.micro_batch_size, l.micro_batches, mib(p.memory_bytes),
                       p.step_ms, p.compute_ms, p.comm_ms, p.bubble_ms, p.tokens_per_s, collectives);
    for (const auto& [kind, ms] : p.compute_terms_ms) out += fmt::format(",{:.4f}", ms);
    out += "," + overlay + "\n";
  }
  return out;
}

}  // namespace origami
