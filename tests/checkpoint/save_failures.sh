#!/usr/bin/env bash
# A checkpoint save that fails for an operating-system reason says why on rank 0 (and on the
# failing rank), leaves no .tmp directory behind where it can be removed, keeps `latest` on the
# previous complete checkpoint, and that checkpoint still verifies and loads. Three failures on
# 2 ranks (EP2): a tmpfs too small for a second checkpoint (No space left on device), the save
# directory's file system remounted read-only (Read-only file system), and checkpoint.dir naming
# a regular file. The first two need root and mount(8); without them they are skipped (77).
# usage: save_failures.sh SOURCE_DIR BUILD_DIR MPIRUN...
set -euo pipefail
src=$1; build=$2; shift 2
work=$build/test-ckpt/save-failures
mnt=$work/mnt
umount "$mnt" 2>/dev/null || true
source "$src/tests/checkpoint/tiny_job.sh"
ckpt=$build/src/origami-ckpt
trap 'umount "$mnt" 2>/dev/null || true' EXIT
run() {  # run LOGFILE STEPS extra --set args...; returns the job's exit status
  local log=$1 steps=$2; shift 2
  set +e
  "${mpirun[@]}" -np 2 "$build/src/origami-train" "${common[@]}" --set parallel.expert=2 \
    --set training.train_steps="$steps" "$@" > "$log" 2>&1
  local rc=$?
  set -e
  return $rc
}
mpirun=("$@")
expect_failed_save() {  # expect_failed_save NAME LOG REASON DIR PREVIOUS
  local name=$1 log=$2 reason=$3 dir=$4 previous=$5
  grep -q "checkpoint save to '$dir' failed" "$log" || { echo "$name: no save failure message"; cat "$log"; exit 1; }
  grep -q "$reason" "$log" || { echo "$name: the reason '$reason' is not in the message"; cat "$log"; exit 1; }
  grep -q "rank 0.*failed\|\[rank 0\]" "$log" || { echo "$name: rank 0 did not report"; cat "$log"; exit 1; }
  if [ -n "$previous" ]; then
    [ "$(cat "$dir/latest")" = "$previous" ] || { echo "$name: latest is $(cat "$dir/latest")"; exit 1; }
    grep -q "latest: $previous" "$log" || { echo "$name: the message does not name $previous"; exit 1; }
    ! ls -d "$dir"/*.tmp 2>/dev/null | grep -q . || [ "$name" = read_only ] || {
      echo "$name: a .tmp directory was left behind"; ls "$dir"; exit 1; }
    "$ckpt" inspect "$dir" > "$work/inspect.txt" || { echo "$name: the previous checkpoint does not verify"; exit 1; }
    run "$work/$name-resume.log" 2 --set "checkpoint.load=$dir" --set "logging.dir=$work/$name-resume" \
      || { echo "$name: the previous checkpoint does not load"; cat "$work/$name-resume.log"; exit 1; }
    grep -q "resumed from .*$previous" "$work/$name-resume.log"
  fi
  echo "$name: refused with '$reason', previous checkpoint intact: ok"
}

# 3. checkpoint.dir is a regular file (no root needed).
touch "$work/a-file"
if run "$work/file.log" 1 --set "checkpoint.dir=$work/a-file" --set checkpoint.save_interval=1 \
    --set "logging.dir=$work/file-run"; then
  echo "file: a save into a regular file succeeded"; exit 1
fi
expect_failed_save file "$work/file.log" "Not a directory\|File exists" "$work/a-file" ""

skipped=0
if [ "$(id -u)" -ne 0 ] || ! mkdir -p "$mnt" || ! mount -t tmpfs -o size=64m tmpfs "$mnt" 2>/dev/null; then
  echo "not root or no tmpfs mounts here: the full-disk and read-only cases are skipped"
  exit 77
fi
# The size of one checkpoint of this job, measured.
run "$work/size.log" 1 --set "checkpoint.dir=$mnt/probe" --set checkpoint.save_interval=1 \
  --set "logging.dir=$work/size-run"
size=$(du -sk "$mnt/probe/iter_0000001" | cut -f1)
umount "$mnt"

# 1. A tmpfs with room for one checkpoint and a half: the second save runs out of space.
mount -t tmpfs -o size=$((size * 3 / 2))k tmpfs "$mnt"
if run "$work/full.log" 2 --set "checkpoint.dir=$mnt/ckpt" --set checkpoint.save_interval=1 \
    --set checkpoint.keep_last=2 --set "logging.dir=$work/full-run"; then
  echo "full: the second save fitted into $((size * 3 / 2)) KiB"; exit 1
fi
expect_failed_save full "$work/full.log" "No space left on device" "$mnt/ckpt" iter_0000001
umount "$mnt"

# 2. The save directory's file system turns read-only after the first checkpoint.
mount -t tmpfs -o size=64m tmpfs "$mnt"
run "$work/ro-first.log" 1 --set "checkpoint.dir=$mnt/ckpt" --set checkpoint.save_interval=1 \
  --set "logging.dir=$work/ro-first"
mount -o remount,ro "$mnt"
if run "$work/ro.log" 2 --set "checkpoint.dir=$mnt/ckpt" --set checkpoint.save_interval=1 \
    --set "checkpoint.load=$mnt/ckpt" --set "logging.dir=$work/ro-run"; then
  echo "read_only: a save onto a read-only file system succeeded"; exit 1
fi
expect_failed_save read_only "$work/ro.log" "Read-only file system" "$mnt/ckpt" iter_0000001
umount "$mnt"
echo "save failures: full disk, read-only file system, path is a file: ok"
