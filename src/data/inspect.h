// defines: InspectOptions, inspect()
// `origami-data inspect`: what a dataset holds (counts, dtype, token range) and, with a
// tokenizer, the first documents or the first shuffled GPT samples as text.
#pragma once
#include <cstdint>
#include <ostream>
#include <string>

#include "config/config.h"

namespace origami {

struct InspectOptions {
  std::string prefix;
  TokenizerConfig tokenizer{"sentencepiece", ""};  // model "" = print ids only
  int64_t documents = 3;
  int64_t samples = 0;
  int64_t seq_length = 0;
  uint64_t seed = 1234;
  int64_t max_chars = 400;
  bool show_ids = false;
};

void inspect(const InspectOptions& opts, std::ostream& out);

}  // namespace origami
