# floatlb: `make demo` runs the two-AZ failover demo, `make test` every test.
# Both run `make setup` first, which installs what is missing (idempotent).

SHELL := /bin/bash
export PATH := /usr/lib/llvm-22/bin:$(HOME)/.cargo/bin:$(PATH)
CARGO ?= cargo
# The filesystem mirror of the hashicorp/aws provider that test-deploy's
# `terraform init` reads (find one: find / -maxdepth 6 -path '*registry.terraform.io/hashicorp/aws').
TF_PLUGIN_DIR ?= /opt/tf-plugins
export TF_PLUGIN_DIR

.PHONY: setup build build-test test test-unit test-integration test-deploy lint fmt fuzz-check demo bench clean

setup:
	@scripts/setup.sh

build: setup
	$(CARGO) build --release --bins

# Tests build once, on the dev profile: unit tests, the binaries the integration
# tests start, and the integration tests share one set of artifacts.
build-test: setup
	$(CARGO) build --bins

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude floatlb-ebpf --all-targets -- -D warnings
	$(CARGO) +nightly clippy -p floatlb-ebpf --target bpfel-unknown-none -Z build-std=core --release -- -D warnings

test-unit: setup
	$(CARGO) test --workspace --exclude floatlb-tests --exclude floatlb-ebpf

# Integration tests need root (network namespaces, XDP, moto, FRR). They run
# one at a time so that the timing figures they print are not skewed by each other.
test-integration: build-test
	FLOATLB_BIN=$(CURDIR)/target/debug/floatlb $(CARGO) test -p floatlb-tests -- --test-threads=1 --nocapture

# The BFD and sync decoders' fuzz targets build (nightly, cargo-fuzz);
# docs/BFD.md and docs/SYNC.md have the 60 s runs.
fuzz-check: setup
	cd agent/bfd && $(CARGO) +nightly fuzz check
	cd agent/sync && $(CARGO) +nightly fuzz check

# Offline checks of terraform/ and packaging/: static cross-checks, checkov,
# hadolint, systemd-analyze, the agent under the unit's capabilities and syscall filter
# (root and a built agent), terraform fmt/init/validate/test (mock provider).
test-deploy: setup
	scripts/test-deploy.sh

test: lint fuzz-check test-unit test-integration test-deploy

# The demo measures failover (BFD, election, EC2 calls), not packet rates, so it
# runs the same dev-profile build as the tests: no separate release build of the AWS SDK.
demo: build-test
	scripts/demo.sh

bench: build
	scripts/bench.sh

clean:
	$(CARGO) clean
