#!/usr/bin/env bash
# Runs the agent with exactly the capabilities packaging/floatlb.service
# bounds it to (CapabilityBoundingSet, parsed from the unit), on a veth in a
# network namespace this script creates, with the pin directory inside a
# bpffs this script mounts (as systemd mounts /sys/fs/bpf at boot). Passes
# when the agent loads and attaches the XDP program and pins it, and, after a
# SIGTERM with --keep-pinned, a second agent with the same capabilities
# re-opens the pins and keeps the XDP link. Root only; cleans up on exit.
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
mount -t bpf bpf "$fs"
cat > "$work/services.json" <<'JSON'
{"lbAttr":[{"serviceArguments":{"externalIP":"203.0.113.10","port":80,"protocol":"tcp","sel":0,"mode":2,"name":"web"},
 "endpoints":[{"endpointIP":"192.0.2.5","targetPort":8080}]}]}
JSON

run() { # $1: log name; waits for "floatlb running" or the agent's exit
  nsenter --net="/run/netns/$ns" setpriv --bounding-set "$bounding" -- \
    "$BIN" --iface v0 --pin-dir "$fs/floatlb" --keep-pinned --config "$work/services.json" > "$work/$1" 2>&1 &
  pid=$!
  for _ in $(seq 1 300); do
    grep -q 'floatlb running' "$work/$1" && return 0
    kill -0 "$pid" 2>/dev/null || { pid=; sed -n '1,6p' "$work/$1"; return 1; }
    sleep 0.1
  done
  sed -n '1,6p' "$work/$1"; return 1
}
stop() { kill -TERM "$pid"; wait "$pid" || die "agent exited non-zero on SIGTERM"; pid=; }

run first.log || die "the agent does not start with the unit's capabilities only"
grep -q 'XDP attached' "$work/first.log" || die "no 'XDP attached' in the first run"
stop
[ -d "$fs/floatlb/maps" ] || die "nothing pinned under the pin directory after --keep-pinned"
say "first run: XDP attached and pinned ($(ls "$fs/floatlb" | tr '\n' ' '))"
run second.log || die "a restarted agent cannot re-open the pins with the unit's capabilities"
grep -q 'fresh=false' "$work/second.log" || die "the restarted agent did not re-open the pinned datapath"
grep -q 'kept existing XDP link' "$work/second.log" || die "the restarted agent did not keep the XDP link"
stop
say "ok: restart re-opened the pins and kept the XDP link, without CAP_SYS_ADMIN"
