#!/usr/bin/env bash
# Per-packet cost of the XDP program (BPF_PROG_TEST_RUN, repeat=1 per packet):
# MAC-swap baseline vs floatlb established flow vs floatlb new-flow SYN.
# Needs root. Usage: scripts/bench-xdp.sh [ROUNDS]   (default 20000)
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/lib/llvm-22/bin:$HOME/.cargo/bin:$PATH
[ "$(id -u)" = 0 ] || { echo "bench-xdp: needs root (BPF_PROG_TEST_RUN, netns): sudo $0" >&2; exit 1; }
cargo build --release -q -p floatlb-tests --bin bench_xdp
exec target/release/bench_xdp "${1:-20000}"
