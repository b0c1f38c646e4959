// ParallelLayout and ProcessGroups (see parallel_layout.h). Groups are built constructively: a
// grid coordinate is a mixed-radix digit of the in-stage index, and a group enumerates the digits
// it varies with the others held fixed. The unit tests check this against a brute-force search
// over the DESIGN.md formulas.
#include "comm/parallel_layout.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>

#include "base/error.h"
#include "comm/shape_only_communicator.h"

namespace origami {
namespace {

// The ranks base + d0 + R0 * (d1 + R1 * d2) where digit i runs over [0, R_i) if vary[i] and is
// fixed to digits[i] otherwise. Loops run outer-to-inner over the high digits, so the result is
// sorted.
std::vector<int> grid_members(int base, std::array<int, 3> radix, std::array<int, 3> digits,
                              std::array<bool, 3> vary) {
  auto range = [&](int i) {
    return vary[i] ? std::pair{0, radix[i]} : std::pair{digits[i], digits[i] + 1};
  };
  std::vector<int> out;
  auto [lo2, hi2] = range(2);
  auto [lo1, hi1] = range(1);
  auto [lo0, hi0] = range(0);
  for (int d2 = lo2; d2 < hi2; ++d2)
    for (int d1 = lo1; d1 < hi1; ++d1)
      for (int d0 = lo0; d0 < hi0; ++d0) out.push_back(base + d0 + radix[0] * (d1 + radix[1] * d2));
  return out;
}

int checked_int(int64_t v, const char* key) {
  check(v >= 1 && v <= INT_MAX, "{}={} is out of range for a parallel size; allowed: 1..{}", key, v,
        INT_MAX);
  return int(v);
}

}  // namespace

ParallelLayout ParallelLayout::make(int world, int tp, int cp, int pp, int ep, int etp) {
  check(world >= 1 && tp >= 1 && cp >= 1 && pp >= 1 && ep >= 1 && etp >= 1,
        "parallel layout: every size must be >= 1, found world {} tensor {} context {} pipeline "
        "{} expert {} expert_tensor {}",
        world, tp, cp, pp, ep, etp);
  check(int64_t(tp) * cp * pp <= world && world % (tp * cp * pp) == 0,
        "parallel layout: tensor {} × context {} × pipeline {} = {} does not divide the world "
        "size {}",
        tp, cp, pp, int64_t(tp) * cp * pp, world);
  const int stage = world / pp;
  check(int64_t(etp) * ep <= stage && stage % (etp * ep) == 0,
        "parallel layout: expert_tensor {} × expert {} = {} does not divide the {} ranks of a "
        "pipeline stage (world {} / pipeline {})",
        etp, ep, int64_t(etp) * ep, stage, world, pp);
  return ParallelLayout(world, tp, cp, pp, ep, etp);
}

ParallelLayout ParallelLayout::make(const ParallelSizes& s) {
  return make(s.world, s.tp, s.cp, s.pp, s.ep, s.etp);
}

ParallelLayout ParallelLayout::from_config(const ParallelConfig& cfg, int world) {
  return make(world, checked_int(cfg.tensor, "parallel.tensor"),
              checked_int(cfg.context, "parallel.context"),
              checked_int(cfg.pipeline, "parallel.pipeline"),
              checked_int(cfg.expert, "parallel.expert"),
              checked_int(cfg.expert_tensor, "parallel.expert_tensor"));
}

ParallelLayout::Coord ParallelLayout::coord(int rank) const {
  check(rank >= 0 && rank < world_, "parallel layout: rank {} is outside the world of {} ranks",
        rank, world_);
  const int s = rank % stage_size();
  return Coord{.stage = rank / stage_size(),
               .tp = s % tp_,
               .cp = (s / tp_) % cp_,
               .dp = s / (tp_ * cp_),
               .etp = s % etp_,
               .ep = (s / etp_) % ep_,
               .edp = s / (etp_ * ep_)};
}

std::vector<int> ParallelLayout::group(Group g, int rank) const {
  const Coord c = coord(rank);
  const int S = stage_size();
  const int base = c.stage * S;
  const std::array<int, 3> dense_radix{tp_, cp_, dp()}, dense{c.tp, c.cp, c.dp};
  const std::array<int, 3> expert_radix{etp_, ep_, edp()}, expert{c.etp, c.ep, c.edp};
  switch (g) {
    case Group::world: {
      std::vector<int> all(world_);
      for (int r = 0; r < world_; ++r) all[r] = r;
      return all;
    }
    case Group::stage:
    case Group::tp_dp_cp:
      return grid_members(base, dense_radix, dense, {true, true, true});
    case Group::tp:
      return grid_members(base, dense_radix, dense, {true, false, false});
    case Group::cp:
      return grid_members(base, dense_radix, dense, {false, true, false});
    case Group::dp:
      return grid_members(base, dense_radix, dense, {false, false, true});
    case Group::dp_cp:
      return grid_members(base, dense_radix, dense, {false, true, true});
    case Group::tp_cp:
      return grid_members(base, dense_radix, dense, {true, true, false});
    case Group::etp:
      return grid_members(base, expert_radix, expert, {true, false, false});
    case Group::ep:
      return grid_members(base, expert_radix, expert, {false, true, false});
    case Group::edp:
      return grid_members(base, expert_radix, expert, {false, false, true});
    case Group::etp_ep:
      return grid_members(base, expert_radix, expert, {true, true, false});
    case Group::ep_edp:
      return grid_members(base, expert_radix, expert, {false, true, true});
    case Group::self:
      return {rank};
    case Group::pp: {
      std::vector<int> out;
      for (int p = 0; p < pp_; ++p) out.push_back(rank % S + p * S);
      return out;
    }
    case Group::embedding: {
      if (pp_ == 1 || (c.stage != 0 && c.stage != pp_ - 1)) return {rank};
      return {rank % S, rank % S + (pp_ - 1) * S};
    }
  }
  fail("parallel layout: unknown group {}", int(g));
}

std::string ParallelLayout::describe() const {
  return fmt::format("TP{} CP{} DP{} PP{} | ETP{} EP{} EDP{}", tp_, cp_, dp(), pp_, etp_, ep_,
                     edp());
}

const char* group_name(ParallelLayout::Group g) {
  using G = ParallelLayout::Group;
  switch (g) {
    case G::world:
      return "world";
    case G::stage:
      return "stage";
    case G::tp:
      return "tp";
    case G::cp:
      return "cp";
    case G::dp:
      return "dp";
    case G::pp:
      return "pp";
    case G::dp_cp:
      return "dp_cp";
    case G::tp_cp:
      return "tp_cp";
    case G::tp_dp_cp:
      return "tp_dp_cp";
    case G::ep:
      return "ep";
    case G::etp:
      return "etp";
    case G::edp:
      return "edp";
    case G::etp_ep:
      return "etp_ep";
    case G::ep_edp:
      return "ep_edp";
    case G::embedding:
      return "embedding";
    case G::self:
      return "self";
  }
  return "?";
}

namespace {

std::unique_ptr<Communicator>& slot(ProcessGroups& pg, ParallelLayout::Group g) {
  using G = ParallelLayout::Group;
  switch (g) {
    case G::world:
      return pg.world;
    case G::stage:
      return pg.stage;
    case G::tp:
      return pg.tp;
    case G::cp:
      return pg.cp;
    case G::dp:
      return pg.dp;
    case G::pp:
      return pg.pp;
    case G::dp_cp:
      return pg.dp_cp;
    case G::tp_cp:
      return pg.tp_cp;
    case G::tp_dp_cp:
      return pg.tp_dp_cp;
    case G::ep:
      return pg.ep;
    case G::etp:
      return pg.etp;
    case G::edp:
      return pg.edp;
    case G::etp_ep:
      return pg.etp_ep;
    case G::ep_edp:
      return pg.ep_edp;
    case G::embedding:
      return pg.embedding;
    case G::self:
      return pg.self;
  }
  fail("process groups: unknown group {}", int(g));
}

}  // namespace

namespace {

// TP ranks per kv head when they share one (TP > kv heads), else 0.
int kv_sharing(const ParallelLayout& layout, int64_t kv_heads) {
  return kv_heads > 0 && layout.tp() > kv_heads ? int(layout.tp() / kv_heads) : 0;
}

}  // namespace

ProcessGroups ProcessGroups::create(const Communicator& world, const ParallelLayout& layout,
                                    int64_t kv_heads) {
  check(world.size() == layout.world(),
        "process groups: communicator '{}' has {} ranks but the layout {} is for {}", world.name(),
        world.size(), layout.describe(), layout.world());
  ProcessGroups pg;
  const int rank = world.rank();
  for (auto g : ParallelLayout::kAllGroups) {
    const std::vector<int> members = layout.group(g, rank);
    auto comm = world.split(members.front(), rank, group_name(g));
    check(comm->size() == int(members.size()),
          "process groups: group '{}' of rank {} has {} ranks, the layout {} says {}",
          group_name(g), rank, comm->size(), layout.describe(), members.size());
    slot(pg, g) = std::move(comm);
  }
  if (const int per_head = kv_sharing(layout, kv_heads))
    pg.tp_kv = pg.tp->split(pg.tp->rank() / per_head, pg.tp->rank(), "tp_kv");
  return pg;
}

ProcessGroups ProcessGroups::describe(const ParallelLayout& layout, int rank, int64_t kv_heads) {
  ProcessGroups pg;
  for (auto g : ParallelLayout::kAllGroups) {
    const std::vector<int> members = layout.group(g, rank);
    const int pos = int(std::find(members.begin(), members.end(), rank) - members.begin());
    slot(pg, g) = std::make_unique<ShapeOnlyCommunicator>(pos, int(members.size()), group_name(g));
  }
  if (const int per_head = kv_sharing(layout, kv_heads))
    pg.tp_kv = std::make_unique<ShapeOnlyCommunicator>(pg.tp->rank() % per_head, per_head, "tp_kv");
  return pg;
}

const Communicator& ProcessGroups::get(ParallelLayout::Group g) const {
  auto& comm = slot(const_cast<ProcessGroups&>(*this), g);
  check(comm != nullptr, "process groups: group '{}' was not created", group_name(g));
  return *comm;
}

}  // namespace origami
