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
  # cgroup v1: each hierarchy holding a controller slotbox uses, mounted afresh (writable) at the
  # namespace's root, with the controllers it has (e.g. `cpu,cpuacct` together on systemd
  # hosts; a mount with fewer would fail as busy). A trial mount elsewhere must work first, so
  # a failure never leaves a hierarchy unmounted.
  trial=/run/slotbox-cgroup-trial
  awk '$9 == "cgroup" { print $5, $NF }' /proc/self/mountinfo | while read -r dir options; do
    controllers=$(printf '%s' "$options" | tr ',' '\n' | grep -v -x -e rw -e ro | paste -sd, -)
    case ",$controllers," in
      *,memory,*|*,pids,*|*,cpu,*) ;;
      *) continue ;;
    esac
    if touch "$dir/.slotbox-probe" 2>/dev/null; then
      rm -f "$dir/.slotbox-probe"
      continue
    fi
    mkdir -p "$trial"
    if mount -t cgroup -o "$controllers" cgroup "$trial" 2>/dev/null; then
      umount "$trial"
      umount "$dir" && mount -t cgroup -o "$controllers" cgroup "$dir" || true
    fi
  done
  rmdir "$trial" 2>/dev/null || true
fi
exec /usr/local/bin/slotbox "$@"
