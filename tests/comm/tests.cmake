# Multi-rank runs of the comm tests (origami-comm-mpi-tests): collectives and process groups at
# 1, 2, 4 and 8 ranks. Each run takes a few seconds even oversubscribed on two cores.
foreach(np 1 2 4 8)
  origami_mpi_test(comm comm_collectives ${np} "Collectives.*")
  origami_mpi_test(comm comm_process_groups ${np} "ProcessGroups.*")
endforeach()
