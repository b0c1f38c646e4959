// defines: Layout, LayoutSpace, enumerate_layouts(), layout_assignments(), apply_layout(),
//          layout_of(), describe_layout()
// The planner's search space: every (TP, CP, PP, v, EP, ETP, ZeRO-1, recompute, micro-batch size)
// that config validate() accepts for the world, with DP, EDP and the micro-batch count derived.
// A layout is applied to a config as `--set` assignments through apply_override(), so the overlay
// origami-plan writes is exactly what was validated here, and origami-train reads it the same way.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "config/config.h"

namespace origami {

struct Layout {
  int tp = 1, cp = 1, pp = 1, v = 1, ep = 1, etp = 1;
  bool zero = false;              // optimizer.distributed (ZeRO-1)
  std::string recompute = "none";  // none | selective | full
  int64_t micro_batch_size = 1;
  // Derived for the world: dense and expert data-parallel sizes, micro-batches per step.
  int dp = 1, edp = 1;
  int64_t micro_batches = 1;
  friend bool operator==(const Layout&, const Layout&) = default;
};

struct LayoutSpace {
  std::vector<Layout> valid;     // in enumeration order
  int64_t candidates = 0;        // combinations tried
  int64_t refused = 0;           // refused by validate() (or its quick pre-checks)
  std::string example_refusal;   // validate()'s message for the first refused candidate
};

// Every layout of `base` (model, batch, everything else kept) for `world` ranks that validate()
// accepts. Cheap necessary conditions (sizes dividing the world, heads, experts, layers) skip
// hopeless combinations before validate(), which stays the judge.
LayoutSpace enumerate_layouts(const Config& base, int world);

// The layout as "section.key=value" assignments for apply_override() / origami-train --set.
std::vector<std::string> layout_assignments(const Layout& l);
// base with the layout applied (through apply_override, so cfg.origin says "--set ...").
Config apply_layout(const Config& base, const Layout& l);
// The same, set field by field (what the enumeration validates; equal to apply_layout's).
void set_layout(Config& cfg, const Layout& l);
// The layout a config describes for `world` ranks (the inverse of apply_layout).
Layout layout_of(const Config& cfg, int world);
// "TP2 CP1 PP2v2 EP4 ETP1 (DP2 EDP1) mbs2 x4 zero1 rc=none"
std::string describe_layout(const Layout& l);

}  // namespace origami
