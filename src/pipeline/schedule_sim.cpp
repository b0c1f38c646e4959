// The dry run behind schedule_sim.h: per rank a cursor and a clock, per (micro-batch, chunk)
// what has run and what has arrived, and (eager) the sends waiting in buffers. A transfer is
// named by what it carries and where it goes: (activation or grad, micro-batch, receiving stage).
#include "pipeline/schedule_sim.h"

#include <fmt/format.h>

#include <algorithm>
#include <string>

#include "base/error.h"

namespace origami {

const char* send_model_name(SendModel model) {
  return model == SendModel::rendezvous ? "rendezvous (blocking) sends" : "eager (buffered) sends";
}

namespace {

bool carries_grad(const Action& a) {
  return a.op == Action::send_grad || a.op == Action::recv_grad;
}

class DryRun {
 public:
  DryRun(const ScheduleShape& shape, const std::vector<std::vector<Action>>& lists, SendModel model,
         const StepCosts& costs)
      : s_(shape), lists_(lists), model_(model), costs_(costs), stages_(num_virtual_stages(shape)) {
    check_schedule_shape(shape);
    check(static_cast<int>(lists.size()) == shape.pp,
          "pipeline dry run: {} action lists for parallel.pipeline={}", lists.size(), shape.pp);
    for (int r = 0; r < s_.pp; ++r)
      for (size_t i = 0; i < lists[r].size(); ++i) check_well_formed(r, i);
    ranks_.resize(s_.pp);
    for (Rank& k : ranks_)
      for (auto* v : {&k.fwd, &k.bwd, &k.act_in, &k.grad_in}) v->assign(s_.m * s_.v, 0);
    sent_at_.assign(2 * s_.m * stages_, -1);
    taken_.assign(2 * s_.m * stages_, 0);
    sim_.ranks.resize(s_.pp);
  }

  Simulation run() {
    for (;;) {
      bool progress = false, done = true;
      for (int r = 0; r < s_.pp; ++r) {
        while (!finished(r) && step(r)) progress = true;
        done = done && finished(r);
      }
      if (done) break;
      if (!progress) fail("{}", deadlock_report());
    }
    check_everything_arrived_and_ran();
    for (int r = 0; r < s_.pp; ++r) sim_.makespan = std::max(sim_.makespan, ranks_[r].clock);
    for (RankTimeline& t : sim_.ranks) t.idle = sim_.makespan - t.busy;
    return sim_;
  }

 private:
  struct Rank {
    size_t next = 0;
    int clock = 0;
    std::vector<char> fwd, bwd, act_in, grad_in;  // by mb * v + chunk
  };

  std::string where() const {
    return fmt::format("pipeline schedule {} pp={} v={} m={} ({})", schedule_kind_name(s_.kind),
                       s_.pp, s_.v, s_.m, send_model_name(model_));
  }
  int slot(const Action& a) const { return a.micro_batch * s_.v + a.chunk; }
  int stage(int r, const Action& a) const { return virtual_stage(s_, r, a.chunk); }
  bool finished(int r) const { return ranks_[r].next >= lists_[r].size(); }
  const Action& head(int r) const { return lists_[r][ranks_[r].next]; }

  // The stage on the other end of a transfer action: sends go to (F) or come from (B) the next
  // stage, and so on; -1 when the stage does not exist.
  int other_stage(int r, const Action& a) const {
    const bool towards_next = a.op == Action::send_activation || a.op == Action::recv_grad;
    const int o = stage(r, a) + (towards_next ? 1 : -1);
    return o >= 0 && o < stages_ ? o : -1;
  }
  // (grad?, micro-batch, receiving stage) of a send on r or a receive on r
  int transfer_key(int r, const Action& a) const {
    const int to = is_send(a) ? other_stage(r, a) : stage(r, a);
    return (carries_grad(a) * s_.m + a.micro_batch) * stages_ + to;
  }

  void check_well_formed(int r, size_t i) const {
    const Action& a = lists_[r][i];
    const std::string at = fmt::format("{}: rank {} action {} ({})", where(), r, i, to_string(a));
    check(a.micro_batch >= 0 && a.micro_batch < s_.m && a.chunk >= 0 && a.chunk < s_.v,
          "{}: micro-batch or chunk out of range", at);
    if (is_compute(a)) {
      check(a.peer == -1, "{}: a compute has no peer", at);
      return;
    }
    const int o = other_stage(r, a);
    check(o >= 0, "{}: stage {} has no neighbour on that side", at, stage(r, a));
    check(stage_rank(s_, o) != r, "{}: stage {} lives on this rank; nothing to transfer", at, o);
    check(a.peer == stage_rank(s_, o), "{}: stage {} lives on rank {}, not on rank {}", at, o,
          stage_rank(s_, o), a.peer);
  }

