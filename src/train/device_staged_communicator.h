// defines: DeviceStagedCommunicator, wrap_for_backend()
// The MPI path for device memory: a Communicator decorator that copies any device buffer through
// host memory around the wrapped (MPI) collective. It is how several ranks share one GPU in tests
// (NCCL refuses two ranks on one device) and the fallback wherever NCCL is not available. Host
// buffers (counts, scalars) pass straight through, so callers need not know which is which.
#pragma once
#include <memory>

#include "backend/backend.h"
#include "comm/communicator.h"

namespace origami {

class DeviceStagedCommunicator final : public Communicator {
 public:
  // `inner` must outlive this object unless owned (the split() results own theirs).
  DeviceStagedCommunicator(const Communicator& inner, Backend& be);
  DeviceStagedCommunicator(std::unique_ptr<Communicator> owned, Backend& be);

  int rank() const override { return inner_->rank(); }
  int size() const override { return inner_->size(); }
  const std::string& name() const override { return inner_->name(); }
  const std::vector<int>& world_ranks() const override { return inner_->world_ranks(); }
  std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const override;
  void barrier() const override { inner_->barrier(); }
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
  std::unique_ptr<Communicator> owned_;
  const Communicator* inner_;
  Backend* be_;
};

// The world as a device backend's model and optimizer should use it: null for a backend whose
// memory the host can read (cpu: use `world` itself); NCCL when this build has it and every rank
// has a GPU of its own (decided collectively, so all ranks agree); else host staging.
// ORIGAMI_DEVICE_COMM=staged|nccl overrides the choice.
std::unique_ptr<Communicator> wrap_for_backend(const Communicator& world, Backend& be);

}  // namespace origami
