// defines: TokenDType, IndexedDataset (reader), IndexedDatasetWriter
// Megatron-LM's MMIDIDX format, byte for byte: <prefix>.idx holds the header, sequence lengths,
// byte pointers and document index; <prefix>.bin the raw token arrays. Reading maps both files;
// every pointer is checked against the .bin size at open, so a bad index fails with the file
// named before training starts. Writing goes to temp names renamed at finish(), so a crash never
// leaves a dataset that looks complete. See docs/data.md.
#pragma once
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "data/mapped_file.h"

namespace origami {

// The .idx dtype codes (Megatron's DType enum).
enum class TokenDType : uint8_t { u8 = 1, i8 = 2, i16 = 3, i32 = 4, i64 = 5, f64 = 6, f32 = 7, u16 = 8 };

size_t dtype_size(TokenDType t);
std::string_view dtype_name(TokenDType t);
// Megatron's rule: uint16 when every id fits below 65500, otherwise int32.
TokenDType dtype_for_vocab(int64_t vocab_size);
// Parses "u8|i8|i16|i32|i64|f64|f32|u16" (also numpy spellings uint8 .. float64).
TokenDType parse_dtype(std::string_view name);

class IndexedDataset {
 public:
  // Maps <prefix>.idx and <prefix>.bin and validates them (magic, version, dtype code, sizes,
  // every pointer inside the .bin, document index monotone from 0 to the sequence count).
  explicit IndexedDataset(const std::string& prefix);

  const std::string& prefix() const { return prefix_; }
  TokenDType dtype() const { return dtype_; }
  int64_t num_sequences() const { return num_sequences_; }
  int64_t num_documents() const { return num_doc_entries_ - 1; }
  int64_t total_tokens() const { return total_tokens_; }

  // The arrays of the .idx, read unaligned-safe (the header is 34 bytes, so they are misaligned).
  int32_t sequence_length(int64_t i) const { return load<int32_t>(lengths_, i); }
  int64_t sequence_pointer(int64_t i) const { return load<int64_t>(pointers_, i); }
  // Document k is sequences [document_index(k), document_index(k+1)).
  int64_t document_index(int64_t k) const { return load<int64_t>(doc_index_, k); }

  // Tokens [offset, offset + out.size()) of sequence i, converted to T. Throws on a range outside
  // the sequence, and on a value T cannot hold exactly (read as int32 or int64: a float
  // dataset's NaN, infinity or fraction, an int64 token past the int32 range), naming the .bin.
  template <typename T> void read(int64_t sequence, int64_t offset, std::span<T> out) const;
  template <typename T> std::vector<T> sequence(int64_t i) const {
    std::vector<T> v(size_t(sequence_length(i)));
    read<T>(i, 0, std::span<T>(v));
    return v;
  }

 private:
  template <typename T> static T load(const std::byte* base, int64_t i) {
    T v;
    std::memcpy(&v, base + i * int64_t(sizeof(T)), sizeof(T));
    return v;
  }
  void validate() const;

  std::string prefix_;
  MappedFile idx_, bin_;
  TokenDType dtype_ = TokenDType::u16;
  int64_t num_sequences_ = 0, num_doc_entries_ = 0, total_tokens_ = 0;
  const std::byte* lengths_ = nullptr;
  const std::byte* pointers_ = nullptr;
  const std::byte* doc_index_ = nullptr;
};

extern template void IndexedDataset::read<int32_t>(int64_t, int64_t, std::span<int32_t>) const;
extern template void IndexedDataset::read<int64_t>(int64_t, int64_t, std::span<int64_t>) const;
extern template void IndexedDataset::read<double>(int64_t, int64_t, std::span<double>) const;

// Writes <prefix>.bin/.idx like Megatron's IndexedDatasetBuilder (one or more sequences per
// document; the usual case is one). Data goes to <prefix>.{bin,idx}.tmp.<pid>; finish() renames
// them into place. Destroying a writer that did not finish removes its temp files.
class IndexedDatasetWriter {
 public:
  IndexedDatasetWriter(std::string prefix, TokenDType dtype);
  ~IndexedDatasetWriter();
  IndexedDatasetWriter(const IndexedDatasetWriter&) = delete;
  IndexedDatasetWriter& operator=(const IndexedDatasetWriter&) = delete;

  // Appends one sequence; each value must be representable in the dtype (else Error).
  void add_sequence(std::span<const int32_t> tokens);
  void add_sequence(std::span<const int64_t> tokens);
  void add_sequence(std::span<const double> tokens);
  // Closes the current document (the sequences added since the previous end_document()).
  void end_document();
  void add_document(std::span<const int32_t> tokens) { add_sequence(tokens); end_document(); }

  int64_t num_sequences() const { return int64_t(lengths_.size()); }
  int64_t num_tokens() const { return num_tokens_; }
  // Writes the .idx and renames both files into place.
  void finish();

 private:
  template <typename T> void append(std::span<const T> tokens);
  void remove_temps();

  std::string prefix_, bin_tmp_, idx_tmp_;
  TokenDType dtype_;
  std::FILE* bin_ = nullptr;
  std::vector<int32_t> lengths_;
  std::vector<int64_t> doc_index_{0};
  std::vector<std::byte> buffer_;
  int64_t num_tokens_ = 0;
  bool finished_ = false;
};

}  // namespace origami
