# origami-plan end to end: plan a tiny job for 8 ranks, train its top choice for 2 steps with the
# written overlay; bad inputs (no layout, a cluster file missing a field, a model too large)
# exit 1 naming what to change.
add_test(NAME cli.plan_train_top_choice
  COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/plan/plan_cli.sh ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}
          ${ORIGAMI_MPIRUN})
set_tests_properties(cli.plan_train_top_choice PROPERTIES ENVIRONMENT "${ORIGAMI_MPI_ENV}"
  LABELS cli TIMEOUT 300 PROCESSORS 2)
