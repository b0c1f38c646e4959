// Cache files: header {char magic[16] "ORIGAMI-INDEX-1"; u64 elem_size; u64 count; u64 key_lo;
// u64 key_hi; u64 reserved[2]} = 64 bytes, then count int64 values (little-endian). The header
// size keeps the array 8-byte aligned inside the page-aligned mapping.
#include "data/index_cache.h"

#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fmt/format.h>

#include "base/error.h"

namespace origami {
namespace {

constexpr std::array<char, 16> kMagic = {'O', 'R', 'I', 'G', 'A', 'M', 'I', '-',
                                         'I', 'N', 'D', 'E', 'X', '-', '1', '\0'};
struct Header {
  std::array<char, 16> magic;
  uint64_t elem_size, count, key_lo, key_hi, reserved[2];
};
static_assert(sizeof(Header) == 64);

uint64_t fnv1a(const std::string& s, uint64_t h) {
  for (unsigned char c : s) h = (h ^ c) * 1099511628211ull;
  return h;
}

std::string temp_name(const std::string& path) {
  static std::atomic<uint64_t> counter{0};
  return fmt::format("{}.tmp.{}.{}", path, getpid(), counter++);
}

void write_atomic(const std::string& path, const void* a, size_t na, const void* b, size_t nb) {
  auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty()) {
    std::error_code ec;
    std::filesystem::create_directories(parent, ec);
    check(!ec, "cannot create cache directory {}: {}", parent.string(), ec.message());
  }
  const std::string tmp = temp_name(path);
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  check(f != nullptr, "cannot create {}: {}", tmp, std::strerror(errno));
  bool ok = std::fwrite(a, 1, na, f) == na;
  if (nb) ok = std::fwrite(b, 1, nb, f) == nb && ok;
  ok = std::fflush(f) == 0 && ok;
  ok = ::fsync(fileno(f)) == 0 && ok;
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    fail("writing {} failed: {}", tmp, std::strerror(errno));
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    fail("cannot rename {} to {}: {}", tmp, path, ec.message());
  }
}

}  // namespace

std::string CacheKey::hex() const { return fmt::format("{:016x}{:016x}", hi, lo); }

CacheKey cache_key_hash(const std::string& description) {
  return {fnv1a(description, 1469598103934665603ull), fnv1a(description, 0x84222325cbf29ce4ull)};
}

void write_cached_array(const std::string& path, std::span<const int64_t> values, CacheKey key) {
  Header h{kMagic, sizeof(int64_t), values.size(), key.lo, key.hi, {0, 0}};
  write_atomic(path, &h, sizeof(h), values.data(), values.size_bytes());
}

std::optional<CachedArray> read_cached_array(const std::string& path, CacheKey key) {
  if (!std::filesystem::is_regular_file(path)) return std::nullopt;
  MappedFile file(path);
  if (file.size() < sizeof(Header)) return std::nullopt;
  Header h;
  std::memcpy(&h, file.bytes().data(), sizeof(h));
  if (h.magic != kMagic || h.elem_size != sizeof(int64_t) || h.key_lo != key.lo ||
      h.key_hi != key.hi || file.size() != sizeof(Header) + h.count * sizeof(int64_t)) {
    return std::nullopt;
  }
  size_t count = h.count;
  return CachedArray(std::move(file), sizeof(Header), count);
}

void write_text_atomic(const std::string& path, const std::string& text) {
  write_atomic(path, text.data(), text.size(), nullptr, 0);
}

}  // namespace origami
