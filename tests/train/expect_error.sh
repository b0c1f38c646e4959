#!/usr/bin/env bash
# expect_error.sh WHERE KEY CMD...: CMD must exit non-zero and its output must name WHERE (e.g.
# "file.yaml:6") and KEY. Used for origami-train's bad-input tests.
where=$1; key=$2; shift 2
out=$("$@" 2>&1); status=$?
echo "$out"
[ $status -ne 0 ] || { echo "expected a non-zero exit, got 0"; exit 1; }
grep -qF -- "$where" <<<"$out" || { echo "message does not name '$where'"; exit 1; }
grep -qF -- "$key" <<<"$out" || { echo "message does not name '$key'"; exit 1; }
echo "ok: exit $status, names '$where' and '$key'"
