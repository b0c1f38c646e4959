// MpiCommunicator: the Communicator interface on MPI (see mpi_communicator.h). Each call checks
// its arguments (counts fit an int, span lengths equal the group size, peers in range) and turns
// a failing MPI return code into an Error naming the call, the group and MPI's own message.
#include "comm/mpi_communicator.h"

#include <fmt/format.h>

#include <algorithm>
#include <climits>
#include <cstddef>

#include "base/error.h"
#include "comm/collective_watchdog.h"

namespace origami {
namespace {

MPI_Datatype mpi_type(CommDType t) {
  switch (t) {
    case CommDType::f32:
      return MPI_FLOAT;
    case CommDType::f64:
      return MPI_DOUBLE;
    case CommDType::i32:
      return MPI_INT32_T;
    case CommDType::i64:
      return MPI_INT64_T;
    case CommDType::u8:
      return MPI_UINT8_T;
  }
  fail("unknown CommDType {}", int(t));
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::sum:
      return MPI_SUM;
    case ReduceOp::max:
      return MPI_MAX;
    case ReduceOp::min:
      return MPI_MIN;
  }
  fail("unknown ReduceOp {}", int(op));
}

void mpi_check(int rc, const char* call, const std::string& group) {
  if (rc == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  fail("{} on communicator '{}' failed: {}", call, group, std::string(text, len));
}

int to_int(int64_t count, const char* what, const char* call, const std::string& group) {
  check(count >= 0 && count <= INT_MAX,
        "{} on communicator '{}': {} = {} does not fit MPI's int counts (0..{}); split the "
        "transfer",
        call, group, what, count, INT_MAX);
  return int(count);
}

std::vector<int> to_ints(std::span<const int64_t> v, int size, const char* what, const char* call,
                         const std::string& group) {
  check(int64_t(v.size()) == size,
        "{} on communicator '{}': {} has {} entries, need one per rank ({})", call, group, what,
        v.size(), size);
  std::vector<int> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = to_int(v[i], what, call, group);
  return out;
}

// Open MPI 4.1's reduce-scatter moves a large buffer in pairwise exchanges that, over shared
// memory with ranks sharing cores, run at a tenth of an all-to-all's pace: 48 MB over 8 ranks on
// a 2-core VM took 0.83-1.3 s as MPI_Reduce_scatter and 0.47-0.64 s as MPI_Allreduce, but
// 33-91 ms as an all-to-all plus a local sum (2026-12-07, docs/performance.md). Sums of floats
// from these sizes of buffer up take the all-to-all (the all-reduce adds an all-gather, so it
// gains only from a few MiB); smaller ones, and max/min, stay with MPI's own.
constexpr int64_t kReduceScatterByAlltoallBytes = int64_t(1) << 20;
constexpr int64_t kAllreduceByAlltoallBytes = int64_t(4) << 20;

// out = blocks[0] + blocks[1] + ... in that order (so the result does not depend on which
// algorithm MPI would have picked), one block at a time so the adds vectorise.
template <typename T>
void sum_blocks(const std::byte* raw, int64_t n, int parts, void* out_raw) {
  const T* blocks = reinterpret_cast<const T*>(raw);
  T* out = static_cast<T*>(out_raw);
  std::copy(blocks, blocks + n, out);
  for (int j = 1; j < parts; ++j) {
    const T* b = blocks + int64_t(j) * n;
    for (int64_t i = 0; i < n; ++i) out[i] += b[i];
  }
}

}  // namespace

bool MpiCommunicator::sums_by_alltoall(int64_t buffer_elements, CommDType t, ReduceOp op,
                                       int64_t min_bytes) const {
  return size_ > 1 && op == ReduceOp::sum && (t == CommDType::f32 || t == CommDType::f64) &&
         buffer_elements * comm_dtype_bytes(t) >= min_bytes;
}

std::byte* MpiCommunicator::scratch_bytes(size_t bytes) const {
  // Kept between calls: a fresh buffer of this size costs its page faults on every call, which
  // on the 2-core VM took longer than the exchange itself (a 48 MB all-to-all: 0.65-0.83 s into
  // new memory, 30-60 ms into memory already touched).
  if (scratch_.size() < bytes) scratch_.resize(bytes);
  return scratch_.data();
}

void MpiCommunicator::alltoall_sum(const void* send, std::span<const int64_t> counts, void* recv,
                                   CommDType t) const {
  const int64_t mine = counts[size_t(rank_)];
  std::vector<int64_t> send_displs(size_t(size_), 0), recv_counts(size_t(size_), mine),
      recv_displs(static_cast<size_t>(size_));
  for (int j = 1; j < size_; ++j)
    send_displs[size_t(j)] = send_displs[size_t(j - 1)] + counts[size_t(j - 1)];
  for (int j = 0; j < size_; ++j) recv_displs[size_t(j)] = j * mine;
  std::byte* blocks = scratch_bytes(size_t(size_ * mine * comm_dtype_bytes(t)));
  alltoallv(send, counts, send_displs, blocks, recv_counts, recv_displs, t);
  if (t == CommDType::f32)
    sum_blocks<float>(blocks, mine, size_, recv);
  else
    sum_blocks<double>(blocks, mine, size_, recv);
}

void MpiCommunicator::allreduce_by_alltoall(const void* send, void* recv, int64_t count,
                                            CommDType t) const {
  const auto n = static_cast<size_t>(size_);
  std::vector<int64_t> counts(n), displs(n, 0);
  for (int j = 0; j < size_; ++j) counts[size_t(j)] = count / size_ + (j < count % size_ ? 1 : 0);
  for (int j = 1; j < size_; ++j) displs[size_t(j)] = displs[size_t(j - 1)] + counts[size_t(j - 1)];
  // This rank's summed part goes straight to its place in recv: the all-to-all has read `send`
  // (which may be recv) by then, and the all-gather then fills the rest in place.
  std::byte* mine = static_cast<std::byte*>(recv) + displs[size_t(rank_)] * comm_dtype_bytes(t);
  alltoall_sum(send, counts, mine, t);
  const auto c = to_ints(counts, size_, "counts", "allreduce", name_);
  const auto d = to_ints(displs, size_, "displs", "allreduce", name_);
  mpi_check(MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, c.data(), d.data(),
                           mpi_type(t), comm_),
            "MPI_Allgatherv", name_);
}

