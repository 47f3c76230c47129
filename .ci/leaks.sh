#!/usr/bin/env bash
# `leaks.sh snapshot FILE` records what IPC objects exist; `leaks.sh check FILE` fails if
# the tests left any behind since: shmlane segments in /dev/shm, System V segments, queues
# and semaphore sets of this user, POSIX message queues of the posix-mq baseline, and the
# pipe and unix-socket baselines' FIFOs and sockets.
source "$(dirname "$0")/lib.sh"

# System V objects owned by this user (the tests' keys are hashes of names: count them).
sysv_objects() { ipcs -m -q -s | awk -v u="$(id -un)" '$3 == u' | wc -l; }

# POSIX message queues (/shmlane-mq-*), listed in an mqueue file system: /dev/mqueue if
# mounted, else a private mount of one (root only); otherwise they cannot be listed.
mqueues() {
  if mountpoint -q /dev/mqueue 2>/dev/null; then
    ls /dev/mqueue | grep -c '^shmlane-mq-' || true
  elif [ "$(id -u)" = 0 ] && command -v unshare >/dev/null; then
    unshare -m sh -c 'd=$(mktemp -d) && mount -t mqueue none "$d" && ls "$d"; umount "$d" 2>/dev/null; rmdir "$d"' 2>/dev/null \
      | grep -c '^shmlane-mq-' || true
  else
    echo "unknown"
  fi
}

# FIFOs and sockets of the pipe and unix-socket baselines, in the temp directory.
tmp_files() { ls "${TMPDIR:-/tmp}" | grep -cE '^shmlane-(fifo|sock)-' || true; }

case "${1:-}" in
  snapshot)
    printf '%s %s %s\n' "$(sysv_objects)" "$(mqueues)" "$(tmp_files)" > "$2"
    ;;
  check)
    read -r sysv_before mq_before tmp_before < "$2"
    step "nothing left behind"
    left=$(ls /dev/shm | grep -c '^shmlane-' || true)
    if [ "$left" -gt 0 ]; then
      echo "tests left $left shmlane segments in /dev/shm:"; ls -la /dev/shm | grep shmlane-
      exit 1
    fi
    sysv_after=$(sysv_objects)
    if [ "$sysv_after" -gt "$sysv_before" ]; then
      echo "tests left $((sysv_after - sysv_before)) System V objects behind:"; ipcs -m -q -s
      exit 1
    fi
    mq_after=$(mqueues)
    if [ "$mq_after" = unknown ] || [ "$mq_before" = unknown ]; then
      echo "POSIX message queues: cannot list them here (no /dev/mqueue, not root): not checked"
    elif [ "$mq_after" -gt "$mq_before" ]; then
      echo "tests left $((mq_after - mq_before)) POSIX message queues (/shmlane-mq-*) behind"
      exit 1
    fi
    tmp_after=$(tmp_files)
    if [ "$tmp_after" -gt "$tmp_before" ]; then
      echo "tests left FIFOs or sockets in ${TMPDIR:-/tmp}:"; ls -la "${TMPDIR:-/tmp}" | grep -E 'shmlane-(fifo|sock)-'
      exit 1
    fi
    ipcs -m -q -s
    echo "ok"
    ;;
  *)
    echo "usage: leaks.sh snapshot FILE | check FILE" >&2; exit 2
    ;;
esac
