#!/usr/bin/env bash
# floatlb benchmarks (run as root; `make bench` builds first).
#
# End to end: one namespace topology, one run; direct vs floatlb XDP vs IPVS
# (or its netfilter NAT stand-in when the kernel lacks IPVS) vs HAProxy.
# Set BENCH_SECS to change the duration of each measurement (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/lib/llvm-22/bin:$HOME/.cargo/bin:$PATH

if [[ $EUID -ne 0 ]]; then
    echo "bench.sh needs root (network namespaces, XDP): sudo make bench" >&2
    exit 1
fi

echo "== End to end (tests/src/bin/bench_e2e.rs)"
cargo build --release -p floatlb-agent -p floatlb-tests --bins
target/release/bench_e2e

echo "== HA failover (tests/src/bin/bench_ha.rs); BENCH_HA_RUNS sets the number of runs (default 20)"
target/release/bench_ha
