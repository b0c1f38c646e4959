// defines: PreprocessOptions, preprocess(), TokenizerTrainingOptions, train_tokenizer()
// The work behind `origami-data preprocess` and `train-tokenizer`, kept in the library so tests
// drive it directly. Input files are JSONL (.jsonl/.json: one object per line, the text under
// json_key) or plain text (any other name: the whole file is one document).
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "config/config.h"
#include "data/indexed_dataset.h"

namespace origami {

struct PreprocessOptions {
  std::vector<std::string> inputs;
  std::string output_prefix;          // writes <output_prefix>.bin / .idx
  std::string json_key = "text";
  TokenizerConfig tokenizer;
  int workers = 1;                    // encoding threads
  bool append_eod = true;             // Megatron's --append-eod
  std::optional<TokenDType> dtype;    // default: dtype_for_vocab(vocab size)
  bool progress = true;               // progress bar on stderr
};

struct PreprocessSummary {
  int64_t documents = 0;
  int64_t tokens = 0;
  int64_t bytes = 0;                  // input text bytes encoded
  double seconds = 0;
  TokenDType dtype = TokenDType::u16;
};

PreprocessSummary preprocess(const PreprocessOptions& opts);

struct TokenizerTrainingOptions {
  std::vector<std::string> inputs;    // same formats as preprocess
  std::string json_key = "text";
  std::string model_prefix;           // writes <model_prefix>.model / .vocab
  int64_t vocab_size = 8192;
  std::string model_type = "bpe";     // bpe | unigram | char | word
  int workers = 1;
  double character_coverage = 0.9999;
  int64_t max_sentences = 0;          // 0 = train on every line
};

// SentencePiece training with Llama's special ids (unk 0, bos 1, eos 2, no pad), byte fallback
// and identity normalisation, so every text encodes without unk and decodes back unchanged.
void train_tokenizer(const TokenizerTrainingOptions& opts);

}  // namespace origami
