// defines: ShapeOnlyCommunicator
// A group's size and this rank's position in it, without any way to communicate: lets offline
// tools (origami-ckpt reshard) build the parameter specs a rank of another layout would hold.
// Every collective is an Error, so accidental use is caught at once.
#pragma once
#include "base/error.h"
#include "comm/communicator.h"

namespace origami {

class ShapeOnlyCommunicator final : public Communicator {
 public:
  ShapeOnlyCommunicator(int rank, int size, std::string name)
      : rank_(rank), size_(size), name_(std::move(name)) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { no(); }
  std::unique_ptr<Communicator> split(int, int, const std::string&) const override { no(); }
  void barrier() const override { no(); }
  void allreduce(const void*, void*, int64_t, CommDType, ReduceOp) const override { no(); }
  void broadcast(void*, int64_t, CommDType, int) const override { no(); }
  void allgather(const void*, void*, int64_t, CommDType) const override { no(); }
  void allgatherv(const void*, int64_t, void*, std::span<const int64_t>, std::span<const int64_t>,
                  CommDType) const override { no(); }
  void reduce_scatter(const void*, void*, int64_t, CommDType, ReduceOp) const override { no(); }
  void reduce_scatterv(const void*, void*, std::span<const int64_t>, CommDType,
                       ReduceOp) const override { no(); }
  void alltoall(const void*, void*, int64_t, CommDType) const override { no(); }
  void alltoallv(const void*, std::span<const int64_t>, std::span<const int64_t>, void*,
                 std::span<const int64_t>, std::span<const int64_t>, CommDType) const override { no(); }
  void send(const void*, int64_t, CommDType, int, int) const override { no(); }
  void recv(void*, int64_t, CommDType, int, int) const override { no(); }

 private:
  [[noreturn]] void no() const {
    fail("communicator '{}' describes a layout only; it cannot communicate", name_);
  }
  int rank_, size_;
  std::string name_;
};

}  // namespace origami
