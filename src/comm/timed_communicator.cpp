// defines: TimedCommunicator (see timed_communicator.h)
#include "comm/timed_communicator.h"

#include <chrono>

#include "base/cpu_clock.h"

namespace origami {

template <typename F> void TimedCommunicator::timed(F&& f) const {
  const auto t0 = std::chrono::steady_clock::now();
  const double cpu0 = thread_cpu_seconds();
  f();
  CommTimes::Entry& e = times_->by_group[inner_.name()];
  ++e.calls;
  e.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  e.cpu_seconds += thread_cpu_seconds() - cpu0;
}

std::unique_ptr<Communicator> TimedCommunicator::split(int color, int key,
                                                       const std::string& name) const {
  return std::make_unique<TimedCommunicator>(inner_.split(color, key, name), times_);
}

void TimedCommunicator::barrier() const {
  timed([&] { inner_.barrier(); });
}
void TimedCommunicator::allreduce(const void* send, void* recv, int64_t count, CommDType t,
                                  ReduceOp op) const {
  timed([&] { inner_.allreduce(send, recv, count, t, op); });
}
void TimedCommunicator::broadcast(void* buf, int64_t count, CommDType t, int root) const {
  timed([&] { inner_.broadcast(buf, count, t, root); });
}
void TimedCommunicator::allgather(const void* send, void* recv, int64_t count,
                                  CommDType t) const {
  timed([&] { inner_.allgather(send, recv, count, t); });
}
void TimedCommunicator::allgatherv(const void* send, int64_t send_count, void* recv,
                                   std::span<const int64_t> recv_counts,
                                   std::span<const int64_t> displs, CommDType t) const {
  timed([&] { inner_.allgatherv(send, send_count, recv, recv_counts, displs, t); });
}
void TimedCommunicator::reduce_scatter(const void* send, void* recv, int64_t recv_count,
                                       CommDType t, ReduceOp op) const {
  timed([&] { inner_.reduce_scatter(send, recv, recv_count, t, op); });
}
void TimedCommunicator::reduce_scatterv(const void* send, void* recv,
                                        std::span<const int64_t> recv_counts, CommDType t,
                                        ReduceOp op) const {
  timed([&] { inner_.reduce_scatterv(send, recv, recv_counts, t, op); });
}
void TimedCommunicator::alltoall(const void* send, void* recv, int64_t count,
                                 CommDType t) const {
  timed([&] { inner_.alltoall(send, recv, count, t); });
}
void TimedCommunicator::alltoallv(const void* send, std::span<const int64_t> send_counts,
                                  std::span<const int64_t> send_displs, void* recv,
                                  std::span<const int64_t> recv_counts,
                                  std::span<const int64_t> recv_displs, CommDType t) const {
  timed([&] {
    inner_.alltoallv(send, send_counts, send_displs, recv, recv_counts, recv_displs, t);
  });
}
void TimedCommunicator::send(const void* buf, int64_t count, CommDType t, int dst,
                             int tag) const {
  timed([&] { inner_.send(buf, count, t, dst, tag); });
}
void TimedCommunicator::recv(void* buf, int64_t count, CommDType t, int src, int tag) const {
  timed([&] { inner_.recv(buf, count, t, src, tag); });
}

}  // namespace origami
