// SentencePieceTokenizer (libsentencepiece; Encode/Decode are const and thread-safe) and
// ByteTokenizer (UTF-8 bytes as ids, for tests and corpora without a trained model).
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>

#include <filesystem>

#include "base/error.h"

namespace origami {
namespace {

class SentencePieceTokenizer final : public Tokenizer {
 public:
  explicit SentencePieceTokenizer(const std::string& path) {
    check(!path.empty(), "data.tokenizer.model is empty: the sentencepiece tokenizer needs a "
          ".model file (or set data.tokenizer.kind: byte)");
    check(std::filesystem::is_regular_file(path), "tokenizer model {} does not exist", path);
    auto st = sp_.Load(path);
    check(st.ok(), "tokenizer model {} does not load as a SentencePiece model: {}", path,
          st.ToString());
    check(sp_.eos_id() >= 0, "tokenizer model {} has no eos piece, which Origami uses as the "
          "end-of-document id (train it with eos_id >= 0)", path);
    eod_ = sp_.eos_id();
    vocab_ = sp_.GetPieceSize();
  }
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int> ids;
    auto st = sp_.Encode(absl::string_view(text.data(), text.size()), &ids);
    check(st.ok(), "sentencepiece encode failed: {}", st.ToString());
    return {ids.begin(), ids.end()};
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::vector<int> v;
    v.reserve(ids.size());
    for (int32_t id : ids) {
      check(id >= 0 && id < vocab_, "token id {} outside the tokenizer vocabulary [0, {})", id,
            vocab_);
      v.push_back(id);
    }
    std::string out;
    auto st = sp_.Decode(v, &out);
    check(st.ok(), "sentencepiece decode failed: {}", st.ToString());
    return out;
  }
  int64_t vocab_size() const override { return vocab_; }
  int32_t eod_id() const override { return eod_; }

 private:
  sentencepiece::SentencePieceProcessor sp_;
  int32_t eod_ = 0;
  int64_t vocab_ = 0;
};

class ByteTokenizer final : public Tokenizer {
 public:
  std::vector<int32_t> encode(std::string_view text) const override {
    std::vector<int32_t> ids;
    ids.reserve(text.size());
    for (unsigned char c : text) ids.push_back(c);
    return ids;
  }
  std::string decode(std::span<const int32_t> ids) const override {
    std::string out;
    for (int32_t id : ids) {
      check(id >= 0 && id <= 256, "token id {} outside the byte vocabulary [0, 257)", id);
      if (id < 256) out.push_back(char(id));  // EOD has no text
    }
    return out;
  }
  int64_t vocab_size() const override { return 257; }
  int32_t eod_id() const override { return 256; }
};

}  // namespace

std::unique_ptr<Tokenizer> make_tokenizer(const TokenizerConfig& cfg) {
  if (cfg.kind == "sentencepiece") return std::make_unique<SentencePieceTokenizer>(cfg.model);
  if (cfg.kind == "byte") return std::make_unique<ByteTokenizer>();
  fail("data.tokenizer.kind '{}' is not supported (allowed: sentencepiece, byte)", cfg.kind);
}

}  // namespace origami
