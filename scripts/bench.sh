#!/usr/bin/env bash
# floatlb benchmarks (run as root; `make bench` builds first).
#
# Per packet: BPF_PROG_TEST_RUN cost of the XDP program vs a MAC-swap baseline.
# End to end: one namespace topology, one run; direct vs floatlb XDP vs IPVS
# (or its netfilter NAT stand-in when the kernel lacks IPVS) vs HAProxy.
# End to end: BENCH_SECS (default 2) per measurement, BENCH_ROUNDS (default 5).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/lib/llvm-22/bin:$HOME/.cargo/bin:$PATH

if [[ $EUID -ne 0 ]]; then
    echo "bench.sh needs root (network namespaces, XDP): sudo make bench" >&2
    exit 1
fi

cargo build --release -p floatlb-agent -p floatlb-tests --bins

echo "== Per packet (tests/src/bin/bench_xdp.rs)"
scripts/bench-xdp.sh

echo "== End to end (tests/src/bin/bench_e2e.rs)"
target/release/bench_e2e

echo "== HA failover (tests/src/bin/bench_ha.rs); BENCH_HA_RUNS sets the number of runs (default 20)"
target/release/bench_ha

echo "== API: 10,000 services x 8 endpoints through the API at concurrency 16 vs a file apply (tests/src/bin/bench_api.rs);"
echo "   BENCH_API_SERVICES, BENCH_API_ROUNDS (default 3), BENCH_API_CONCURRENCY"
target/release/bench_api

echo "== Connection sync: bulk resync of 1,000,000 flows end to end, A's datapath -> B's (tests/src/bin/bench_sync.rs);"
echo "   arguments: FLOWS ROUNDS (default 1000000 3)"
target/release/bench_sync
