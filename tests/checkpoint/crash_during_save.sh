#!/usr/bin/env bash
# A save killed midway never harms the last good checkpoint: train on 2 ranks saving every step,
# crash rank 0 inside the second save (after the rank files, before publishing), then check that
# `latest` still names iteration 1, that checkpoint verifies, and that training resumes from it.
# usage: crash_during_save.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -uo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/crash-during-save
source "$src/tests/checkpoint/tiny_job.sh"
common+=(--set "checkpoint.dir=$work/ckpt" --set "checkpoint.save_interval=1")
ORIGAMI_TEST_CRASH_IN_SAVE_AT_STEP=2 "$@" -np 2 "$build/src/origami-train" "${common[@]}" \
  --set training.train_steps=3 --set "logging.dir=$work/run1" > "$work/crash.log" 2>&1
status=$?
[ $status -ne 0 ] || { echo "the injected crash did not happen"; exit 1; }
[ -d "$work/ckpt/iter_0000002.tmp" ] || { echo "no partial save left behind: crash point missed"; exit 1; }
[ ! -d "$work/ckpt/iter_0000002" ] || { echo "a crashed save was published"; exit 1; }
[ "$(cat "$work/ckpt/latest")" = iter_0000001 ] || { echo "latest moved: $(cat "$work/ckpt/latest")"; exit 1; }
set -e
# grep without -q reads all of it: an early exit would kill inspect with SIGPIPE under pipefail.
"$build/src/origami-ckpt" inspect "$work/ckpt" | grep "all checksums verified" > /dev/null
"$@" -np 2 "$build/src/origami-train" "${common[@]}" --set training.train_steps=3 \
  --set "checkpoint.load=$work/ckpt" --set "logging.dir=$work/run2" | tee "$work/resume.log"
grep -q "resumed from .*iter_0000001 at iteration 1" "$work/resume.log"
[ "$(cat "$work/ckpt/latest")" = iter_0000003 ]
echo "crash during save: last good checkpoint intact, resumed, saved again: ok"
