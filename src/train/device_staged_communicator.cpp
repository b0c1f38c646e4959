// defines: DeviceStagedCommunicator (see device_staged_communicator.h)
// Each call: stage the device inputs to host vectors, run the wrapped collective on host
// memory, copy the outputs back. In-place calls (send == recv) stage one buffer. The staging is
// synchronous (copy_to_host waits for the stream), which orders the collective after the
// kernels that produced its input.
#include "train/device_staged_communicator.h"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <cstring>
#include <numeric>
#include <vector>

#include "base/error.h"
#include "base/logging.h"
#include "comm/mpi_runtime.h"
#include "comm/nccl_communicator.h"
#ifdef ORIGAMI_WITH_CUDA
#include "backend/cuda/cuda_device.h"
#endif

namespace origami {

namespace {
int64_t total(std::span<const int64_t> counts, std::span<const int64_t> displs) {
  int64_t n = 0;
  for (size_t i = 0; i < counts.size(); ++i) n = std::max(n, displs[i] + counts[i]);
  return n;
}

// A host view of a buffer: the buffer itself if the host can read it, else a staged copy.
class Staged {
 public:
  Staged(Backend& be, const void* p, int64_t count, CommDType t, bool copy_in)
      : be_(be),
        p_(const_cast<void*>(p)),
        bytes_(size_t(std::max<int64_t>(count, 0) * comm_dtype_bytes(t))) {
    device_ = p && be.is_device_memory(p);
    if (!device_) return;
    host_.resize(bytes_);
    if (copy_in) be.copy_to_host(host_.data(), p, bytes_);
  }
  void* host() { return device_ ? static_cast<void*>(host_.data()) : p_; }
  void copy_out() {
    if (device_) be_.copy_from_host(p_, host_.data(), bytes_);
  }