MpiCommunicator::MpiCommunicator(MPI_Comm comm, std::string name)
    : comm_(comm), name_(std::move(name)) {
  mpi_check(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler", name_);
  mpi_check(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank", name_);
  mpi_check(MPI_Comm_size(comm_, &size_), "MPI_Comm_size", name_);
  // Members as MPI_COMM_WORLD ranks, in group-rank order.
  MPI_Group group, world_group;
  MPI_Comm_group(comm_, &group);
  MPI_Comm_group(MPI_COMM_WORLD, &world_group);
  std::vector<int> local(size_);
  for (int i = 0; i < size_; ++i) local[i] = i;
  world_ranks_.resize(size_);
  mpi_check(MPI_Group_translate_ranks(group, size_, local.data(), world_group, world_ranks_.data()),
            "MPI_Group_translate_ranks", name_);
  MPI_Group_free(&group);
  MPI_Group_free(&world_group);
}

MpiCommunicator::~MpiCommunicator() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm_ != MPI_COMM_NULL) MPI_Comm_free(&comm_);
}

std::unique_ptr<Communicator> MpiCommunicator::split(int color, int key,
                                                     const std::string& name) const {
  CollectiveGuard guard("MPI_Comm_split", name_, world_ranks_);
  check(color >= 0, "split of communicator '{}' into '{}': color {} must be >= 0", name_, name,
        color);
  MPI_Comm out = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split(comm_, color, key, &out), "MPI_Comm_split", name_);
  return std::make_unique<MpiCommunicator>(out, name);
}

