// defines: plan_table(), rejected_table(), explain_layout(), overlay_text(), plan_csv()
// What origami-plan prints and writes: the ranked table (layout, memory per rank, ms/step,
// tokens/s, the shares of compute, exposed communication and bubble), the layouts refused for
// memory with their excess, --explain's term list for one layout, and the overlay origami-train
// reads (`--set` lines, one per line, for `launch/train.sh CONFIG -- $(cat FILE)`).
#pragma once
#include <string>

#include "plan/planner.h"

namespace origami {

std::string plan_table(const Plan& plan, size_t top);
std::string rejected_table(const Plan& plan, size_t top);
// The terms of r's prediction, its groups' placement, and for each dimension (TP, CP, PP, EP,
// ETP, micro-batch size) the best ranked layout at each other value, with its cost: why the
// choice is what it is.
std::string explain_layout(const Config& base, const Plan& plan, const RankedLayout& r,
                           const ClusterSpec& cluster);
// `assignments` (plan_assignments()) as --set lines, one a line.
std::string overlay_text(const std::vector<std::string>& assignments);
// Every ranked layout, one CSV row: rank, the layout's fields, memory and the prediction.
std::string plan_csv(const Plan& plan);

}  // namespace origami
