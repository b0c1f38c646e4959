// defines: MappedFile (read-only mmap of a whole file, RAII)
// Datasets are read through the page cache instead of being loaded: a 100 GB .bin costs no
// memory up front, and every rank of a node shares the same pages.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

namespace origami {

class MappedFile {
 public:
  MappedFile() = default;
  // Throws Error naming `path` if it is missing or cannot be mapped. An empty file maps to an
  // empty span (mmap of length 0 is not allowed).
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(MappedFile&& other) noexcept;
  MappedFile& operator=(MappedFile&& other) noexcept;
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {data_, size_}; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }

 private:
  void release();
  std::string path_;
  const std::byte* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace origami
