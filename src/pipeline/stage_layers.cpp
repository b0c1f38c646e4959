// The layer split of stage_layers.h: per-rank counts first (the set ends, the rest shared evenly
// by the other ranks), each divided into v equal chunks, then ranges laid out in virtual stage
// order. Every refusal says which keys and what would work.
#include "pipeline/stage_layers.h"

#include <fmt/format.h>

#include <cstdlib>
#include <string>

#include "base/error.h"

namespace origami {
namespace {

constexpr const char* kFirst = "parallel.pipeline_first_stage_layers";
constexpr const char* kLast = "parallel.pipeline_last_stage_layers";

// ", or an uneven split such as parallel.pipeline_first_stage_layers=9 (then 7 per other rank)":
// the first-rank count closest to an even share for which the other ranks split evenly.
std::string uneven_suggestion(int layers, int pp, int v) {
  if (pp < 2) return "";
  int best = -1;
  for (int f = v; f < layers; f += v) {
    const int rest = layers - f;
    if (rest % (pp - 1) != 0 || (rest / (pp - 1)) % v != 0 || rest / (pp - 1) < v) continue;
    if (best < 0 || std::abs(f * pp - layers) < std::abs(best * pp - layers)) best = f;
  }
  if (best < 0) return "";
  return fmt::format(", or an uneven split such as {}={} (then {} per other rank)", kFirst, best,
                     (layers - best) / (pp - 1));
}

std::string nearest_multiples(int layers, int k) {
  const int below = layers / k * k, above = below + k;
  return below > 0 ? fmt::format("{} or {}", below, above) : fmt::format("{}", above);
}

}  // namespace

std::vector<std::pair<int, int>> stage_layers(int num_layers, int pp, int v, int first, int last) {
  check(num_layers >= 1, "model.num_layers={} must be at least 1", num_layers);
  check(pp >= 1, "parallel.pipeline={} must be at least 1", pp);
  check(v >= 1, "parallel.virtual_pipeline={} must be at least 1", v);
  check(first >= 0 && last >= 0, "{}={} and {}={} must not be negative (0: an even share)", kFirst,
        first, kLast, last);
  check(pp <= num_layers,
        "parallel.pipeline={} is larger than model.num_layers={}: every pipeline stage needs at "
        "least one layer; allowed: parallel.pipeline <= {}",
        pp, num_layers, num_layers);

  std::vector<int> per_rank(pp, 0);
  if (pp == 1) {
    check((first == 0 || first == num_layers) && (last == 0 || last == num_layers),
          "with parallel.pipeline=1 the one stage is both first and last: {}={} and {}={} must be "
          "0 or model.num_layers={}",
          kFirst, first, kLast, last, num_layers);
    per_rank[0] = num_layers;
  } else if (first == 0 && last == 0) {
    check(num_layers % pp == 0,
          "model.num_layers={} is not divisible by parallel.pipeline={}; allowed: num_layers {}{}",
          num_layers, pp, nearest_multiples(num_layers, pp), uneven_suggestion(num_layers, pp, v));
    per_rank.assign(pp, num_layers / pp);
  } else {
    const int fixed = (first > 0) + (last > 0), middle = pp - fixed;
    const int rest = num_layers - first - last;
    const std::string given =
        fmt::format("{}={} and {}={} with parallel.pipeline={}", kFirst, first, kLast, last, pp);
    if (middle == 0) {
      check(rest == 0, "{} place {} layers but model.num_layers={}; the two must add up exactly",
            given, first + last, num_layers);
    } else {
      check(rest >= middle && rest % middle == 0,
            "{} leave {} of model.num_layers={} for the other {} rank(s), which is not an equal "
            "positive number per rank; the counts must add up exactly to model.num_layers",
            given, rest, num_layers, middle);
    }
    for (int r = 0; r < pp; ++r) per_rank[r] = middle > 0 ? rest / middle : 0;
    if (first > 0) per_rank[0] = first;
    if (last > 0) per_rank[pp - 1] = last;
  }

  for (int r = 0; r < pp; ++r)
    check(per_rank[r] % v == 0,
          "parallel.virtual_pipeline={} does not divide the {} layers of pipeline rank {} "
          "(model.num_layers={}, parallel.pipeline={}, {}={}, {}={}); every chunk needs the same "
          "number of layers; allowed: a virtual_pipeline that divides {}",
          v, per_rank[r], r, num_layers, pp, kFirst, first, kLast, last, per_rank[r]);

  std::vector<std::pair<int, int>> ranges;
  int begin = 0;
  for (int c = 0; c < v; ++c)
    for (int r = 0; r < pp; ++r) {
      ranges.emplace_back(begin, begin + per_rank[r] / v);
      begin += per_rank[r] / v;
    }
  check(begin == num_layers, "internal: the pipeline split builds {} of model.num_layers={}", begin,
        num_layers);
  return ranges;
}

}  // namespace origami
