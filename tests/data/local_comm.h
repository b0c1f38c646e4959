// defines: LocalComm (a one-rank Communicator) and TempDir for the data tests
// open_dataset() takes a Communicator; with one rank every collective is a copy, so the
// single-process tests need no MPI.
#pragma once
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <string>

#include "comm/communicator.h"

namespace origami::testing {

inline size_t dtype_bytes(CommDType t) {
  switch (t) {
    case CommDType::f32: case CommDType::i32: return 4;
    case CommDType::f64: case CommDType::i64: return 8;
    case CommDType::u8: return 1;
  }
  return 1;
}

class LocalComm final : public Communicator {
 public:
  int rank() const override { return 0; }
  int size() const override { return 1; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return ranks_; }
  std::unique_ptr<Communicator> split(int, int, const std::string&) const override {
    return std::make_unique<LocalComm>();
  }
  void barrier() const override {}
  void allreduce(const void* s, void* r, int64_t n, CommDType t, ReduceOp) const override { copy(s, r, n, t); }
  void broadcast(void*, int64_t, CommDType, int) const override {}
  void allgather(const void* s, void* r, int64_t n, CommDType t) const override { copy(s, r, n, t); }
  void allgatherv(const void* s, int64_t n, void* r, std::span<const int64_t>,
                  std::span<const int64_t> d, CommDType t) const override {
    copy(s, static_cast<char*>(r) + d[0] * int64_t(dtype_bytes(t)), n, t);
  }
  void reduce_scatter(const void* s, void* r, int64_t n, CommDType t, ReduceOp) const override { copy(s, r, n, t); }
  void reduce_scatterv(const void* s, void* r, std::span<const int64_t> n, CommDType t,
                       ReduceOp) const override { copy(s, r, n[0], t); }
  void alltoall(const void* s, void* r, int64_t n, CommDType t) const override { copy(s, r, n, t); }
  void alltoallv(const void* s, std::span<const int64_t> sc, std::span<const int64_t> sd, void* r,
                 std::span<const int64_t>, std::span<const int64_t> rd, CommDType t) const override {
    copy(static_cast<const char*>(s) + sd[0] * int64_t(dtype_bytes(t)),
         static_cast<char*>(r) + rd[0] * int64_t(dtype_bytes(t)), sc[0], t);
  }
  void send(const void*, int64_t, CommDType, int, int) const override {}
  void recv(void*, int64_t, CommDType, int, int) const override {}

 private:
  static void copy(const void* s, void* r, int64_t n, CommDType t) {
    if (s != r) std::memmove(r, s, size_t(n) * dtype_bytes(t));
  }
  std::string name_ = "world";
  std::vector<int> ranks_{0};
};

// A fresh directory under the build tree, removed at the end of the test.
class TempDir {
 public:
  explicit TempDir(const std::string& tag) {
    path_ = std::filesystem::path(ORIGAMI_BINARY_DIR) / "test-tmp" /
            (tag + "-" + std::to_string(::getpid()));
    std::filesystem::remove_all(path_);
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

}  // namespace origami::testing
