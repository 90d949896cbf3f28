#!/bin/sh
# Entry point of the sandbox-server image. `slotbox serve` enforces per-slot limits with cgroups
# and refuses to start without them (isolation fails closed). Docker mounts the cgroup tree
# read-only; in a private cgroup namespace (`--cgroupns private`, with CAP_SYS_ADMIN) the
# container may mount its own subtree writable, so slot cgroups nest under the container's own
# limits. Where that is not possible, nothing is changed and the server says why it refuses.
set -u
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
  # cgroup v2: one hierarchy.
  if ! [ -w /sys/fs/cgroup ]; then
    mount -o remount,rw /sys/fs/cgroup 2>/dev/null || true
  fi
else
  # cgroup v1: the controllers slotbox uses, each mounted afresh at the namespace's root.
  for controller in memory pids cpu; do
    dir=/sys/fs/cgroup/$controller
    [ -d "$dir" ] || continue
    if ! touch "$dir/.slotbox-probe" 2>/dev/null; then
      umount "$dir" 2>/dev/null && mount -t cgroup -o "$controller" cgroup "$dir" 2>/dev/null || true
    else
      rm -f "$dir/.slotbox-probe"
    fi
  done
fi
exec /usr/local/bin/slotbox "$@"
