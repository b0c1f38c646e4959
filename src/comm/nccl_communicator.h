// defines: NcclCommunicator (collectives on device memory through NCCL), nccl_available()
// One NCCL communicator per process group, created collectively: the group's rank 0 makes the
// unique id and the host communicator (MPI) broadcasts it. Device buffers go through NCCL on the
// compute stream the backend uses, so a collective is ordered after the kernels that produced
// its input and before those that consume its output, with no host synchronisation. Host
// buffers (counts, scalars) go through the wrapped host communicator, so callers need not sort
// their buffers. All-to-all(v), all-gather(v) and reduce-scatter(v) are grouped point-to-point,
// broadcast or reduce calls (NCCL has no v-collectives).
// NCCL needs one GPU per rank: ranks that share a device use DeviceStagedCommunicator instead.
#pragma once
#include <memory>

#include "comm/communicator.h"

namespace origami {

// True if this build has NCCL (ORIGAMI_WITH_NCCL).
bool nccl_available();

class NcclCommunicator final : public Communicator {
 public:
  // Collective over `host`'s ranks. `stream` is a cudaStream_t (the backend's compute stream).
  NcclCommunicator(std::unique_ptr<Communicator> host, void* stream);
  ~NcclCommunicator() override;

  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  const std::string& name() const override { return host_->name(); }
  const std::vector<int>& world_ranks() const override { return host_->world_ranks(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const override;
  void barrier() const override { host_->barrier(); }
  void allreduce(const void* send, void* recv, int64_t count, CommDType t, ReduceOp op) const override;
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
  struct Impl;
  std::unique_ptr<Communicator> host_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace origami
