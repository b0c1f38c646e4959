// defines: MpiCommunicator (Communicator over an MPI_Comm)
// Host-memory collectives through MPI. The communicator owns its MPI_Comm (a duplicate of the
// world, or the result of a split) and returns MPI errors instead of aborting, so a failure
// becomes an origami::Error naming the operation and the group. int64 counts are checked to fit
// MPI's int counts.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <vector>

#include "comm/communicator.h"

namespace origami {

class MpiCommunicator final : public Communicator {
 public:
  // Takes ownership of `comm` (freed in the destructor unless MPI is already finalised).
  MpiCommunicator(MPI_Comm comm, std::string name);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int rank() const override { return rank_; }
  int size() const override { return size_; }
  const std::string& name() const override { return name_; }
  const std::vector<int>& world_ranks() const override { return world_ranks_; }
  MPI_Comm raw() const { return comm_; }

  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const override;

  void barrier() const override;
  void allreduce(const void* send, void* recv, int64_t count, CommDType t,
                 ReduceOp op) const override;
  void broadcast(void* buf, int64_t count, CommDType t, int root) const override;
  void allgather(const void* send, void* recv, int64_t count, CommDType t) const override;
  void allgatherv(const void* send, int64_t send_count, void* recv,
                  std::span<const int64_t> recv_counts, std::span<const int64_t> displs,
                  CommDType t) const override;
  void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommDType t,
                      ReduceOp op) const override;
  void reduce_scatterv(const void* send, void* recv, std::span<const int64_t> recv_counts,
                       CommDType t, ReduceOp op) const override;
  void alltoall(const void* send, void* recv, int64_t count, CommDType t) const override;
  void alltoallv(const void* send, std::span<const int64_t> send_counts,
                 std::span<const int64_t> send_displs, void* recv,
                 std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                 CommDType t) const override;
  void send(const void* buf, int64_t count, CommDType t, int dst, int tag) const override;
  void recv(void* buf, int64_t count, CommDType t, int src, int tag) const override;

 private:
  // A large float sum (reduce-scatter, all-reduce) as an all-to-all and a local sum: see the .cpp.
  bool sums_by_alltoall(int64_t buffer_elements, CommDType t, ReduceOp op,
                        int64_t min_bytes) const;
  // `send` holds size() blocks, block j of counts[j] elements; `recv` gets the sum over ranks of
  // block rank(), added in rank order.
  void alltoall_sum(const void* send, std::span<const int64_t> counts, void* recv,
                    CommDType t) const;
  // The all-reduce as alltoall_sum into this rank's part of recv, then an all-gather in place.
  void allreduce_by_alltoall(const void* send, void* recv, int64_t count, CommDType t) const;
  std::byte* scratch_bytes(size_t bytes) const;

  MPI_Comm comm_;
  std::string name_;
  int rank_ = 0, size_ = 1;
  std::vector<int> world_ranks_;
  mutable std::vector<std::byte> scratch_;  // alltoall_sum's blocks, kept (see scratch_bytes)
};

}  // namespace origami
