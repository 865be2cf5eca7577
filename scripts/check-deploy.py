#!/usr/bin/env python3
"""Static cross-checks of terraform/ and packaging/ that need no terraform.

Run by scripts/test-deploy.sh (make test-deploy) with the venv's python,
which has python-hcl2 (a checkov dependency). Checks that:
  * the pair module's BFD, sync and API ports are the agent's (the Rust
    constants where the code has them) and are the ports the services
    validation keeps for the pair;
  * the iam module renders iam/policy.json with templatefile() and passes
    every ${name} placeholder the policy uses; the policy, rendered by the
    documented substitution, is JSON;
  * the systemd unit and the container image start the agent with the same
    fixed flags, and the unit keeps CAP_SYS_ADMIN out;
  * the pair's user_data installs packaging/floatlb.service.
Exit 1 with one line per failure.
"""

import json
import pathlib
import re
import sys

import hcl2

ROOT = pathlib.Path(__file__).resolve().parent.parent
failures = []
notes = []


def fail(msg):
    failures.append(msg)


def load_tf(path):
    with open(path) as f:
        return hcl2.load(f)


def value(v):
    """An attribute's value: this python-hcl2 wraps each one in a list."""
    if isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v.strip('"') if isinstance(v, str) else v


# --- ports -------------------------------------------------------------------
pair_main = load_tf(ROOT / "terraform/modules/pair/main.tf")
tf_locals = {}
for block in pair_main.get("locals", []):
    tf_locals.update(block)
ports = {}
for name in ("bfd_port", "sync_port", "api_port"):
    if name not in tf_locals:
        fail(f"terraform/modules/pair/main.tf: local {name} missing")
    else:
        ports[name] = int(value(tf_locals[name]))

rust = {p: p.read_text() for p in (ROOT / "agent").rglob("*.rs") if "target" not in p.parts}
m = re.search(r"pub const CONTROL_PORT: u16 = (\d+);", (ROOT / "agent/bfd/src/session.rs").read_text())
if not m:
    fail("agent/bfd/src/session.rs: CONTROL_PORT not found")
elif ports.get("bfd_port") != int(m.group(1)):
    fail(f"pair bfd_port {ports.get('bfd_port')} != agent BFD CONTROL_PORT {m.group(1)}")
else:
    notes.append(f"pair bfd_port {ports['bfd_port']} is the agent's BFD CONTROL_PORT")

for name, what in (("api_port", "API"), ("sync_port", "sync")):
    want = ports.get(name)
    # A port constant or clap default in the agent: `const X_PORT: u16 = N` or
    # `default_value = "0.0.0.0:N"`-style listen addresses.
    pat = re.compile(r"(?:const\s+\w*%s\w*PORT\w*\s*:\s*u16\s*=\s*(\d+))" % what.upper())
    found = {int(x) for text in rust.values() for x in pat.findall(text)}
    # ... or a clap default listen address on a field named for it:
    # #[arg(long, default_value = "0.0.0.0:11111", ...)] pub api_listen: ...
    listen = re.compile(r'default_value\s*=\s*"[^"]*:(\d+)"[^\n]*\n\s*pub\s+(\w+)')
    found |= {int(port) for text in rust.values() for port, field in listen.findall(text) if what.lower() in field}
    found = sorted(found)
    if not found:
        notes.append(f"no {what} port constant or listen default in agent/ yet: pair {name} {want} checked against loxilb's port only")
        if want != {"api_port": 11111, "sync_port": 22222}[name]:
            fail(f"pair {name} {want} is not loxilb's {what} port")
    elif want not in found:
        fail(f"pair {name} {want} differs from the agent's {what} port(s) {found}")
    else:
        notes.append(f"pair {name} {want} is the agent's {what} port")

pair_vars = (ROOT / "terraform/modules/pair/variables.tf").read_text()
m = re.search(r"!contains\(\[(\d+), (\d+), (\d+)\], s\.port\)", pair_vars)
if not m or sorted(int(x) for x in m.groups()) != sorted(ports.values()):
    fail("pair services validation must reserve exactly the BFD, API and sync ports")

# --- policy ------------------------------------------------------------------
iam_main_text = (ROOT / "terraform/modules/iam/main.tf").read_text()
iam_main = load_tf(ROOT / "terraform/modules/iam/main.tf")
iam_locals = {}
for block in iam_main.get("locals", []):
    iam_locals.update(block)
