#!/usr/bin/env bash
# Builds the container image offline and runs it (make test-deploy, root).
#
# packaging/Dockerfile's runtime stage starts FROM debian:bookworm-slim and
# its build stage FROM rust:1.95-bookworm; no registry is reachable here, so
# the test builds the same runtime stage on a base it makes itself:
#   - the base: a root filesystem of what the runtime stage installs and the
#     agent needs (/bin/sh, ip from iproute2, the CA bundle, and the shared
#     libraries of all three), copied from this host;
#   - the stage: packaging/Dockerfile's own runtime lines (VOLUME, USER,
#     ENTRYPOINT, ...) verbatim, with its FROM replaced by that base, its
#     apt-get RUN dropped (the base carries those packages) and the
#     build stage's binary replaced by the agent built here.
# buildah (Debian) builds it with chroot isolation and the vfs driver: no
# daemon, no runtime, no registry. Then, in the image, through the image's
# own ENTRYPOINT: the agent runs (--version), the flags the entrypoint adds
# reach it (a bad --iface is named), ip and the CA bundle are there; and
# the image's config (entrypoint, user, volume) equals the Dockerfile's.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${FLOATLB_BIN:-$ROOT/target/debug/floatlb}
say() { printf 'test-image: %s\n' "$*"; }
die() { say "FAIL: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (buildah with the vfs driver)"
command -v buildah >/dev/null || die "buildah missing: run scripts/setup.sh (apt-get install buildah)"
[ -x "$BIN" ] || die "$BIN missing: cargo build --bins"

work=$(mktemp -d /tmp/floatlb-image.XXXXXX)
tag="localhost/floatlb-test:$$"
B=(buildah --storage-driver vfs --root "$work/storage" --runroot "$work/run")
cleanup() {
  "${B[@]}" rm --all >/dev/null 2>&1 || true
  "${B[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- the base: what the runtime stage's apt-get installs, plus libraries
ctx="$work/ctx"
rootfs="$ctx/rootfs"
mkdir -p "$rootfs"
ip_bin=$(command -v ip)
copy() { install -D -m "$2" "$1" "$rootfs$3"; }
copy /bin/dash 0755 /bin/sh
copy "$ip_bin" 0755 /usr/bin/ip
copy /etc/ssl/certs/ca-certificates.crt 0644 /etc/ssl/certs/ca-certificates.crt
for exe in /bin/dash "$ip_bin" "$BIN"; do
  ldd "$exe" | awk '/=> \//{print $3} /^\t\/lib/{print $1}' | while read -r lib; do
    real=$(readlink -f "$lib")
    install -D -m 0755 "$real" "$rootfs$lib"
  done
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rootfs/etc/passwd"
cp "$BIN" "$ctx/floatlb"

# --- the runtime stage, from the Dockerfile
dockerfile="$ROOT/packaging/Dockerfile"
awk '
  /^FROM debian:bookworm-slim/ { stage = 1; print "FROM scratch"; print "COPY rootfs/ /"; next }
  !stage { next }
  /^RUN apt-get/ { skip = 1 }
  skip { if ($0 !~ /\\$/) skip = 0; next }
  /^COPY --from=build \/out\/floatlb / { print "COPY floatlb /usr/local/bin/floatlb"; next }
  { print }
' "$dockerfile" > "$ctx/Containerfile"
grep -q '^ENTRYPOINT' "$ctx/Containerfile" || die "no ENTRYPOINT taken from $dockerfile"
grep -q '^COPY floatlb ' "$ctx/Containerfile" || die "the runtime stage no longer copies /out/floatlb: update this script"

t0=$(date +%s)
"${B[@]}" bud --isolation chroot -q -t "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
size=$("${B[@]}" images --format '{{.Size}}' "$tag")
say "built $tag ($size) in $(( $(date +%s) - t0 )) s from packaging/Dockerfile's runtime stage"

# --- the image's config equals the Dockerfile's
cfg=$("${B[@]}" inspect --type image "$tag" | python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["OCIv1"]["config"]))')
want_ep=$(sed -n 's/^ENTRYPOINT //p' "$dockerfile")
python3 - "$cfg" "$want_ep" <<'PY' || die "image config differs from packaging/Dockerfile"
import json, sys
cfg, want = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert cfg.get("Entrypoint") == want, f"Entrypoint {cfg.get('Entrypoint')} != {want}"
assert cfg.get("User") == "0", f"User {cfg.get('User')!r}"
assert "/var/lib/floatlb" in (cfg.get("Volumes") or {}), f"Volumes {cfg.get('Volumes')}"
PY
say "config: ENTRYPOINT, USER 0 and VOLUME /var/lib/floatlb as in the Dockerfile"

# --- run it through its own entrypoint
mapfile -t ep < <(python3 -c 'import json,sys; print("\n".join(json.loads(sys.argv[1])["Entrypoint"]))' "$cfg")
ctr=$("${B[@]}" from "$tag")
run() { "${B[@]}" run --isolation chroot --network host "$@"; }
out=$(run --env FLOATLB_IFACE=lo --env FLOATLB_ARGS= "$ctr" -- "${ep[@]}" --version 2>&1) \
  || die "the agent does not run in the image: $out"
[[ "$out" == floatlb* ]] || die "unexpected --version output: $out"
say "agent runs in the image through its entrypoint: $out"
# The entrypoint's own flags reach the agent: a missing interface is named.
if out=$(run --env FLOATLB_IFACE=nosuchif0 --env FLOATLB_ARGS=--api-listen=off "$ctr" -- "${ep[@]}" 2>&1); then
  die "the agent started on a missing interface: $out"
fi
grep -q 'nosuchif0' <<<"$out" || die "the error does not name the interface: $out"
say "FLOATLB_IFACE reaches the agent: it names nosuchif0 and stops"
run "$ctr" -- /usr/bin/ip -V >/dev/null || die "ip does not run in the image"
run "$ctr" -- /bin/sh -c 'test -s /etc/ssl/certs/ca-certificates.crt' || die "no CA bundle in the image"
say "ok: ip and the CA bundle are in the image"
