// defines: NcclCommunicator (see nccl_communicator.h)
#include "comm/nccl_communicator.h"

#include "base/error.h"

#ifdef ORIGAMI_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <cstring>

namespace origami {

bool nccl_available() { return true; }

namespace {

ncclDataType_t nccl_type(CommDType t) {
  switch (t) {
    case CommDType::f32: return ncclFloat32;
    case CommDType::f64: return ncclFloat64;
    case CommDType::i32: return ncclInt32;
    case CommDType::i64: return ncclInt64;
    case CommDType::u8: return ncclUint8;
  }
  return ncclFloat32;
}
size_t type_bytes(CommDType t) {
  return (t == CommDType::f64 || t == CommDType::i64) ? 8 : (t == CommDType::u8 ? 1 : 4);
}
ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum: return ncclSum;
    case ReduceOp::max: return ncclMax;
    case ReduceOp::min: return ncclMin;
  }
  return ncclSum;
}

bool on_device(const void* p) {
  if (!p) return false;
  cudaPointerAttributes a{};
  if (cudaPointerGetAttributes(&a, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return a.type == cudaMemoryTypeDevice;
}

}  // namespace

struct NcclCommunicator::Impl {
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  std::string group;

  void check(ncclResult_t r, const char* call) const {
    if (r == ncclSuccess) return;
    fail("NCCL error in {} on group '{}': {} ({})", call, group, ncclGetErrorString(r),
         ncclGetLastError(comm));
  }
  // Device or host: both buffers must agree (null = "no buffer on this rank").
  bool device(const void* a, const void* b, const char* op) const {
    const bool da = a && on_device(a), db = b && on_device(b);
    const bool any_a = a != nullptr, any_b = b != nullptr;
    if (any_a && any_b && da != db)
      fail("{} on group '{}': one buffer is device memory and the other host memory", op, group);
    return da || db;
  }
  static const char* at(const void* p, int64_t elems, CommDType t) {
    return static_cast<const char*>(p) + size_t(elems) * type_bytes(t);
  }
};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host, void* stream)
    : host_(std::move(host)), impl_(std::make_unique<Impl>()) {
  impl_->stream = static_cast<cudaStream_t>(stream);
  impl_->group = host_->name();
  ncclUniqueId id{};
  if (host_->rank() == 0) impl_->check(ncclGetUniqueId(&id), "ncclGetUniqueId");
  host_->broadcast(&id, int64_t(sizeof(id)), CommDType::u8, 0);
  impl_->check(ncclCommInitRank(&impl_->comm, host_->size(), id, host_->rank()), "ncclCommInitRank");
}

NcclCommunicator::~NcclCommunicator() {
  if (impl_ && impl_->comm) ncclCommDestroy(impl_->comm);
}

std::unique_ptr<Communicator> NcclCommunicator::split(int color, int key, const std::string& name) const {
  return std::make_unique<NcclCommunicator>(host_->split(color, key, name), impl_->stream);
}

void NcclCommunicator::allreduce(const void* send, void* recv, int64_t count, CommDType t, ReduceOp op) const {
  if (!impl_->device(send, recv, "allreduce")) return host_->allreduce(send, recv, count, t, op);
  impl_->check(ncclAllReduce(send, recv, size_t(count), nccl_type(t), nccl_op(op), impl_->comm, impl_->stream),
               "ncclAllReduce");
}

void NcclCommunicator::broadcast(void* buf, int64_t count, CommDType t, int root) const {
  if (!impl_->device(buf, nullptr, "broadcast")) return host_->broadcast(buf, count, t, root);
  impl_->check(ncclBroadcast(buf, buf, size_t(count), nccl_type(t), root, impl_->comm, impl_->stream),
               "ncclBroadcast");
}

void NcclCommunicator::allgather(const void* send, void* recv, int64_t count, CommDType t) const {
  if (!impl_->device(send, recv, "allgather")) return host_->allgather(send, recv, count, t);
  impl_->check(ncclAllGather(send, recv, size_t(count), nccl_type(t), impl_->comm, impl_->stream),
               "ncclAllGather");
}

void NcclCommunicator::allgatherv(const void* send, int64_t send_count, void* recv,
                                  std::span<const int64_t> recv_counts,
                                  std::span<const int64_t> displs, CommDType t) const {
  if (!impl_->device(send, recv, "allgatherv"))
    return host_->allgatherv(send, send_count, recv, recv_counts, displs, t);
  // Each rank broadcasts its block into everyone's slot for it.
  impl_->check(ncclGroupStart(), "ncclGroupStart");
  for (int i = 0; i < size(); ++i) {
    char* slot = const_cast<char*>(Impl::at(recv, displs[size_t(i)], t));
    const void* src = i == rank() ? send : slot;
    impl_->check(ncclBroadcast(src, slot, size_t(recv_counts[size_t(i)]), nccl_type(t), i,
                               impl_->comm, impl_->stream),
                 "ncclBroadcast (allgatherv)");
  }
  impl_->check(ncclGroupEnd(), "ncclGroupEnd (allgatherv)");
}

void NcclCommunicator::reduce_scatter(const void* send, void* recv, int64_t recv_count, CommDType t,
                                      ReduceOp op) const {
  if (!impl_->device(send, recv, "reduce_scatter")) return host_->reduce_scatter(send, recv, recv_count, t, op);
  impl_->check(ncclReduceScatter(send, recv, size_t(recv_count), nccl_type(t), nccl_op(op), impl_->comm,
                                 impl_->stream),
               "ncclReduceScatter");
}

