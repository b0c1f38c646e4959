// defines: CachedArray, cache_key_hash(), write_cached_array(), read_cached_array()
// Index maps (document/sample/shuffle) are built once and kept next to the data. A cache file is
// a 64-byte header (magic, element size, count, the 128-bit key hash) plus the raw array; it is
// written under a temp name and renamed, and read back by mmap only if every header field
// matches, so a stale, foreign or half-written file is rebuilt instead of trusted.
#pragma once
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "data/mapped_file.h"

namespace origami {

struct CacheKey {
  uint64_t lo = 0, hi = 0;
  std::string hex() const;  // 32 hex digits, used in file names
};

// Two independent 64-bit FNV-1a streams over the description text.
CacheKey cache_key_hash(const std::string& description);

// An int64 array held either in memory (just built) or in a mapped cache file.
class CachedArray {
 public:
  CachedArray() = default;
  explicit CachedArray(std::vector<int64_t> values) : owned_(std::move(values)) {}
  CachedArray(MappedFile file, size_t offset, size_t count) : file_(std::move(file)) {
    mapped_ = {reinterpret_cast<const int64_t*>(file_.bytes().data() + offset), count};
  }
  std::span<const int64_t> values() const {
    return owned_.empty() && !mapped_.empty() ? mapped_ : std::span<const int64_t>(owned_);
  }
  int64_t operator[](size_t i) const { return values()[i]; }
  size_t size() const { return values().size(); }

 private:
  std::vector<int64_t> owned_;
  MappedFile file_;
  std::span<const int64_t> mapped_;
};

// Writes `values` to `path` atomically (temp file in the same directory + rename).
void write_cached_array(const std::string& path, std::span<const int64_t> values, CacheKey key);
// The array at `path` if the file exists and its header matches `key`, else nullopt.
std::optional<CachedArray> read_cached_array(const std::string& path, CacheKey key);
// Writes a small text file atomically (the human-readable description beside the arrays).
void write_text_atomic(const std::string& path, const std::string& text);

}  // namespace origami
