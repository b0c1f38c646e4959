# origami-ckpt end to end: train+save (2 ranks, EP2) -> inspect -> export-hf -> import-hf -> diff
# (bitwise) -> resume training from the imported checkpoint.
add_test(NAME cli.ckpt_hf_round_trip
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/hf_round_trip.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_hf_round_trip PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2)

# A save killed midway (fault injected in rank 0 between writing and publishing) leaves the last
# good checkpoint and `latest` intact, and training resumes from it.
add_test(NAME cli.ckpt_crash_during_save
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/crash_during_save.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_crash_during_save PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2)

# Dense -> MoE upcycling: same function at step 0, then trains with expert parallelism.
add_test(NAME cli.ckpt_upcycle
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/upcycle.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_upcycle PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2)

# The routers' expert bias (a checkpoint buffer) through inspect, reshard, diff, export-hf (refused)
# and a resumed job on another layout.
add_test(NAME cli.ckpt_router_buffers
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/router_buffers.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_router_buffers PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2)

# index.json of the wrong shape (valid JSON): refused by origami-train and every origami-ckpt
# subcommand with exit 1 and a message naming the file and field (issue 18).
add_test(NAME cli.ckpt_damaged_index
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/damaged_index.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_damaged_index PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 600 PROCESSORS 2)

# A failed save says why (ENOSPC on a small tmpfs, a read-only remount, a path that is a file),
# removes its .tmp directory where it can and keeps `latest` and the previous checkpoint (issue
# 18). The tmpfs cases need root (skipped otherwise).
add_test(NAME cli.ckpt_save_failures
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/checkpoint/save_failures.sh ${PROJECT_SOURCE_DIR}
          ${PROJECT_BINARY_DIR} ${ORIGAMI_MPIRUN})
set_tests_properties(cli.ckpt_save_failures PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2 SKIP_RETURN_CODE 77 RUN_SERIAL TRUE)