  // Has the input of compute `a` on rank r arrived (or been made here, at PP = 1)?
  bool input_ready(int r, const Action& a) const {
    const Rank& k = ranks_[r];
    const int s = stage(r, a);
    if (a.op == Action::forward) {
      if (s == 0) return true;
      if (stage_rank(s_, s - 1) == r) return k.fwd[a.micro_batch * s_.v + stage_chunk(s_, s - 1)];
      return k.act_in[slot(a)];
    }
    if (!k.fwd[slot(a)]) return false;
    if (s == stages_ - 1) return true;
    if (stage_rank(s_, s + 1) == r) return k.bwd[a.micro_batch * s_.v + stage_chunk(s_, s + 1)];
    return k.grad_in[slot(a)];
  }
  bool produced(int r, const Action& send) const {
    return (send.op == Action::send_activation ? ranks_[r].fwd : ranks_[r].bwd)[slot(send)];
  }
  bool matches(int r, const Action& a, int q, const Action& b) const {
    return is_send(a) != is_send(b) && carries_grad(a) == carries_grad(b) && b.peer == r &&
           transfer_key(r, a) == transfer_key(q, b);
  }

  void record(int r, int start, int end) {
    sim_.ranks[r].actions.push_back({start, end, head(r)});
    ranks_[r].clock = end;
    ++ranks_[r].next;
  }
  void mark_arrived(int r, const Action& recv) {
    char& in =
        (recv.op == Action::recv_activation ? ranks_[r].act_in : ranks_[r].grad_in)[slot(recv)];
    check(!in, "{}: rank {} receives {} twice", where(), r, to_string(recv));
    in = 1;
    ++sim_.transfers;
  }

  bool step(int r) {
    Rank& k = ranks_[r];
    const Action a = head(r);
    if (is_compute(a)) {
      if (!input_ready(r, a)) return false;
      char& done = (a.op == Action::forward ? k.fwd : k.bwd)[slot(a)];
      check(!done, "{}: rank {} runs {} twice", where(), r, to_string(a));
      done = 1;
      const int cost = a.op == Action::forward ? costs_.forward : costs_.backward;
      sim_.ranks[r].busy += cost;
      record(r, k.clock, k.clock + cost);
      return true;
    }
    if (is_send(a) && !produced(r, a)) return false;
    if (model_ == SendModel::rendezvous) {
      const int q = a.peer;
      if (finished(q) || !matches(r, a, q, head(q))) return false;
      if (is_send(head(q)) && !produced(q, head(q))) return false;
      const int t = std::max(k.clock, ranks_[q].clock);
      mark_arrived(is_send(a) ? q : r, is_send(a) ? head(q) : a);
      record(q, ranks_[q].clock, t);
      record(r, k.clock, t);
      return true;
    }
    int& sent = sent_at_[transfer_key(r, a)];
    if (is_send(a)) {
      check(sent < 0, "{}: rank {} sends {} a second time", where(), r, to_string(a));
      sent = k.clock;
      record(r, k.clock, k.clock);
      return true;
    }
    if (sent < 0) return false;
    mark_arrived(r, a);
    taken_[transfer_key(r, a)] = 1;
    record(r, k.clock, std::max(k.clock, sent));
    return true;
  }

  std::string why_stuck(int r) const {
    const Action& a = head(r);
    if (is_compute(a)) {
      if (a.op == Action::backward && !ranks_[r].fwd[slot(a)])
        return fmt::format("its forward F{}c{} has not run", a.micro_batch, a.chunk);
      return "its input has not arrived";
    }
    if (is_send(a) && !produced(r, a))
      return fmt::format("{}{}c{} has not run", a.op == Action::send_activation ? "F" : "B",
                         a.micro_batch, a.chunk);
    if (model_ == SendModel::eager) return "no matching send has been posted";
    if (finished(a.peer)) return fmt::format("rank {} has finished its list", a.peer);
    return fmt::format("rank {} is at {}", a.peer, to_string(head(a.peer)));
  }

