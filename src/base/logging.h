// defines: init_logging(), format_bytes(), log (spdlog re-export)
// spdlog with a "[rank r]" pattern; by default only rank 0 logs at info, the others at warn, so a
// 64-rank job prints one log while errors from any rank still reach the terminal.
#pragma once
#include <spdlog/spdlog.h>
#include <string>

namespace origami {

// level: trace|debug|info|warn|error. all_ranks: every rank logs at that level.
void init_logging(int rank, const std::string& level, bool all_ranks = false);

// "143.7 MiB": bytes in the largest binary unit that keeps the number >= 1, for log lines.
std::string format_bytes(double bytes);

}  // namespace origami
