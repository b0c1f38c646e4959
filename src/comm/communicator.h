// defines: Communicator (collectives over one process group), CommDType, ReduceOp
// Model and trainer code talk to other ranks only through this interface, on named groups
// (ProcessGroups in parallel_layout.h). The MPI implementation works on host memory; the NCCL
// one (CUDA issue) on device memory. Counts are in elements, displacements in elements.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace origami {

enum class CommDType { f32, f64, i32, i64, u8 };
enum class ReduceOp { sum, max, min };

template <typename T> constexpr CommDType comm_dtype_of();
template <> constexpr CommDType comm_dtype_of<float>() { return CommDType::f32; }
template <> constexpr CommDType comm_dtype_of<double>() { return CommDType::f64; }
template <> constexpr CommDType comm_dtype_of<int32_t>() { return CommDType::i32; }
template <> constexpr CommDType comm_dtype_of<int64_t>() { return CommDType::i64; }
template <> constexpr CommDType comm_dtype_of<uint8_t>() { return CommDType::u8; }
// Bytes of one element.
constexpr int64_t comm_dtype_bytes(CommDType t) {
  switch (t) {
    case CommDType::f32: case CommDType::i32: return 4;
    case CommDType::f64: case CommDType::i64: return 8;
    case CommDType::u8: return 1;
  }
  return 1;
}

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int rank() const = 0;  // rank within this group
  virtual int size() const = 0;
  virtual const std::string& name() const = 0;         // e.g. "dp", "ep", "world"
  virtual const std::vector<int>& world_ranks() const = 0;  // members, by group rank

  // New communicator of the ranks with the same color, ordered by key (MPI_Comm_split).
  virtual std::unique_ptr<Communicator> split(int color, int key, const std::string& name) const = 0;

  virtual void barrier() const = 0;
  // In place when send == recv.
  virtual void allreduce(const void* send, void* recv, int64_t count, CommDType t, ReduceOp op) const = 0;
  virtual void broadcast(void* buf, int64_t count, CommDType t, int root) const = 0;
  // recv holds size()*count elements, rank i's block at i*count.
  virtual void allgather(const void* send, void* recv, int64_t count, CommDType t) const = 0;
  virtual void allgatherv(const void* send, int64_t send_count, void* recv,
                          std::span<const int64_t> recv_counts, std::span<const int64_t> displs,
                          CommDType t) const = 0;
  // send holds size()*recv_count elements; rank i receives the reduced block i.
  virtual void reduce_scatter(const void* send, void* recv, int64_t recv_count, CommDType t,
                              ReduceOp op) const = 0;
  // Uneven blocks: send holds sum(recv_counts) elements, block i (recv_counts[i] elements, blocks
  // back to back in rank order) is reduced into rank i's recv.
  virtual void reduce_scatterv(const void* send, void* recv, std::span<const int64_t> recv_counts,
                               CommDType t, ReduceOp op) const = 0;
  virtual void alltoall(const void* send, void* recv, int64_t count, CommDType t) const = 0;
  virtual void alltoallv(const void* send, std::span<const int64_t> send_counts,
                         std::span<const int64_t> send_displs, void* recv,
                         std::span<const int64_t> recv_counts, std::span<const int64_t> recv_displs,
                         CommDType t) const = 0;
  virtual void send(const void* buf, int64_t count, CommDType t, int dst, int tag) const = 0;
  virtual void recv(void* buf, int64_t count, CommDType t, int src, int tag) const = 0;

  // Typed conveniences.
  template <typename T> void allreduce(std::span<T> x, ReduceOp op = ReduceOp::sum) const {
    allreduce(x.data(), x.data(), int64_t(x.size()), comm_dtype_of<std::remove_const_t<T>>(), op);
  }
  template <typename T> T allreduce_scalar(T x, ReduceOp op = ReduceOp::sum) const {
    allreduce(&x, &x, 1, comm_dtype_of<T>(), op);
    return x;
  }
};

// The world communicator over MPI_COMM_WORLD (MPI must be initialised).
std::unique_ptr<Communicator> make_mpi_world();

}  // namespace origami
