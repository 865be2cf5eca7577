#!/usr/bin/env bash
# Runs the two-AZ failover demo (tests/src/bin/demo.rs) as root.
# `make demo` builds first (dev profile, shared with `make test`); DEMO_PROFILE=release
# runs a `make build` release build instead.
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-$PWD/target}/${DEMO_PROFILE:-debug}"
demo="$target/demo"
if [[ ! -x "$demo" ]]; then
    echo "demo: $demo not found; run \`make demo\` first" >&2
    exit 2
fi
if [[ $EUID -ne 0 ]]; then
    echo "demo: needs root (network namespaces, XDP, bpffs); run \`sudo make demo\`" >&2
    exit 2
fi
export FLOATLB_BIN="${FLOATLB_BIN:-$target/floatlb}"
# moto_server may live in a user install (make setup uses pip).
export PATH="$PATH:$HOME/.local/bin"
exec "$demo" "$@"
