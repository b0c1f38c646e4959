// defines: Tokenizer, make_tokenizer()
// Text <-> token ids for preprocessing, inspection and sample printing. Two kinds:
// "sentencepiece" (any SentencePiece .model, e.g. the shipped data/brown/tokenizer.model or
// Mixtral's; EOD = its eos id) and "byte" (ids 0..255 are bytes, 256 is EOD; vocab 257).
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"

namespace origami {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Thread-safe: preprocessing encodes from several threads at once.
  virtual std::vector<int32_t> encode(std::string_view text) const = 0;
  virtual std::string decode(std::span<const int32_t> ids) const = 0;
  virtual int64_t vocab_size() const = 0;
  virtual int32_t eod_id() const = 0;
};

// Throws Error naming the .model path if it is missing or does not load, or has no eos id.
std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg);

}  // namespace origami
