# Data layer: the CLI end-to-end check and the multi-rank data-order runs (np 1, 2, 4).
if(TARGET origami-data)
  add_test(NAME data.cli_preprocess_matches_spm_encode
    COMMAND ${CMAKE_CURRENT_SOURCE_DIR}/data/cli_preprocess_check.sh $<TARGET_FILE:origami-data>
            ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR}/test-tmp/cli-preprocess)
  set_tests_properties(data.cli_preprocess_matches_spm_encode PROPERTIES LABELS unit)
endif()
if(TARGET origami-data-mpi-tests)
  foreach(np 1 2 4)
    origami_mpi_test(data data_order ${np} "DataOrder.*")
  endforeach()
endif()