if "templatefile(local.policy_path, local.policy_vars)" not in iam_main_text:
    fail("terraform/modules/iam: the policy must be templatefile(local.policy_path, local.policy_vars)")
if "../../../iam/policy.json" not in iam_main_text:
    fail("terraform/modules/iam: policy_path must default to the repository's iam/policy.json")
passed = set(value(iam_locals.get("policy_vars", {})).keys())
policy_text = (ROOT / "iam/policy.json").read_text()
used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)\}", policy_text))
if used - passed:
    fail(f"iam/policy.json uses placeholders the iam module does not pass: {sorted(used - passed)}")
if "%{" in policy_text:
    fail("iam/policy.json contains a template directive %{...}")
rendered = policy_text
for name in used:
    rendered = rendered.replace("${" + name + "}", "x")
try:
    doc = json.loads(rendered)
    if not isinstance(doc.get("Statement"), list) or not doc["Statement"]:
        fail("iam/policy.json: no Statement list")
except json.JSONDecodeError as e:
    fail(f"iam/policy.json does not render to JSON: {e}")
notes.append(f"iam/policy.json placeholders: {sorted(used) or 'none'}; the iam module passes {sorted(passed)}")

# --- unit and image ----------------------------------------------------------
unit = (ROOT / "packaging/floatlb.service").read_text()
dockerfile = (ROOT / "packaging/Dockerfile").read_text()
fixed = "/usr/local/bin/floatlb --iface ${FLOATLB_IFACE} --state-dir /var/lib/floatlb --keep-pinned $FLOATLB_ARGS"
if f"ExecStart={fixed}" not in unit:
    fail(f"floatlb.service: ExecStart must be {fixed}")
if '/usr/local/bin/floatlb --iface \\"$FLOATLB_IFACE\\" --state-dir /var/lib/floatlb --keep-pinned $FLOATLB_ARGS' not in dockerfile:
    fail("Dockerfile: ENTRYPOINT must run the unit's command line")
for line in ("Restart=always", "StateDirectory=floatlb", "EnvironmentFile=/etc/floatlb/floatlb.env",
             "ProtectSystem=strict", "ReadWritePaths=/sys/fs/bpf", "NoNewPrivileges=yes"):
    if line not in unit.splitlines():
        fail(f"floatlb.service: missing {line}")
caps = [l for l in unit.splitlines() if l.startswith("CapabilityBoundingSet=")]
if len(caps) != 1 or set(caps[0].split("=", 1)[1].split()) != {"CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_NET_RAW"}:
    fail(f"floatlb.service: CapabilityBoundingSet must be exactly CAP_BPF CAP_PERFMON CAP_NET_ADMIN CAP_NET_RAW, is {caps}")
if 'file("${path.module}/../../../packaging/floatlb.service")' not in (ROOT / "terraform/modules/pair/main.tf").read_text():
    fail("pair user_data must install packaging/floatlb.service (file()), not a copy")

# --- every skip carries its reason --------------------------------------------
skips = 0
for path in sorted(list((ROOT / "terraform").rglob("*.tf")) + [ROOT / "packaging/Dockerfile"]):
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.search(r"checkov:skip=([A-Z0-9_]+)(?::(.*))?", line)
        if m:
            skips += 1
            if len((m.group(2) or "").strip()) < 20:
                fail(f"{path.relative_to(ROOT)}:{i + 1}: checkov skip {m.group(1)} without a reason (#checkov:skip=ID:why)")
        if re.match(r"\s*#\s*hadolint ignore=", line):
            skips += 1
            if i == 0 or not re.match(r"\s*#\s*\S.{15,}", lines[i - 1]) or "hadolint" in lines[i - 1]:
                fail(f"{path.relative_to(ROOT)}:{i + 1}: hadolint ignore without a reason on the comment line above")
notes.append(f"{skips} checkov/hadolint skips, each with a reason")

for n in notes:
    print(f"check-deploy: note: {n}")
for f in failures:
    print(f"check-deploy: FAIL: {f}")
print(f"check-deploy: {len(failures)} failed" if failures else "check-deploy: ok (ports, policy, unit/image flags)")
sys.exit(1 if failures else 0)
