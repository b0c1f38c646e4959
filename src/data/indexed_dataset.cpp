// IndexedDataset / IndexedDatasetWriter: the MMIDIDX layout of Megatron's indexed_dataset.py
// (_IndexWriter / _IndexReader), little-endian, version 1, no multimodal modes array.
#include "data/indexed_dataset.h"

#include <unistd.h>

#include <array>
#include <cerrno>
#include <cmath>
#include <filesystem>
#include <limits>
#include <type_traits>
#include <utility>

#include "base/error.h"

namespace origami {
namespace {

constexpr std::array<char, 9> kMagic = {'M', 'M', 'I', 'D', 'I', 'D', 'X', '\0', '\0'};
constexpr uint64_t kVersion = 1;
constexpr size_t kHeaderBytes = 9 + 8 + 1 + 8 + 8;  // magic, version, dtype, S, D

bool valid_code(uint8_t c) { return c >= 1 && c <= 8; }

template <typename T> T load_at(const std::byte* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

// Stored value v as T, or false when T cannot hold it: read as integers (the tokens training
// takes), a float dataset's NaN, infinity, fraction or out-of-range value and an int64 value past
// the int32 range would be undefined or a silently wrapped token id.
template <typename T, typename S> bool convert(S v, T& out) {
  if constexpr (std::is_floating_point_v<T>) {
    out = T(v);
    return true;
  } else if constexpr (std::is_floating_point_v<S>) {
    static_assert(std::is_signed_v<T>);
    // [lowest, -lowest) is exact in double for every signed T: -lowest is a power of two.
    const double lo = double(std::numeric_limits<T>::lowest());
    if (!(std::isfinite(v) && v == std::trunc(v) && double(v) >= lo && double(v) < -lo))
      return false;
    out = T(v);
    return true;
  } else {
    if (!std::in_range<T>(v)) return false;
    out = T(v);
    return true;
  }
}

// Element k of a token array of dtype t as T; false as convert().
template <typename T> bool element(const std::byte* base, TokenDType t, int64_t k, T& out) {
  switch (t) {
    case TokenDType::u8: return convert(load_at<uint8_t>(base + k), out);
    case TokenDType::i8: return convert(load_at<int8_t>(base + k), out);
    case TokenDType::i16: return convert(load_at<int16_t>(base + 2 * k), out);
    case TokenDType::u16: return convert(load_at<uint16_t>(base + 2 * k), out);
    case TokenDType::i32: return convert(load_at<int32_t>(base + 4 * k), out);
    case TokenDType::i64: return convert(load_at<int64_t>(base + 8 * k), out);
    case TokenDType::f32: return convert(load_at<float>(base + 4 * k), out);
    case TokenDType::f64: return convert(load_at<double>(base + 8 * k), out);
  }
  return false;
}

// The stored element k as a double, for the error message.
double stored_value(const std::byte* base, TokenDType t, int64_t k) {
  double v = 0;
  element<double>(base, t, k, v);
  return v;
}

template <typename D, typename T> bool fits(T v) {
  if constexpr (std::is_floating_point_v<D>) {
    return std::isfinite(double(v)) || !std::is_floating_point_v<T>;
  } else {
    if constexpr (std::is_floating_point_v<T>) {
      if (v != std::trunc(v)) return false;
    }
    return double(v) >= double(std::numeric_limits<D>::lowest()) &&
           double(v) <= double(std::numeric_limits<D>::max());
  }
}

template <typename D, typename T>
void encode_as(std::span<const T> in, std::vector<std::byte>& out, const std::string& prefix) {
  size_t at = out.size();
  out.resize(at + in.size() * sizeof(D));
  for (size_t k = 0; k < in.size(); ++k) {
    check(fits<D>(in[k]), "{}: token value {} at position {} does not fit the dataset dtype",
          prefix, double(in[k]), k);
    D d = D(in[k]);
    std::memcpy(out.data() + at + k * sizeof(D), &d, sizeof(D));
  }
}

}  // namespace

size_t dtype_size(TokenDType t) {
  switch (t) {
    case TokenDType::u8: case TokenDType::i8: return 1;
    case TokenDType::i16: case TokenDType::u16: return 2;
    case TokenDType::i32: case TokenDType::f32: return 4;
    case TokenDType::i64: case TokenDType::f64: return 8;
  }
  fail("invalid token dtype code {}", int(t));
}

std::string_view dtype_name(TokenDType t) {
  switch (t) {
    case TokenDType::u8: return "uint8";
    case TokenDType::i8: return "int8";
    case TokenDType::i16: return "int16";
    case TokenDType::i32: return "int32";
    case TokenDType::i64: return "int64";
    case TokenDType::f64: return "float64";
    case TokenDType::f32: return "float32";
    case TokenDType::u16: return "uint16";
  }
  return "invalid";
}

TokenDType dtype_for_vocab(int64_t vocab_size) {
  return vocab_size < 65500 ? TokenDType::u16 : TokenDType::i32;
}

TokenDType parse_dtype(std::string_view name) {
  for (uint8_t c = 1; c <= 8; ++c) {
    auto t = TokenDType(c);
    std::string_view full = dtype_name(t);
    std::string shortname;
    shortname += full[0] == 'u' ? 'u' : full[0] == 'i' ? 'i' : 'f';
    shortname += full.substr(full.find_first_of("0123456789"));
    if (name == full || name == shortname) return t;
  }
  fail("unknown token dtype '{}' (allowed: uint8 int8 int16 uint16 int32 int64 float32 float64, "
       "or u8 i8 i16 u16 i32 i64 f32 f64)", name);
}

// ---------------------------------------------------------------------------------- reader

IndexedDataset::IndexedDataset(const std::string& prefix) : prefix_(prefix) {
  const std::string idx_path = prefix + ".idx", bin_path = prefix + ".bin";
  check(std::filesystem::exists(idx_path), "dataset index {} does not exist (dataset prefixes are "
        "given without .bin/.idx)", idx_path);
  check(std::filesystem::exists(bin_path), "dataset data file {} does not exist", bin_path);
  idx_ = MappedFile(idx_path);
  bin_ = MappedFile(bin_path);
  const std::byte* p = idx_.bytes().data();
  check(idx_.size() >= kHeaderBytes, "{}: truncated index ({} bytes, the header alone is {})",
        idx_path, idx_.size(), kHeaderBytes);
  check(std::memcmp(p, kMagic.data(), kMagic.size()) == 0,
        "{}: not a Megatron MMIDIDX index (wrong magic bytes)", idx_path);
  uint64_t version = load_at<uint64_t>(p + 9);
  check(version == kVersion, "{}: index version {} is not supported (only version {})", idx_path,
        version, kVersion);
  uint8_t code = load_at<uint8_t>(p + 17);
  check(valid_code(code), "{}: invalid dtype code {} (allowed 1..8)", idx_path, int(code));
  dtype_ = TokenDType(code);
  uint64_t s = load_at<uint64_t>(p + 18), d = load_at<uint64_t>(p + 26);
  check(s < (uint64_t(1) << 40) && d >= 1 && d < (uint64_t(1) << 40),
        "{}: implausible header counts (sequences {}, document index entries {})", idx_path, s, d);
  num_sequences_ = int64_t(s);
  num_doc_entries_ = int64_t(d);
  size_t need = kHeaderBytes + 4 * s + 8 * s + 8 * d;
  check(idx_.size() >= need, "{}: truncated index: {} bytes, {} sequences and {} document entries "
        "need {}", idx_path, idx_.size(), s, d, need);
  lengths_ = p + kHeaderBytes;
  pointers_ = lengths_ + 4 * s;
  doc_index_ = pointers_ + 8 * s;
  validate();
}

void IndexedDataset::validate() const {
  const std::string idx_path = prefix_ + ".idx";
  const int64_t bin_size = int64_t(bin_.size()), item = int64_t(dtype_size(dtype_));
  int64_t total = 0;
  for (int64_t i = 0; i < num_sequences_; ++i) {
    int64_t len = sequence_length(i), ptr = sequence_pointer(i);
    if (len < 0 || ptr < 0 || ptr > bin_size || len > (bin_size - ptr) / item) {
      fail("{}: sequence {} (pointer {}, length {} x {} bytes) runs past the end of {} ({} bytes)",
           idx_path, i, ptr, len, item, prefix_ + ".bin", bin_size);
    }
    total += len;
  }
  const_cast<IndexedDataset*>(this)->total_tokens_ = total;
  check(document_index(0) == 0, "{}: document index starts at {}, not 0", idx_path,
        document_index(0));
  for (int64_t k = 1; k < num_doc_entries_; ++k) {
    check(document_index(k) >= document_index(k - 1), "{}: document index decreases at entry {}",
          idx_path, k);
  }
  check(document_index(num_doc_entries_ - 1) == num_sequences_,
        "{}: document index ends at {}, but there are {} sequences", idx_path,
        document_index(num_doc_entries_ - 1), num_sequences_);
}

template <typename T>
void IndexedDataset::read(int64_t sequence, int64_t offset, std::span<T> out) const {
  check(sequence >= 0 && sequence < num_sequences_, "{}: sequence {} out of range [0, {})",
        prefix_, sequence, num_sequences_);
  int64_t len = sequence_length(sequence), n = int64_t(out.size());
  check(offset >= 0 && n <= len - offset, "{}: tokens [{}, {}) outside sequence {} of length {}",
        prefix_, offset, offset + n, sequence, len);
  const std::byte* base = bin_.bytes().data() + sequence_pointer(sequence) +
                          offset * int64_t(dtype_size(dtype_));
  if (dtype_ == TokenDType::u16) {  // the common case, kept tight
    for (int64_t k = 0; k < n; ++k) out[k] = T(load_at<uint16_t>(base + 2 * k));
    return;
  }
  for (int64_t k = 0; k < n; ++k)
    if (!element<T>(base, dtype_, k, out[k]))
      fail("{}: token {} of sequence {} is {}, which is not an integer {} can hold ({} dataset)",
           prefix_ + ".bin", offset + k, sequence, stored_value(base, dtype_, k),
           sizeof(T) == 4 ? "int32" : "int64", dtype_name(dtype_));
}

template void IndexedDataset::read<int32_t>(int64_t, int64_t, std::span<int32_t>) const;
template void IndexedDataset::read<int64_t>(int64_t, int64_t, std::span<int64_t>) const;
template void IndexedDataset::read<double>(int64_t, int64_t, std::span<double>) const;

// ---------------------------------------------------------------------------------- writer

IndexedDatasetWriter::IndexedDatasetWriter(std::string prefix, TokenDType dtype)
    : prefix_(std::move(prefix)), dtype_(dtype) {
  check(valid_code(uint8_t(dtype)), "{}: invalid dtype code {}", prefix_, int(dtype));
  auto parent = std::filesystem::path(prefix_).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  std::string tag = ".tmp." + std::to_string(::getpid());
  bin_tmp_ = prefix_ + ".bin" + tag;
  idx_tmp_ = prefix_ + ".idx" + tag;
  bin_ = std::fopen(bin_tmp_.c_str(), "wb");
  check(bin_ != nullptr, "cannot create {}: {}", bin_tmp_, std::strerror(errno));
}

IndexedDatasetWriter::~IndexedDatasetWriter() {
  if (!finished_) remove_temps();
}

void IndexedDatasetWriter::remove_temps() {
  if (bin_) std::fclose(bin_);
  bin_ = nullptr;
  std::error_code ec;
  std::filesystem::remove(bin_tmp_, ec);
  std::filesystem::remove(idx_tmp_, ec);
}

template <typename T> void IndexedDatasetWriter::append(std::span<const T> tokens) {
  check(!finished_, "{}: add_sequence after finish()", prefix_);
  check(tokens.size() <= size_t(std::numeric_limits<int32_t>::max()),
        "{}: sequence of {} tokens exceeds the int32 length field", prefix_, tokens.size());
  buffer_.clear();
  switch (dtype_) {
    case TokenDType::u8: encode_as<uint8_t>(tokens, buffer_, prefix_); break;
    case TokenDType::i8: encode_as<int8_t>(tokens, buffer_, prefix_); break;
    case TokenDType::i16: encode_as<int16_t>(tokens, buffer_, prefix_); break;
    case TokenDType::u16: encode_as<uint16_t>(tokens, buffer_, prefix_); break;
    case TokenDType::i32: encode_as<int32_t>(tokens, buffer_, prefix_); break;
    case TokenDType::i64: encode_as<int64_t>(tokens, buffer_, prefix_); break;
    case TokenDType::f32: encode_as<float>(tokens, buffer_, prefix_); break;
    case TokenDType::f64: encode_as<double>(tokens, buffer_, prefix_); break;
  }
  if (!buffer_.empty()) {
    check(std::fwrite(buffer_.data(), 1, buffer_.size(), bin_) == buffer_.size(),
          "write to {} failed: {}", bin_tmp_, std::strerror(errno));
  }
  lengths_.push_back(int32_t(tokens.size()));
  num_tokens_ += int64_t(tokens.size());
}

void IndexedDatasetWriter::add_sequence(std::span<const int32_t> t) { append(t); }
void IndexedDatasetWriter::add_sequence(std::span<const int64_t> t) { append(t); }
void IndexedDatasetWriter::add_sequence(std::span<const double> t) { append(t); }

void IndexedDatasetWriter::end_document() { doc_index_.push_back(int64_t(lengths_.size())); }

void IndexedDatasetWriter::finish() {
  check(!finished_, "{}: finish() called twice", prefix_);
  check(std::fclose(bin_) == 0, "closing {} failed: {}", bin_tmp_, std::strerror(errno));
  bin_ = nullptr;
  std::FILE* f = std::fopen(idx_tmp_.c_str(), "wb");
  check(f != nullptr, "cannot create {}: {}", idx_tmp_, std::strerror(errno));
  std::vector<std::byte> out;
  auto put = [&out](const void* p, size_t n) {
    auto b = static_cast<const std::byte*>(p);
    out.insert(out.end(), b, b + n);
  };
  uint64_t version = kVersion, s = lengths_.size(), d = doc_index_.size();
  uint8_t code = uint8_t(dtype_);
  put(kMagic.data(), kMagic.size());
  put(&version, 8);
  put(&code, 1);
  put(&s, 8);
  put(&d, 8);
  put(lengths_.data(), 4 * s);
  int64_t pointer = 0, item = int64_t(dtype_size(dtype_));
  for (int32_t len : lengths_) {
    put(&pointer, 8);
    pointer += int64_t(len) * item;
  }
  put(doc_index_.data(), 8 * d);
  bool ok = std::fwrite(out.data(), 1, out.size(), f) == out.size();
  ok = (std::fclose(f) == 0) && ok;
  check(ok, "write to {} failed: {}", idx_tmp_, std::strerror(errno));
  // Drop the old index first: a crash between the renames then leaves no .idx, never a stale
  // .idx paired with a new .bin.
  std::filesystem::remove(prefix_ + ".idx");
  std::filesystem::rename(bin_tmp_, prefix_ + ".bin");
  std::filesystem::rename(idx_tmp_, prefix_ + ".idx");
  finished_ = true;
}

}  // namespace origami
