// defines: ParallelSizes, ParallelLayout (rank <-> coordinates, group membership), ProcessGroups
// DESIGN.md's "Parallel folding": world W, pipeline P, stage size S = W/P; rank r is in stage
// r / S at in-stage index s = r % S. The dense grid (TP fastest, then CP, then DP) and the expert
// grid (ETP fastest, then EP, then EDP) both tile the same S ranks of a stage, chosen
// independently. A group is the ranks that share every coordinate but the named ones.
#pragma once
#include <array>
#include <memory>
#include <string>
#include <vector>

#include "comm/communicator.h"
#include "config/config.h"

namespace origami {

struct ParallelSizes {
  int world = 1, tp = 1, cp = 1, pp = 1, ep = 1, etp = 1;
};

class ParallelLayout {
 public:
  // world/stage: everyone / the stage. tp, cp, dp: one dense coordinate varies; dp_cp (dense
  // gradient reduction), tp_cp, tp_dp_cp (= the stage on the dense grid): those vary. ep, etp,
  // edp, etp_ep: the same on the expert grid; ep_edp: FSSDP's owners (the stage's expert grid at
  // one ETP coordinate, position ep + EP * edp). pp: same s across stages. embedding: the first and
  // last stage ranks with the same s (tied embeddings); a middle-stage rank, or any rank when
  // P == 1, is alone in it. self: this rank alone (a gradient group that needs no reduction).
  enum class Group {
    world,
    stage,
    tp,
    cp,
    dp,
    pp,
    dp_cp,
    tp_cp,
    tp_dp_cp,
    ep,
    etp,
    edp,
    etp_ep,
    ep_edp,
    embedding,
    self
  };
  static constexpr std::array<Group, 16> kAllGroups = {
      Group::world,  Group::stage, Group::tp,     Group::cp,     Group::dp,
      Group::pp,     Group::dp_cp, Group::tp_cp,  Group::tp_dp_cp, Group::ep,
      Group::etp,    Group::edp,   Group::etp_ep, Group::ep_edp, Group::embedding,
      Group::self};

  struct Coord {
    int stage, tp, cp, dp, etp, ep, edp;
    friend bool operator==(const Coord&, const Coord&) = default;
  };

  // Throws Error when a size is < 1 or the sizes do not tile the world (see DESIGN.md).
  static ParallelLayout make(int world, int tp, int cp, int pp, int ep, int etp);
  static ParallelLayout make(const ParallelSizes& sizes);
  static ParallelLayout from_config(const ParallelConfig& cfg, int world);

  int world() const { return world_; }
  int tp() const { return tp_; }
  int cp() const { return cp_; }
  int pp() const { return pp_; }
  int dp() const { return stage_size() / (tp_ * cp_); }
  int ep() const { return ep_; }
  int etp() const { return etp_; }
  int edp() const { return stage_size() / (etp_ * ep_); }
  int stage_size() const { return world_ / pp_; }

  Coord coord(int rank) const;
  // Sorted world ranks of `rank`'s group g. Sorted order is coordinate order: in the tp group a
  // rank's position is its tp coordinate, in dp_cp it is cp + CP * dp, in etp_ep etp + ETP * ep.
  std::vector<int> group(Group g, int rank) const;
  // One line for the log: "TP2 CP1 DP2 PP1 | ETP1 EP4 EDP1".
  std::string describe() const;

 private:
  ParallelLayout(int world, int tp, int cp, int pp, int ep, int etp)
      : world_(world), tp_(tp), cp_(cp), pp_(pp), ep_(ep), etp_(etp) {}
  int world_, tp_, cp_, pp_, ep_, etp_;
};

// "tp", "dp_cp", "embedding": the name each group's Communicator carries.
const char* group_name(ParallelLayout::Group g);

// One Communicator per group this rank belongs to, made by splitting `world` with the group's
// smallest world rank as color (groups of one kind partition the world, so colors are unique)
// and the world rank as key (group rank = position in ParallelLayout::group()).
// tp_kv is the model's one group beyond the layout's: with grouped-query attention and more TP
// ranks than kv heads, the TP ranks sharing one kv head (TP / kv_heads consecutive TP ranks);
// null when every TP rank holds its own kv heads.
struct ProcessGroups {
  std::unique_ptr<Communicator> world, stage, tp, cp, dp, pp, dp_cp, tp_cp, tp_dp_cp, ep, etp, edp,
      etp_ep, ep_edp, embedding, self, tp_kv;

  // Collective over `world`, whose size must equal layout.world(). kv_heads: the model's
  // key/value heads (model.num_query_groups); 0 = no attention model, no tp_kv group.
  static ProcessGroups create(const Communicator& world, const ParallelLayout& layout,
                              int64_t kv_heads = 0);
  // The groups rank `rank` of `layout` would have, as ShapeOnlyCommunicators (sizes and
  // positions, no communication): what offline tools build another layout's specs from.
  static ProcessGroups describe(const ParallelLayout& layout, int rank, int64_t kv_heads = 0);
  const Communicator& get(ParallelLayout::Group g) const;
};

}  // namespace origami
