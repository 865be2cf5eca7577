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
# tests start, and the integration tests share one set of artifacts. Every cargo
# call of the test targets names the same packages and builds test targets, so
# cargo resolves the same dependency features each time (dev-dependency and
# per-package features otherwise differ between `cargo build` and `cargo test`,
# and tokio, the AWS SDK and the eBPF object would be built twice).
TEST_PKGS := --workspace --exclude floatlb-ebpf
build-test: setup
	$(CARGO) build $(TEST_PKGS) --bins --tests

lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --exclude floatlb-ebpf --all-targets -- -D warnings
	$(CARGO) +nightly clippy -p floatlb-ebpf --target bpfel-unknown-none -Z build-std=core --release -- -D warnings

# Unit tests (libraries and binaries; no root needed).
test-unit: build-test
	$(CARGO) test $(TEST_PKGS) --lib --bins

# Integration tests (tests/tests, and each crate's own tests/). Those of
# floatlb-tests need root (network namespaces, XDP, moto, FRR). They run one at
# a time so that the timing figures they print are not skewed by each other.
test-integration: build-test
	FLOATLB_BIN=$(CURDIR)/target/debug/floatlb $(CARGO) test $(TEST_PKGS) --test '*' -- --test-threads=1 --nocapture

# The BFD and sync decoders' fuzz targets build (nightly, cargo-fuzz);
# docs/BFD.md and docs/SYNC.md have the 60 s runs.
# One target directory for both: libfuzzer-sys and the shared dependencies build once.
fuzz-check: setup
	cd agent/bfd && $(CARGO) +nightly fuzz check --target-dir $(CURDIR)/target/fuzz
	cd agent/sync && $(CARGO) +nightly fuzz check --target-dir $(CURDIR)/target/fuzz

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
