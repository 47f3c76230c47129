# Shared helpers of the CI scripts (sourced, not run).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() { printf '\n=== %s ===\n' "$*"; }

# Every step runs under `timeout`: a hang fails CI (libtest names a test running for over
# 60 s in the log) instead of stalling it. The bounds are generous: the whole run takes
# about 5-10 minutes on 2 cores. timeout signals the step's whole process group.
bounded() {
  local limit=$1; shift
  local rc=0
  timeout -k 30s "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
    echo "TIMEOUT: '$*' ran longer than $limit" >&2
  fi
  return "$rc"
}
