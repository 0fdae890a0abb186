#!/usr/bin/env bash
# The runner image without a container engine: an OCI image laid out by umoci from a
# Debian bookworm root filesystem that mmdebstrap makes from the configured mirror, with
# the same packages, user, directory and entrypoint as deploy/runner.Dockerfile (read from
# it), then run with bubblewrap to show the runner starts in it. The release workflow
# builds the real image from the Dockerfile; this is CI's check that the recipe holds.
#
#   scripts/runner-image.sh build RUNNER_BINARY OUT_DIR   OCI layout in OUT_DIR/oci (tag runner)
#   scripts/runner-image.sh check OUT_DIR                 run tools and the entrypoint in it
set -euo pipefail
cd "$(dirname "$0")/.."

die() { printf 'runner-image: %s\n' "$*" >&2; exit 1; }
log() { printf 'runner-image: %s\n' "$*" >&2; }

DOCKERFILE=deploy/runner.Dockerfile
# The final stage's instructions, as the Dockerfile has them (a Rust test holds the
# Dockerfile itself to what the Kubernetes executor expects).
final_stage() { awk '/^FROM /{n++} n==2' "$DOCKERFILE"; }
entrypoint() { final_stage | sed -n 's/^ENTRYPOINT \["\([^"]*\)"\]$/\1/p'; }
user() { final_stage | sed -n 's/^USER \([0-9]*\)$/\1/p'; }
workdir() { final_stage | sed -n 's/^WORKDIR \(.*\)$/\1/p'; }
home() { final_stage | sed -n 's/^ENV HOME=\(.*\)$/\1/p'; }
packages() {
  final_stage | sed -n 's/.*apt-get install -y --no-install-recommends \([a-z0-9 .+-]*\).*/\1/p' | xargs | tr ' ' ','
}

mirror() {
  sed -n 's/^URIs: //p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1
}

cmd_build() {
  local runner=$1 out=$2
  [ "$(id -u)" = 0 ] || die "needs root (mmdebstrap --mode=root, image file owners)"
  [ -x "$runner" ] || die "not an executable: $runner"
  local ep uid wd hm pkgs
  ep=$(entrypoint) uid=$(user) wd=$(workdir) hm=$(home) pkgs=$(packages)
  for v in ep uid wd hm pkgs; do [ -n "${!v}" ] || die "cannot read $v from $DOCKERFILE"; done
  command -v mmdebstrap >/dev/null && command -v umoci >/dev/null ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mmdebstrap umoci >/dev/null; }
  rm -rf "$out"
  mkdir -p "$out"
  log "root filesystem: bookworm minbase + $pkgs"
  mmdebstrap --mode=root --variant=minbase --include="$pkgs" \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook="chroot \"\$1\" useradd --uid $uid --user-group --create-home --home-dir $hm --shell /usr/sbin/nologin runner" \
    --customize-hook="install -d -o $uid -g $uid \"\$1$wd\"" \
    --customize-hook="install -D -m 0755 '$(realpath "$runner")' \"\$1$ep\"" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$out/rootfs.tar" ${MIRROR:-$(mirror)} >"$out/mmdebstrap.log" 2>&1 ||
    { tail -30 "$out/mmdebstrap.log" >&2; die "mmdebstrap failed"; }

  log "OCI image"
  umoci init --layout "$out/oci"
  umoci new --image "$out/oci:runner"
  umoci unpack --image "$out/oci:runner" "$out/bundle" >/dev/null
  tar -xf "$out/rootfs.tar" -C "$out/bundle/rootfs" --exclude='./dev/*'
  umoci repack --image "$out/oci:runner" "$out/bundle"
  rm -rf "$out/bundle" "$out/rootfs.tar"
  umoci config --image "$out/oci:runner" --config.entrypoint "$ep" --config.user "$uid" \
    --config.workingdir "$wd" --config.env "HOME=$hm" \
    --config.env "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  du -sh "$out/oci" >&2
}

# Runs argv in the image's root filesystem as its configured user and directory.
in_image() { # bundle argv...
  local bundle=$1
  shift
  local uid wd hm
  uid=$(jq -r '.process.user.uid' "$bundle/config.json")
  wd=$(jq -r '.process.cwd' "$bundle/config.json")
  hm=$(jq -r '.process.env[] | select(startswith("HOME=")) | sub("^HOME=";"")' "$bundle/config.json")
  # As root (mmdebstrap's root mode needs it anyway) and without a user namespace, so the
  # image's file owners mean what they say; setpriv (util-linux, essential) drops to the
  # image's user as a container runtime would.
  bwrap --bind "$bundle/rootfs" / --proc /proc --dev /dev --tmpfs /tmp \
    --unshare-pid --unshare-ipc --unshare-uts --die-with-parent --chdir "$wd" \
    --clearenv --setenv HOME "$hm" --setenv PATH /usr/local/bin:/usr/bin:/bin \
    setpriv --reuid "$uid" --regid "$uid" --clear-groups --inh-caps=-all --bounding-set=-all -- "$@"
}

cmd_check() {
  local out=$1 bundle
  bundle=$out/check
  command -v jq >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq jq >/dev/null; }
  rm -rf "$bundle"
  umoci unpack --image "$out/oci:runner" "$bundle" >/dev/null
  jq -e --arg ep "$(entrypoint)" '.process.args == [$ep]' "$bundle/config.json" >/dev/null ||
    die "the image's entrypoint is not $(entrypoint)"
  in_image "$bundle" sh -c 'test "$(id -u)" = '"$(user)"' && test "$(pwd)" = '"$(workdir)"' && touch ./writable'
  in_image "$bundle" git --version
  in_image "$bundle" node --version
  in_image "$bundle" npm --version
  in_image "$bundle" python3 --version
  # The runner itself, from the config's argv: with no task in its environment it must
  # start (libraries resolve, the program runs) and refuse, naming what is missing.
  local args status=0 err
  mapfile -t args < <(jq -r '.process.args[]' "$bundle/config.json")
  err=$(in_image "$bundle" "${args[@]}" 2>&1) || status=$?
  rm -rf "$bundle"
  [ "$status" = 1 ] && grep -q 'BG_AGENT_' <<<"$err" ||
    die "the runner did not start as expected (status $status): $err"
  log "the runner starts in the image: $err"
}

case "${1:-}" in
  build) [ $# = 3 ] || die "usage: $0 build RUNNER_BINARY OUT_DIR"; cmd_build "$2" "$3" ;;
  check) [ $# = 2 ] || die "usage: $0 check OUT_DIR"; cmd_check "$2" ;;
  *) die "usage: $0 build RUNNER_BINARY OUT_DIR | check OUT_DIR" ;;
esac
