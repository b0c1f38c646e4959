// defines: CommTimes, TimedCommunicator (a Communicator decorator that adds up the wall time of
// every call per group name)
// What logging.profile reports beside ProfilingBackend's per-op compute: the seconds each rank
// spends inside the collectives of each group ("tp", "ep", "dp_cp", ...). That time is the
// transfer plus the wait for the group's slowest member, which is what a step's "exposed
// communication" is when collectives block. Splits of a timed communicator are timed into the
// same CommTimes, so wrapping the world before ProcessGroups::create times every group.
#pragma once
#include <map>
#include <memory>
#include <string>

#include "comm/communicator.h"

namespace origami {

struct CommTimes {
  struct Entry {
    int64_t calls = 0;
    double seconds = 0;
    double cpu_seconds = 0;  // the calling thread's CPU time in them: polling while waiting
  };
  std::map<std::string, Entry> by_group;  // keyed by Communicator::name()
  void reset() { by_group.clear(); }
};

class TimedCommunicator final : public Communicator {
 public:
  // Times `inner` (not owned) into `times`.
  TimedCommunicator(const Communicator& inner, std::shared_ptr<CommTimes> times)
      : inner_(inner), times_(std::move(times)) {}
  // Times a communicator it owns (what split() returns).
  TimedCommunicator(std::unique_ptr<Communicator> owned, std::shared_ptr<CommTimes> times)
      : owned_(std::move(owned)), inner_(*owned_), times_(std::move(times)) {}

  int rank() const override { return inner_.rank(); }
  int size() const override { return inner_.size(); }
  const std::string& name() const override { return inner_.name(); }
  const std::vector<int>& world_ranks() const override { return inner_.world_ranks(); }
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
  template <typename F> void timed(F&& f) const;

  std::unique_ptr<Communicator> owned_;
  const Communicator& inner_;
  std::shared_ptr<CommTimes> times_;
};

}  // namespace origami