  std::string deadlock_report() const {
    std::string out = fmt::format("{} deadlocks:", where());
    for (int r = 0; r < s_.pp; ++r)
      if (!finished(r))
        out += fmt::format(" rank {} is stuck at {} (action {} of {}: {});", r, to_string(head(r)),
                           ranks_[r].next, lists_[r].size(), why_stuck(r));
    out.pop_back();
    return out;
  }

  void check_everything_arrived_and_ran() const {
    // (a send no receive takes can only complete under eager sends; rendezvous deadlocks on it)
    for (int r = 0; r < s_.pp; ++r)
      for (const Action& a : lists_[r])
        check(!is_send(a) || model_ == SendModel::rendezvous || taken_[transfer_key(r, a)],
              "{}: rank {} sends {} but rank {} never receives it", where(), r, to_string(a),
              a.peer);
    for (int r = 0; r < s_.pp; ++r)
      for (int mb = 0; mb < s_.m; ++mb)
        for (int c = 0; c < s_.v; ++c) {
          const int i = mb * s_.v + c;
          check(ranks_[r].fwd[i] && ranks_[r].bwd[i], "{}: rank {} never runs {}", where(), r,
                ranks_[r].fwd[i] ? fmt::format("B{}c{}", mb, c) : fmt::format("F{}c{}", mb, c));
        }
  }

  const ScheduleShape s_;
  const std::vector<std::vector<Action>>& lists_;
  const SendModel model_;
  const StepCosts costs_;
  const int stages_;
  std::vector<Rank> ranks_;
  std::vector<int> sent_at_;  // eager: when each transfer was sent, -1 if not yet
  std::vector<char> taken_;   // eager: whether its receive has taken it
  Simulation sim_;
};

}  // namespace

Simulation simulate_lists(const ScheduleShape& shape, const std::vector<std::vector<Action>>& lists,
                          SendModel model, const StepCosts& costs) {
  return DryRun(shape, lists, model, costs).run();
}

Simulation simulate(const ScheduleShape& shape, SendModel model, const StepCosts& costs) {
  return simulate_lists(shape, build_all_schedules(shape, costs), model, costs);
}

Bubble theoretical_bubble(const ScheduleShape& shape) {
  const double idle = shape.pp - 1, work = static_cast<double>(shape.v) * shape.m;
  return {idle / work, idle / (work + idle)};
}

Bubble measured_bubble(const Simulation& sim, int rank) {
  const RankTimeline& t = sim.ranks.at(rank);
  return {static_cast<double>(t.idle) / t.busy, static_cast<double>(t.idle) / sim.makespan};
}

std::string timeline_json(const ScheduleShape& shape, const Simulation& sim, SendModel model,
                          const StepCosts& costs) {
  static const char* const kOps[] = {"forward",         "backward",  "send_activation",
                                     "recv_activation", "send_grad", "recv_grad"};
  const Bubble theory = theoretical_bubble(shape);
  std::string out = fmt::format(
      "{{\"kind\": \"{}\", \"pp\": {}, \"v\": {}, \"m\": {}, \"group\": {}, "
      "\"costs\": {{\"forward\": {}, \"backward\": {}}}, \"send_model\": \"{}\", "
      "\"makespan\": {}, \"theory\": {{\"of_compute\": {}, \"of_wall\": {}}},\n \"ranks\": [",
      schedule_kind_name(shape.kind), shape.pp, shape.v, shape.m, group_size(shape), costs.forward,
      costs.backward, model == SendModel::eager ? "eager" : "rendezvous", sim.makespan,
      theory.of_compute, theory.of_wall);
  for (int r = 0; r < shape.pp; ++r) {
    const Bubble b = measured_bubble(sim, r);
    out += fmt::format(
        "{}\n  {{\"busy\": {}, \"idle\": {}, \"bubble\": {{\"of_compute\": {}, \"of_wall\": {}}}, "
        "\"actions\": [",
        r ? "," : "", sim.ranks[r].busy, sim.ranks[r].idle, b.of_compute, b.of_wall);
    const auto& actions = sim.ranks[r].actions;
    for (size_t i = 0; i < actions.size(); ++i) {
      const TimedAction& t = actions[i];
      out += fmt::format(
          "{}\n   {{\"name\": \"{}\", \"op\": \"{}\", \"mb\": {}, \"chunk\": {}, \"peer\": {}, "
          "\"start\": {}, \"end\": {}}}",
          i ? "," : "", to_string(t.action), kOps[t.action.op], t.action.micro_batch,
          t.action.chunk, t.action.peer, t.start, t.end);
    }
    out += "]}";
  }
  return out + "]}\n";
}

}  // namespace origami
