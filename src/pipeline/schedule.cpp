// The schedule kinds, the shape rules and each kind's compute order (which forward and backward
// a rank runs next). Megatron's rules, restated: 1F1B warmup min(pp - rank - 1, m); interleaved
// warmup (pp - rank - 1) * 2 + (v - 1) * g over get_schedule_table's (micro-batch, chunk) order,
// backward chunk v - 1 - chunk. Sends and receives are placed by schedule_comm.cpp.
#include "pipeline/schedule.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "base/error.h"

namespace origami {

ScheduleKind parse_schedule_kind(const std::string& name) {
  if (name == "gpipe") return ScheduleKind::gpipe;
  if (name == "1f1b") return ScheduleKind::one_f_one_b;
  if (name == "interleaved") return ScheduleKind::interleaved;
  fail("parallel.pipeline_schedule: '{}'; allowed: 1f1b, interleaved, gpipe", name);
}

const char* schedule_kind_name(ScheduleKind kind) {
  switch (kind) {
    case ScheduleKind::gpipe:
      return "gpipe";
    case ScheduleKind::one_f_one_b:
      return "1f1b";
    case ScheduleKind::interleaved:
      return "interleaved";
  }
  return "?";
}

int group_size(const ScheduleShape& shape) { return shape.group > 0 ? shape.group : shape.pp; }

namespace {

bool interleaved_runs(int pp, int g, int m) {
  return g >= pp && m >= g && (m % g == 0 || m % g >= pp);
}

// "4 or 8": the micro-batch counts closest to m below and above that the interleaved rule allows.
std::string nearest_interleaved_counts(int pp, int g, int m) {
  int below = 0, above = 0;
  for (int c = m - 1; c >= 1 && below == 0; --c)
    if (interleaved_runs(pp, g, c)) below = c;
  for (int c = m + 1; above == 0; ++c)
    if (interleaved_runs(pp, g, c)) above = c;
  return below > 0 ? fmt::format("{} or {}", below, above) : fmt::format("{}", above);
}

constexpr const char* kMicroBatchCount =
    "the micro-batch count is training.global_batch_size / (training.micro_batch_size × "
    "data-parallel size)";

}  // namespace

void check_schedule_shape(const ScheduleShape& s) {
  check(s.pp >= 1, "parallel.pipeline={} must be at least 1", s.pp);
  check(s.v >= 1, "parallel.virtual_pipeline={} must be at least 1", s.v);
  check(s.m >= 1, "the pipeline needs at least one micro-batch per step, got {}; {}", s.m,
        kMicroBatchCount);
  const char* kind = schedule_kind_name(s.kind);
  if (s.kind == ScheduleKind::one_f_one_b)
    check(
        s.v == 1,
        "parallel.pipeline_schedule={} runs one chunk per rank, but parallel.virtual_pipeline={}; "
        "allowed: interleaved (or gpipe) with virtual_pipeline > 1, 1f1b with 1",
        kind, s.v);
  if (s.kind != ScheduleKind::interleaved) return;
  check(s.v > 1,
        "parallel.pipeline_schedule={} needs parallel.virtual_pipeline > 1 (got {}); allowed: 1f1b "
        "or gpipe with one chunk per rank",
        kind, s.v);
  const int g = group_size(s);
  check(g >= s.pp,
        "interleaved schedule: the micro-batch group size {} (micro-batches per chunk in a row) is "
        "smaller than parallel.pipeline={}; allowed: {} or more (default: the pipeline size)",
        g, s.pp, s.pp);
  check(s.m >= g,
        "parallel.virtual_pipeline={} (interleaved) with parallel.pipeline={} cannot run {} "
        "micro-batch(es) per step: it needs at least the group size {}; {}; nearest that work: {}",
        s.v, s.pp, s.m, g, kMicroBatchCount, nearest_interleaved_counts(s.pp, g, s.m));
  check(s.m % g == 0 || s.m % g >= s.pp,
        "parallel.virtual_pipeline={} (interleaved) with parallel.pipeline={} cannot run {} "
        "micro-batches per step: {} % {} = {} leaves a last group smaller than the pipeline "
        "(the rule: m % g == 0 or m % g >= pp, g = {} micro-batches per chunk in a row); {}; "
        "nearest that work: {}",
        s.v, s.pp, s.m, s.m, g, s.m % g, g, kMicroBatchCount,
        nearest_interleaved_counts(s.pp, g, s.m));
}

bool is_compute(const Action& a) { return a.op == Action::forward || a.op == Action::backward; }
bool is_send(const Action& a) {
  return a.op == Action::send_activation || a.op == Action::send_grad;
}

std::string to_string(const Action& a) {
  const std::string id = fmt::format("{}c{}", a.micro_batch, a.chunk);
  switch (a.op) {
    case Action::forward:
      return "F" + id;
    case Action::backward:
      return "B" + id;
    case Action::send_activation:
      return fmt::format("SEND_F{}->{}", id, a.peer);
    case Action::recv_activation:
      return fmt::format("RECV_F{}<-{}", id, a.peer);
    case Action::send_grad:
      return fmt::format("SEND_B{}->{}", id, a.peer);
    case Action::recv_grad:
      return fmt::format("RECV_B{}<-{}", id, a.peer);
  }
  return "?";
}

std::string to_string(const std::vector<Action>& actions) {
  std::string out;
  for (const Action& a : actions) {
    if (!out.empty()) out += ' ';
    out += to_string(a);
  }
  return out;
}

std::vector<Action> parse_actions(const std::string& text) {
  std::vector<Action> out;
  std::istringstream words(text);
  for (std::string w; words >> w;) {
    Action a{Action::forward, -1, -1, -1};
    char kind = 0;
    int used = 0;
    bool ok = false;
    if (w.rfind("SEND_", 0) == 0 || w.rfind("RECV_", 0) == 0) {
      const bool send = w[0] == 'S';
      ok = std::sscanf(w.c_str() + 5, send ? "%c%dc%d->%d%n" : "%c%dc%d<-%d%n", &kind,
                       &a.micro_batch, &a.chunk, &a.peer, &used) == 4 &&
           (kind == 'F' || kind == 'B');
      if (kind == 'F') a.op = send ? Action::send_activation : Action::recv_activation;
      if (kind == 'B') a.op = send ? Action::send_grad : Action::recv_grad;
      used += 5;
    } else {
      ok = std::sscanf(w.c_str(), "%c%dc%d%n", &kind, &a.micro_batch, &a.chunk, &used) == 3 &&
           (kind == 'F' || kind == 'B');
      a.op = kind == 'B' ? Action::backward : Action::forward;
    }
    check(ok && used == static_cast<int>(w.size()),
          "pipeline action '{}': expected F<mb>c<chunk>, B<mb>c<chunk>, SEND_F / SEND_B "
          "<mb>c<chunk>-><peer> or RECV_F / RECV_B <mb>c<chunk><-<peer>",
          w);
    out.push_back(a);
  }
  return out;
}

namespace {

Action F(int mb, int chunk) { return {Action::forward, mb, chunk, -1}; }
Action B(int mb, int chunk) { return {Action::backward, mb, chunk, -1}; }

// All forwards, chunk by chunk (the later chunk needs the earlier one's outputs), then all
// backwards from the last chunk down, micro-batches ascending.
std::vector<Action> gpipe_order(const ScheduleShape& s) {
  std::vector<Action> out;
  for (int c = 0; c < s.v; ++c)
    for (int mb = 0; mb < s.m; ++mb) out.push_back(F(mb, c));
  for (int c = s.v - 1; c >= 0; --c)
    for (int mb = 0; mb < s.m; ++mb) out.push_back(B(mb, c));
  return out;
}

std::vector<Action> one_f_one_b_order(const ScheduleShape& s, int rank) {
  const int warmup = std::min(s.pp - rank - 1, s.m);
  std::vector<Action> out;
  for (int mb = 0; mb < warmup; ++mb) out.push_back(F(mb, 0));
  for (int i = 0; i < s.m - warmup; ++i) {
    out.push_back(F(warmup + i, 0));
    out.push_back(B(i, 0));
  }
  for (int mb = s.m - warmup; mb < s.m; ++mb) out.push_back(B(mb, 0));
  return out;
}

struct MicroBatchChunk {
  int mb, chunk;
};

// Megatron's get_schedule_table: within each group of g micro-batches, chunk 0 on all of them,
// then chunk 1, ...; the last group takes whatever micro-batches are left.
std::vector<MicroBatchChunk> interleaved_table(int m, int v, int g) {
  std::vector<MicroBatchChunk> table;
  for (int first = 0; first < m; first += g) {
    const int end = first + g >= m ? m : first + g;
    for (int c = 0; c < v; ++c)
      for (int mb = first; mb < end; ++mb) table.push_back({mb, c});
  }
  return table;
}

std::vector<Action> interleaved_order(const ScheduleShape& s, int rank) {
  const int g = group_size(s);
  const std::vector<MicroBatchChunk> table = interleaved_table(s.m, s.v, g);
  const int total = s.m * s.v;
  const int warmup = std::min((s.pp - rank - 1) * 2 + (s.v - 1) * g, total);
  auto fwd = [&](int k) { return F(table[k].mb, table[k].chunk); };
  auto bwd = [&](int k) { return B(table[k].mb, s.v - 1 - table[k].chunk); };
  std::vector<Action> out;
  for (int k = 0; k < warmup; ++k) out.push_back(fwd(k));
  for (int k = 0; k < total - warmup; ++k) {
    out.push_back(fwd(warmup + k));
    out.push_back(bwd(k));
  }
  for (int k = total - warmup; k < total; ++k) out.push_back(bwd(k));
  return out;
}

}  // namespace

std::vector<Action> compute_order(const ScheduleShape& shape, int rank) {
  check_schedule_shape(shape);
  check(rank >= 0 && rank < shape.pp, "pipeline rank {} is outside parallel.pipeline={}", rank,
        shape.pp);
  switch (shape.kind) {
    case ScheduleKind::gpipe:
      return gpipe_order(shape);
    case ScheduleKind::one_f_one_b:
      return one_f_one_b_order(shape, rank);
    case ScheduleKind::interleaved:
      return interleaved_order(shape, rank);
  }
  return {};
}

int max_in_flight(const std::vector<Action>& actions) {
  int in_flight = 0, peak = 0;
  for (const Action& a : actions) {
    if (a.op == Action::forward) peak = std::max(peak, ++in_flight);
    if (a.op == Action::backward) --in_flight;
  }
  return peak;
}

}  // namespace origami
