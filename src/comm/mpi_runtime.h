// defines: MpiRuntime (MPI_Init/Finalize as a scope), abort_all_ranks()
// Apps own MPI's lifetime through this class, so no raw MPI call lives outside comm/.
#pragma once

namespace origami {

class MpiRuntime {
 public:
  MpiRuntime(int* argc, char*** argv);
  ~MpiRuntime();
  MpiRuntime(const MpiRuntime&) = delete;
  MpiRuntime& operator=(const MpiRuntime&) = delete;
};

// This process's index among the ranks on its node (MPI_COMM_TYPE_SHARED), used to pick its
// device; equals OMPI_COMM_WORLD_LOCAL_RANK under mpirun. Computed once by MpiRuntime's
// constructor (a collective); without MpiRuntime, read from OMPI_COMM_WORLD_LOCAL_RANK.
int node_local_rank();
// How many ranks share this node (same sources as node_local_rank).
int node_local_size();

// Ends every rank of the job with `code` (MPI_Abort on the world): used when one rank hits an
// error while the others may be waiting in a collective.
[[noreturn]] void abort_all_ranks(int code);

}  // namespace origami
