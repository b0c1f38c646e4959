// defines: valid_shapes(), describe()
// The shapes every schedule property is checked on: PP 1/2/4/8, v 1/2/3, m 1..16, every kind,
// interleaved also with group sizes pp + 1 and 2 pp; the ones check_schedule_shape refuses are
// left out (and tested for their message elsewhere).
#pragma once
#include <fmt/format.h>

#include <string>
#include <vector>

#include "base/error.h"
#include "pipeline/schedule.h"

namespace origami::testing {

inline std::string describe(const ScheduleShape& s) {
  return fmt::format("{} pp={} v={} m={} g={}", schedule_kind_name(s.kind), s.pp, s.v, s.m,
                     group_size(s));
}

inline std::vector<ScheduleShape> valid_shapes() {
  std::vector<ScheduleShape> out;
  for (ScheduleKind kind :
       {ScheduleKind::gpipe, ScheduleKind::one_f_one_b, ScheduleKind::interleaved})
    for (int pp : {1, 2, 4, 8})
      for (int v : {1, 2, 3})
        for (int m = 1; m <= 16; ++m)
          for (int group : {0, pp + 1, 2 * pp}) {
            if (group != 0 && kind != ScheduleKind::interleaved) continue;
            if (group == 2 * pp && pp == 1) continue;  // the same as pp + 1
            const ScheduleShape s{pp, v, m, kind, group};
            try {
              check_schedule_shape(s);
              out.push_back(s);
            } catch (const Error&) {
            }
          }
  return out;
}

}  // namespace origami::testing
