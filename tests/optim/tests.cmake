# Multi-rank runs of the optim tests: the ZeRO-1 distributed optimizer against all-reduce + AdamW
# at 2 and 4 ranks. The test binary declares its own small ParamStore, so it needs origami_model
# (origami_optim itself uses only ParamStore's inline accessors).
if(TARGET origami-optim-mpi-tests)
  target_link_libraries(origami-optim-mpi-tests PRIVATE origami_model)
endif()
foreach(np 2 4)
  origami_mpi_test(optim distributed_optimizer ${np} "DistributedOptimizer.*")
endforeach()