void MpiCommunicator::barrier() const {
  CollectiveGuard guard("MPI_Barrier", name_, world_ranks_);
  mpi_check(MPI_Barrier(comm_), "MPI_Barrier", name_);
}

void MpiCommunicator::allreduce(const void* send, void* recv, int64_t count, CommDType t,
                                ReduceOp op) const {
  CollectiveGuard guard("MPI_Allreduce", name_, world_ranks_);
  const int n = to_int(count, "count", "allreduce", name_);
  if (sums_by_alltoall(count, t, op, kAllreduceByAlltoallBytes)) {
    allreduce_by_alltoall(send, recv, count, t);
    return;
  }
  mpi_check(
      MPI_Allreduce(send == recv ? MPI_IN_PLACE : send, recv, n, mpi_type(t), mpi_op(op), comm_),
      "MPI_Allreduce", name_);
}

void MpiCommunicator::broadcast(void* buf, int64_t count, CommDType t, int root) const {
  CollectiveGuard guard("MPI_Bcast", name_, world_ranks_);
  check(root >= 0 && root < size_,
        "broadcast on communicator '{}': root {} is not a rank of "
        "this group (size {})",
        name_, root, size_);
  mpi_check(MPI_Bcast(buf, to_int(count, "count", "broadcast", name_), mpi_type(t), root, comm_),
            "MPI_Bcast", name_);
}

void MpiCommunicator::allgather(const void* send, void* recv, int64_t count, CommDType t) const {
  CollectiveGuard guard("MPI_Allgather", name_, world_ranks_);
  const int n = to_int(count, "count", "allgather", name_);
  to_int(count * size_, "count x size", "allgather", name_);
  mpi_check(MPI_Allgather(send, n, mpi_type(t), recv, n, mpi_type(t), comm_), "MPI_Allgather",
            name_);
}

void MpiCommunicator::allgatherv(const void* send, int64_t send_count, void* recv,
                                 std::span<const int64_t> recv_counts,
                                 std::span<const int64_t> displs, CommDType t) const {
  CollectiveGuard guard("MPI_Allgatherv", name_, world_ranks_);
  const int n = to_int(send_count, "send_count", "allgatherv", name_);
  auto counts = to_ints(recv_counts, size_, "recv_counts", "allgatherv", name_);
  auto offsets = to_ints(displs, size_, "displs", "allgatherv", name_);
  check(counts[rank_] == n,
        "allgatherv on communicator '{}': send_count {} differs from "
        "recv_counts[{}] = {}",
        name_, n, rank_, counts[rank_]);
  mpi_check(
      MPI_Allgatherv(send, n, mpi_type(t), recv, counts.data(), offsets.data(), mpi_type(t), comm_),
      "MPI_Allgatherv", name_);
}

void MpiCommunicator::reduce_scatter(const void* send, void* recv, int64_t recv_count, CommDType t,
                                     ReduceOp op) const {
  CollectiveGuard guard("MPI_Reduce_scatter_block", name_, world_ranks_);
  const int n = to_int(recv_count, "recv_count", "reduce_scatter", name_);
  to_int(recv_count * size_, "recv_count x size", "reduce_scatter", name_);
  if (sums_by_alltoall(recv_count * size_, t, op, kReduceScatterByAlltoallBytes)) {
    const std::vector<int64_t> counts(size_t(size_), recv_count);
    alltoall_sum(send, counts, recv, t);
    return;
  }
  mpi_check(MPI_Reduce_scatter_block(send, recv, n, mpi_type(t), mpi_op(op), comm_),
            "MPI_Reduce_scatter_block", name_);
}

