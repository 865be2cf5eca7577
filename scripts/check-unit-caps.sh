#!/usr/bin/env bash
# Runs the agent with exactly the capabilities packaging/floatlb.service
# bounds it to (CapabilityBoundingSet, parsed from the unit), on a veth in a
# network namespace this script creates, with the pin directory inside a
# bpffs this script mounts (as systemd mounts /sys/fs/bpf at boot). Passes
# when the agent loads and attaches the XDP program and pins it, and, after a
# SIGTERM with --keep-pinned, a second agent with the same capabilities
# re-opens the pins and keeps the XDP link. Both runs go under strace: every
# system call the agent made must be allowed by the unit's SystemCallFilter
# (its syscall sets expanded by systemd-analyze). Root only; cleans up on exit.
#
#   FLOATLB_BIN=target/debug/floatlb scripts/check-unit-caps.sh [UNIT]
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
UNIT=${1:-$ROOT/packaging/floatlb.service}
BIN=${FLOATLB_BIN:-$ROOT/target/debug/floatlb}
say() { printf 'check-unit-caps: %s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (network namespace, bpffs mount)"
[ -x "$BIN" ] || die "no agent binary at $BIN (cargo build --bins, or set FLOATLB_BIN)"
for t in setpriv nsenter ip; do command -v $t >/dev/null || die "$t missing (apt-get install util-linux iproute2)"; done
command -v strace >/dev/null || die "strace missing (apt-get install strace)"
command -v systemd-analyze >/dev/null || die "systemd-analyze missing (apt-get install systemd)"

caps=$(sed -n 's/^CapabilityBoundingSet=//p' "$UNIT")
[ -n "$caps" ] || die "$UNIT has no CapabilityBoundingSet="
bounding="-all"
for c in $caps; do bounding+=",+$(echo "${c#CAP_}" | tr 'A-Z' 'a-z')"; done
say "unit's capabilities: $caps (setpriv --bounding-set $bounding)"

ns=flb-caps-$$; fs=$(mktemp -d /tmp/flb-caps-bpffs.XXXXXX); work=$(mktemp -d); pid=
cleanup() {
  [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null; wait 2>/dev/null
  ip netns del "$ns" 2>/dev/null; umount "$fs" 2>/dev/null; rmdir "$fs" 2>/dev/null; rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
ip -n "$ns" link add v0 type veth peer name v1
for l in v0 v1 lo; do ip -n "$ns" link set "$l" up; done
# As the pair's user_data sets it up: forwarding on lo only, FIB lookups on lo.
ip netns exec "$ns" sysctl -qw net.ipv4.conf.lo.forwarding=1
mount -t bpf bpf "$fs"
cat > "$work/services.json" <<'JSON'
{"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10","port":80,"protocol":"tcp","sel":0,"mode":2,"name":"web"},
 "endpoints":[{"endpointIP":"192.0.2.5","targetPort":8080}]}]}
JSON

run() { # $1: log name; waits for "floatlb running" or the agent's exit
  nsenter --net="/run/netns/$ns" setpriv --bounding-set "$bounding" -- \
    strace -f -qq -o "$work/$1.strace" \
    "$BIN" --iface v0 --fib-lookup-iface lo --pin-dir "$fs/floatlb" --keep-pinned \
      --state-dir "$work/state" --config "$work/services.json" > "$work/$1" 2>&1 &
  pid=$!   # strace; the agent is its child
  for _ in $(seq 1 600); do
    grep -q 'floatlb running' "$work/$1" && return 0
    kill -0 "$pid" 2>/dev/null || { pid=; sed -n '1,6p' "$work/$1"; return 1; }
    sleep 0.1
  done
  sed -n '1,6p' "$work/$1"; return 1
}
stop() { # SIGTERM to the agent itself (strace would detach, not forward it)
  local agent; agent=$(pgrep -P "$pid" | head -1)
  [ -n "$agent" ] || die "agent process not found under strace"
  kill -TERM "$agent"; wait "$pid" || die "agent exited non-zero on SIGTERM"; pid=
  grep -q 'left attached and pinned' "$work/$1" || die "no 'left attached and pinned' on SIGTERM with --keep-pinned"
}

run first.log || die "the agent does not start with the unit's capabilities only"
grep -q 'XDP attached' "$work/first.log" || die "no 'XDP attached' in the first run"
stop first.log
[ -d "$fs/floatlb/maps" ] || die "nothing pinned under the pin directory after --keep-pinned"
say "first run: XDP attached and pinned ($(ls "$fs/floatlb" | tr '\n' ' '))"
run second.log || die "a restarted agent cannot re-open the pins with the unit's capabilities"
grep -q 'fresh=false' "$work/second.log" || die "the restarted agent did not re-open the pinned datapath"
grep -q 'kept existing XDP link' "$work/second.log" || die "the restarted agent did not keep the XDP link"
stop second.log
say "restart: re-opened the pins and kept the XDP link, without CAP_SYS_ADMIN"

# Every system call made, against the unit's allow-list.
expand() { # a syscall set, recursively, as systemd-analyze lists it
  systemd-analyze syscall-filter "$1" | sed -n '2,$p' | sed 's/#.*//' | tr -d ' ' | grep -v '^$' |
    while read -r s; do case $s in @*) expand "$s" ;; *) echo "$s" ;; esac; done
}
filter=$(sed -n 's/^SystemCallFilter=//p' "$UNIT")
[ "$(echo "$filter" | wc -l)" = 1 ] && [ "${filter#\~}" = "$filter" ] \
  || die "expected one allow-list SystemCallFilter= line in $UNIT, got: $filter"
for item in $filter; do case $item in @*) expand "$item" ;; *) echo "$item" ;; esac; done | sort -u > "$work/allowed"
sed -E 's/^[0-9]+ +//; s/^<\.\.\. ([a-z0-9_]+) resumed>.*/\1(/' "$work"/*.strace | grep -oE '^[a-z0-9_]+\(' | tr -d '(' | sort -u > "$work/used"
outside=$(comm -23 "$work/used" "$work/allowed" | tr '\n' ' ')
[ -z "$outside" ] || die "system calls outside SystemCallFilter=$filter: $outside"
say "ok: all $(wc -l < "$work/used") system calls the agent made are in SystemCallFilter=$filter"