 private:
  Backend& be_;
  void* p_;
  size_t bytes_;
  bool device_ = false;
  std::vector<unsigned char> host_;
};
}  // namespace

DeviceStagedCommunicator::DeviceStagedCommunicator(const Communicator& inner, Backend& be)
    : inner_(&inner), be_(&be) {}
DeviceStagedCommunicator::DeviceStagedCommunicator(std::unique_ptr<Communicator> owned, Backend& be)
    : owned_(std::move(owned)), inner_(owned_.get()), be_(&be) {}

std::unique_ptr<Communicator> DeviceStagedCommunicator::split(int color, int key,
                                                              const std::string& name) const {
  return std::make_unique<DeviceStagedCommunicator>(inner_->split(color, key, name), *be_);
}

void DeviceStagedCommunicator::allreduce(const void* send, void* recv, int64_t count, CommDType t,
                                         ReduceOp op) const {
  if (send == recv) {
    Staged b(*be_, recv, count, t, true);
    inner_->allreduce(b.host(), b.host(), count, t, op);
    b.copy_out();
    return;
  }
  Staged s(*be_, send, count, t, true), r(*be_, recv, count, t, false);
  inner_->allreduce(s.host(), r.host(), count, t, op);
  r.copy_out();
}

void DeviceStagedCommunicator::broadcast(void* buf, int64_t count, CommDType t, int root) const {
  Staged b(*be_, buf, count, t, rank() == root);
  inner_->broadcast(b.host(), count, t, root);
  b.copy_out();
}

void DeviceStagedCommunicator::allgather(const void* send, void* recv, int64_t count,
                                         CommDType t) const {
  Staged s(*be_, send, count, t, true), r(*be_, recv, count * size(), t, false);
  inner_->allgather(s.host(), r.host(), count, t);
  r.copy_out();
}

void DeviceStagedCommunicator::allgatherv(const void* send, int64_t send_count, void* recv,
                                          std::span<const int64_t> recv_counts,
                                          std::span<const int64_t> displs, CommDType t) const {
  // Elements of recv outside every block keep their values: stage them in too.
  Staged s(*be_, send, send_count, t, true), r(*be_, recv, total(recv_counts, displs), t, true);
  inner_->allgatherv(s.host(), send_count, r.host(), recv_counts, displs, t);
  r.copy_out();
}

void DeviceStagedCommunicator::reduce_scatter(const void* send, void* recv, int64_t recv_count,
                                              CommDType t, ReduceOp op) const {
  Staged s(*be_, send, recv_count * size(), t, true), r(*be_, recv, recv_count, t, false);
  inner_->reduce_scatter(s.host(), r.host(), recv_count, t, op);
  r.copy_out();
}

void DeviceStagedCommunicator::reduce_scatterv(const void* send, void* recv,
                                               std::span<const int64_t> recv_counts, CommDType t,
                                               ReduceOp op) const {
  const int64_t all = std::accumulate(recv_counts.begin(), recv_counts.end(), int64_t{0});
  Staged s(*be_, send, all, t, true), r(*be_, recv, recv_counts[size_t(rank())], t, false);
  inner_->reduce_scatterv(s.host(), r.host(), recv_counts, t, op);
  r.copy_out();
}

void DeviceStagedCommunicator::alltoall(const void* send, void* recv, int64_t count,
                                        CommDType t) const {
  Staged s(*be_, send, count * size(), t, true), r(*be_, recv, count * size(), t, false);
  inner_->alltoall(s.host(), r.host(), count, t);
  r.copy_out();
}

void DeviceStagedCommunicator::alltoallv(const void* send, std::span<const int64_t> send_counts,
                                         std::span<const int64_t> send_displs, void* recv,
                                         std::span<const int64_t> recv_counts,
                                         std::span<const int64_t> recv_displs, CommDType t) const {
  Staged s(*be_, send, total(send_counts, send_displs), t, true);
  Staged r(*be_, recv, total(recv_counts, recv_displs), t, true);
  inner_->alltoallv(s.host(), send_counts, send_displs, r.host(), recv_counts, recv_displs, t);
  r.copy_out();
}

void DeviceStagedCommunicator::send(const void* buf, int64_t count, CommDType t, int dst,
                                    int tag) const {
  Staged b(*be_, buf, count, t, true);
  inner_->send(b.host(), count, t, dst, tag);
}

void DeviceStagedCommunicator::recv(void* buf, int64_t count, CommDType t, int src, int tag) const {
  Staged b(*be_, buf, count, t, false);
  inner_->recv(b.host(), count, t, src, tag);
  b.copy_out();
}

std::unique_ptr<Communicator> wrap_for_backend(const Communicator& world, Backend& be) {
  if (be.name() == "cpu") return nullptr;
  const char* env = std::getenv("ORIGAMI_DEVICE_COMM");
  const std::string forced = env ? env : "";
  check(forced.empty() || forced == "staged" || forced == "nccl",
        "ORIGAMI_DEVICE_COMM: unknown value '{}' (allowed: staged, nccl)", forced);
  int own_gpu = 0;
#ifdef ORIGAMI_WITH_CUDA
  own_gpu = node_local_size() <= cuda::device_count() ? 1 : 0;
#endif
  int use_nccl = nccl_available() && be.device_stream() && (forced == "nccl" || (forced.empty() && own_gpu));
  world.allreduce(&use_nccl, &use_nccl, 1, CommDType::i32, ReduceOp::min);
  if (forced == "nccl" && !use_nccl)
    fail("ORIGAMI_DEVICE_COMM=nccl, but NCCL is unavailable on some rank (this build has no "
         "NCCL, or the backend has no device stream); unset ORIGAMI_DEVICE_COMM or set it to "
         "staged");
  if (use_nccl) {
    spdlog::info("device communication: NCCL (one GPU per rank)");
    return std::make_unique<NcclCommunicator>(world.split(0, world.rank(), world.name()),
                                              be.device_stream());
  }
  spdlog::info("device communication: MPI through host staging{}",
               own_gpu ? "" : " (ranks share a GPU, which NCCL refuses)");
  return std::make_unique<DeviceStagedCommunicator>(world, be);
}

}  // namespace origami