void MpiCommunicator::reduce_scatterv(const void* send, void* recv,
                                      std::span<const int64_t> recv_counts, CommDType t,
                                      ReduceOp op) const {
  CollectiveGuard guard("MPI_Reduce_scatter", name_, world_ranks_);
  auto rc = to_ints(recv_counts, size_, "recv_counts", "reduce_scatterv", name_);
  int64_t total = 0;
  for (int64_t c : recv_counts) total += c;
  if (sums_by_alltoall(total, t, op, kReduceScatterByAlltoallBytes)) {
    alltoall_sum(send, recv_counts, recv, t);
    return;
  }
  mpi_check(MPI_Reduce_scatter(send, recv, rc.data(), mpi_type(t), mpi_op(op), comm_),
            "MPI_Reduce_scatter", name_);
}

void MpiCommunicator::alltoall(const void* send, void* recv, int64_t count, CommDType t) const {
  CollectiveGuard guard("MPI_Alltoall", name_, world_ranks_);
  const int n = to_int(count, "count", "alltoall", name_);
  to_int(count * size_, "count x size", "alltoall", name_);
  mpi_check(MPI_Alltoall(send, n, mpi_type(t), recv, n, mpi_type(t), comm_), "MPI_Alltoall", name_);
}

void MpiCommunicator::alltoallv(const void* send, std::span<const int64_t> send_counts,
                                std::span<const int64_t> send_displs, void* recv,
                                std::span<const int64_t> recv_counts,
                                std::span<const int64_t> recv_displs, CommDType t) const {
  CollectiveGuard guard("MPI_Alltoallv", name_, world_ranks_);
  auto sc = to_ints(send_counts, size_, "send_counts", "alltoallv", name_);
  auto sd = to_ints(send_displs, size_, "send_displs", "alltoallv", name_);
  auto rc = to_ints(recv_counts, size_, "recv_counts", "alltoallv", name_);
  auto rd = to_ints(recv_displs, size_, "recv_displs", "alltoallv", name_);
  mpi_check(MPI_Alltoallv(send, sc.data(), sd.data(), mpi_type(t), recv, rc.data(), rd.data(),
                          mpi_type(t), comm_),
            "MPI_Alltoallv", name_);
}

void MpiCommunicator::send(const void* buf, int64_t count, CommDType t, int dst, int tag) const {
  CollectiveGuard guard("MPI_Send", name_, world_ranks_);
  check(dst >= 0 && dst < size_,
        "send on communicator '{}': destination {} is not a rank of "
        "this group (size {})",
        name_, dst, size_);
  mpi_check(MPI_Send(buf, to_int(count, "count", "send", name_), mpi_type(t), dst, tag, comm_),
            "MPI_Send", name_);
}

void MpiCommunicator::recv(void* buf, int64_t count, CommDType t, int src, int tag) const {
  CollectiveGuard guard("MPI_Recv", name_, world_ranks_);
  check(src >= 0 && src < size_,
        "recv on communicator '{}': source {} is not a rank of this "
        "group (size {})",
        name_, src, size_);
  MPI_Status status;
  mpi_check(
      MPI_Recv(buf, to_int(count, "count", "recv", name_), mpi_type(t), src, tag, comm_, &status),
      "MPI_Recv", name_);
  int got = 0;
  MPI_Get_count(&status, mpi_type(t), &got);
  check(got == count,
        "recv on communicator '{}' from rank {} (tag {}): expected {} elements, "
        "got {}",
        name_, src, tag, count, got);
}

std::unique_ptr<Communicator> make_mpi_world() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  check(initialized, "make_mpi_world: MPI is not initialised (call MPI_Init first)");
  // A duplicate keeps our traffic apart from any other user of MPI_COMM_WORLD.
  MPI_Comm dup = MPI_COMM_NULL;
  mpi_check(MPI_Comm_dup(MPI_COMM_WORLD, &dup), "MPI_Comm_dup", "world");
  return std::make_unique<MpiCommunicator>(dup, "world");
}

}  // namespace origami