void NcclCommunicator::reduce_scatterv(const void* send, void* recv, std::span<const int64_t> recv_counts,
                                       CommDType t, ReduceOp op) const {
  if (!impl_->device(send, recv, "reduce_scatterv")) return host_->reduce_scatterv(send, recv, recv_counts, t, op);
  // Block i is reduced onto rank i.
  impl_->check(ncclGroupStart(), "ncclGroupStart");
  int64_t off = 0;
  for (int i = 0; i < size(); ++i) {
    void* dst = i == rank() ? recv : const_cast<void*>(send);  // ignored on non-roots
    impl_->check(ncclReduce(Impl::at(send, off, t), dst, size_t(recv_counts[size_t(i)]), nccl_type(t),
                            nccl_op(op), i, impl_->comm, impl_->stream),
                 "ncclReduce (reduce_scatterv)");
    off += recv_counts[size_t(i)];
  }
  impl_->check(ncclGroupEnd(), "ncclGroupEnd (reduce_scatterv)");
}

void NcclCommunicator::alltoall(const void* send, void* recv, int64_t count, CommDType t) const {
  if (!impl_->device(send, recv, "alltoall")) return host_->alltoall(send, recv, count, t);
  std::vector<int64_t> counts(static_cast<size_t>(size()), count), displs(static_cast<size_t>(size()));
  for (int i = 0; i < size(); ++i) displs[size_t(i)] = int64_t(i) * count;
  alltoallv(send, counts, displs, recv, counts, displs, t);
}

void NcclCommunicator::alltoallv(const void* send, std::span<const int64_t> send_counts,
                                 std::span<const int64_t> send_displs, void* recv,
                                 std::span<const int64_t> recv_counts,
                                 std::span<const int64_t> recv_displs, CommDType t) const {
  if (!impl_->device(send, recv, "alltoallv"))
    return host_->alltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, t);
  // Grouped point-to-point: every pair's transfers are in flight together.
  impl_->check(ncclGroupStart(), "ncclGroupStart");
  for (int i = 0; i < size(); ++i) {
    if (send_counts[size_t(i)] > 0)
      impl_->check(ncclSend(Impl::at(send, send_displs[size_t(i)], t), size_t(send_counts[size_t(i)]),
                            nccl_type(t), i, impl_->comm, impl_->stream),
                   "ncclSend (alltoallv)");
    if (recv_counts[size_t(i)] > 0)
      impl_->check(ncclRecv(const_cast<char*>(Impl::at(recv, recv_displs[size_t(i)], t)),
                            size_t(recv_counts[size_t(i)]), nccl_type(t), i, impl_->comm, impl_->stream),
                   "ncclRecv (alltoallv)");
  }
  impl_->check(ncclGroupEnd(), "ncclGroupEnd (alltoallv)");
}

void NcclCommunicator::send(const void* buf, int64_t count, CommDType t, int dst, int tag) const {
  if (!impl_->device(buf, nullptr, "send")) return host_->send(buf, count, t, dst, tag);
  impl_->check(ncclSend(buf, size_t(count), nccl_type(t), dst, impl_->comm, impl_->stream), "ncclSend");
}

void NcclCommunicator::recv(void* buf, int64_t count, CommDType t, int src, int tag) const {
  if (!impl_->device(buf, nullptr, "recv")) return host_->recv(buf, count, t, src, tag);
  impl_->check(ncclRecv(buf, size_t(count), nccl_type(t), src, impl_->comm, impl_->stream), "ncclRecv");
}

}  // namespace origami

#else  // no NCCL in this build

namespace origami {

bool nccl_available() { return false; }

struct NcclCommunicator::Impl {};

NcclCommunicator::NcclCommunicator(std::unique_ptr<Communicator> host, void*) : host_(std::move(host)) {
  fail("NCCL communicator requested on group '{}' but this build has no NCCL (nccl.h / libnccl "
       "were not found at configure time)",
       host_->name());
}
NcclCommunicator::~NcclCommunicator() = default;
#define ORIGAMI_NO_NCCL(...) fail("no NCCL in this build")
std::unique_ptr<Communicator> NcclCommunicator::split(int, int, const std::string&) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::allreduce(const void*, void*, int64_t, CommDType, ReduceOp) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::broadcast(void*, int64_t, CommDType, int) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::allgather(const void*, void*, int64_t, CommDType) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::allgatherv(const void*, int64_t, void*, std::span<const int64_t>,
                                  std::span<const int64_t>, CommDType) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::reduce_scatter(const void*, void*, int64_t, CommDType, ReduceOp) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::reduce_scatterv(const void*, void*, std::span<const int64_t>, CommDType,
                                       ReduceOp) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::alltoall(const void*, void*, int64_t, CommDType) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::alltoallv(const void*, std::span<const int64_t>, std::span<const int64_t>, void*,
                                 std::span<const int64_t>, std::span<const int64_t>, CommDType) const {
  ORIGAMI_NO_NCCL();
}
void NcclCommunicator::send(const void*, int64_t, CommDType, int, int) const { ORIGAMI_NO_NCCL(); }
void NcclCommunicator::recv(void*, int64_t, CommDType, int, int) const { ORIGAMI_NO_NCCL(); }
#undef ORIGAMI_NO_NCCL

}  // namespace origami

#endif
