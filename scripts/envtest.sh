#!/usr/bin/env bash
# A real Kubernetes control plane for tests (etcd + kube-apiserver + kube-controller-manager
# v1.20.2, no scheduler, no kubelet), built from Debian bookworm's own packages because no
# container engine (kind, k3d) runs on our machines. See docs/kubernetes.md.
#
#   scripts/envtest.sh install        build and cache the binaries (once per machine)
#   scripts/envtest.sh bin            print the cache directory (BG_AGENT_ENVTEST_BIN)
#   scripts/envtest.sh start [RUNDIR] start a control plane; prints RUNDIR/admin.kubeconfig
#   scripts/envtest.sh stop [RUNDIR]  stop the processes that `start` recorded in RUNDIR
#   scripts/envtest.sh env [RUNDIR]   print KUBECONFIG=... lines for a running RUNDIR
set -euo pipefail

VERSION=v1.20.2
# Bump when the build recipe changes so that caches built by an older recipe are rebuilt.
RECIPE=1
CACHE=${BG_AGENT_ENVTEST_BIN:-${XDG_CACHE_HOME:-${HOME:-/var/cache}/.cache}/bg-agent-envtest/$VERSION}
STAMP="$VERSION recipe $RECIPE"
DEFAULT_RUNDIR=${TMPDIR:-/tmp}/bg-agent-envtest

die() { printf 'envtest: %s\n' "$*" >&2; exit 1; }
log() { printf 'envtest: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

cached() {
  [ -x "$CACHE/kube-apiserver" ] && [ -x "$CACHE/kube-controller-manager" ] &&
    [ "$(cat "$CACHE/stamp" 2>/dev/null)" = "$STAMP" ]
}

apt_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  [ ${#missing[@]} = 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

cmd_install() {
  # etcd and openssl run the control plane; kubectl renders and dry-runs deploy/.
  apt_packages etcd-server openssl curl
  command -v kubectl >/dev/null || apt_packages kubernetes-client
  if cached; then
    log "cached in $CACHE ($("$CACHE/kube-apiserver" --version))"
    return 0
  fi
  apt_packages golang-go rsync golang-github-modern-go-reflect2-dev dpkg-dev
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/bg-agent-envtest-build.XXXXXX")
  # apt-get source downloads as the _apt user when it can enter the directory.
  chmod 755 "$work"
  # shellcheck disable=SC2064 # expand now: $work is local
  trap "rm -rf '$work'; as_root rm -f /etc/apt/sources.list.d/bg-agent-envtest-src.sources" EXIT

  # Debian's `kubernetes` source package (used to build kubectl) is the full v1.20.2 tree
  # with vendor/. Its sources come from the configured mirror through a temporary deb-src
  # entry that is removed again at once.
  log "fetching Debian's kubernetes source package"
  local src=/etc/apt/sources.list.d/bg-agent-envtest-src.sources
  if [ -f /etc/apt/sources.list.d/debian.sources ]; then
    sed 's/^Types: .*/Types: deb-src/' /etc/apt/sources.list.d/debian.sources | as_root tee "$src" >/dev/null
  else
    grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | sed 's/^deb /deb-src /' |
      as_root tee "${src%.sources}.list" >/dev/null
  fi
  as_root apt-get update -qq
  (cd "$work" && apt-get source --download-only -qq kubernetes >/dev/null)
  as_root rm -f "$src" "${src%.sources}.list"
  as_root apt-get update -qq
  # dpkg-source warns that it cannot check the signature (no keyring for it): harmless.
  (cd "$work" && dpkg-source -x ./kubernetes_*.dsc tree >"$work/unpack.log" 2>&1) ||
    { cat "$work/unpack.log" >&2; die "dpkg-source -x failed"; }

  # Fix 1: GOPATH mode (module mode wants the network).
  export GOPATH=$work/gopath GOCACHE=$work/gocache GO111MODULE=off GOPROXY=off CGO_ENABLED=0 GOFLAGS=
  mkdir -p "$GOPATH/src/k8s.io"
  ln -s "$work/tree" "$GOPATH/src/k8s.io/kubernetes"
  local k8s=$GOPATH/src/k8s.io/kubernetes

  # Fix 3: the vendored reflect2 1.0.1 crashes under Go >= 1.18; use Debian's 1.0.2.
  local reflect2=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -f "$k8s"/vendor/github.com/modern-go/reflect2/*.go
  cp "$reflect2"/*.go "$k8s/vendor/github.com/modern-go/reflect2/"
  rm -f "$k8s"/vendor/github.com/modern-go/reflect2/*_test.go

  # Fix 2: the generated OpenAPI definitions are not in the tarball.
  log "generating OpenAPI definitions"
  (cd "$k8s" && KUBE_GIT_VERSION=$VERSION make gen_openapi >"$work/gen.log" 2>&1) ||
    { tail -40 "$work/gen.log" >&2; die "make gen_openapi failed"; }

  log "building kube-apiserver and kube-controller-manager (a few minutes)"
  local pkg=k8s.io/kubernetes/vendor/k8s.io/component-base/version
  local ldflags="-s -w -X $pkg.gitVersion=$VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=20 -X $pkg.gitTreeState=clean"
  mkdir -p "$work/out"
  (cd "$k8s" && go build -o "$work/out/" -ldflags "$ldflags" ./cmd/kube-apiserver ./cmd/kube-controller-manager)
  "$work/out/kube-apiserver" --version | grep -qF "$VERSION" || die "built kube-apiserver is not $VERSION"

  mkdir -p "$CACHE"
  install -m 0755 "$work/out/kube-apiserver" "$work/out/kube-controller-manager" "$CACHE/"
  printf '%s\n' "$STAMP" >"$CACHE/stamp"
  log "cached in $CACHE"
}

# A free TCP port on 127.0.0.1 (raced only by other processes binding at the same moment).
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

kubeconfig() { # file server ca user token
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: $2
    certificate-authority: $3
users:
- name: $4
  user:
    token: $5
contexts:
- name: envtest
  context:
    cluster: envtest
    user: $4
current-context: envtest
EOF
  chmod 600 "$1"
}

running() { # pidfile
  [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

# Starts etcd and kube-apiserver on fresh ports; prints the server URL once /readyz answers.
launch() { # run admin_token
  local run=$1 admin_token=$2 etcd_client etcd_peer api
  rm -rf "$run/etcd" "$run/certs"
  mkdir -p "$run/certs"
  etcd_client=$(free_port)
  etcd_peer=$(free_port)
  api=$(free_port)

  etcd --name envtest --data-dir "$run/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_client" --advertise-client-urls "http://127.0.0.1:$etcd_client" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "envtest=http://127.0.0.1:$etcd_peer" --unsafe-no-fsync \
    >"$run/etcd.log" 2>&1 &
  echo $! >"$run/etcd.pid"

  "$CACHE/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_client" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api" --insecure-port=0 \
    --cert-dir="$run/certs" --service-cluster-ip-range=10.0.0.0/24 \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$run/sa.pub" --service-account-signing-key-file="$run/sa.key" \
    --token-auth-file="$run/tokens.csv" --authorization-mode=RBAC \
    --disable-admission-plugins=ServiceAccount --endpoint-reconciler-type=none \
    >"$run/kube-apiserver.log" 2>&1 &
  echo $! >"$run/kube-apiserver.pid"

  local server=https://127.0.0.1:$api ca=$run/certs/apiserver.crt
  for _ in $(seq 1 1200); do
    running "$run/etcd.pid" && running "$run/kube-apiserver.pid" || return 1
    if [ -f "$ca" ] && curl -sf --cacert "$ca" -H "Authorization: Bearer $admin_token" "$server/readyz" >/dev/null 2>&1; then
      printf '%s\n' "$server"
      return 0
    fi
    sleep 0.1
  done
  return 1
}

cmd_start() {
  local run=${1:-$DEFAULT_RUNDIR}
  cached || die "binaries missing: run scripts/envtest.sh install first"
  command -v etcd >/dev/null || die "etcd missing: run scripts/envtest.sh install first"
  mkdir -p "$run"
  run=$(cd "$run" && pwd)
  for p in etcd kube-apiserver kube-controller-manager; do
    if running "$run/$p.pid"; then die "already running in $run ($p pid $(cat "$run/$p.pid")); stop it first"; fi
  done
  rm -f "$run"/*.pid "$run"/*.log
  chmod 700 "$run"

  openssl genrsa -out "$run/sa.key" 2048 2>/dev/null
  openssl rsa -in "$run/sa.key" -pubout -out "$run/sa.pub" 2>/dev/null
  local admin_token user_token
  admin_token=$(openssl rand -hex 24)
  user_token=$(openssl rand -hex 24)
  # token,user,uid[,"groups"]: the bg-agent user has no groups, so it may do only what a
  # RoleBinding grants it (the RBAC tests bind deploy/'s Role to it).
  printf '%s,admin,admin,"system:masters"\n%s,bg-agent,bg-agent\n' "$admin_token" "$user_token" >"$run/tokens.csv"
  chmod 600 "$run/tokens.csv" "$run/sa.key"

  # Free ports are picked before they are bound, so a control plane starting at the same
  # moment can take one: then this one fails to start and tries again on other ports.
  local attempt server ca=$run/certs/apiserver.crt
  for attempt in 1 2 3; do
    if server=$(launch "$run" "$admin_token"); then break; fi
    tail -20 "$run/etcd.log" "$run/kube-apiserver.log" >&2 || true
    cmd_stop "$run"
    [ "$attempt" = 3 ] && die "kube-apiserver did not become ready"
    log "retrying on other ports"
  done

  kubeconfig "$run/admin.kubeconfig" "$server" "$ca" admin "$admin_token"
  kubeconfig "$run/bg-agent.kubeconfig" "$server" "$ca" bg-agent "$user_token"

  "$CACHE/kube-controller-manager" --kubeconfig="$run/admin.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port=0 --port=0 --leader-elect=false \
    --controllers=job,garbagecollector,namespace,serviceaccount,serviceaccount-token \
    --service-account-private-key-file="$run/sa.key" --root-ca-file="$ca" \
    >"$run/kube-controller-manager.log" 2>&1 &
  echo $! >"$run/kube-controller-manager.pid"

  printf '%s\n' "$run/admin.kubeconfig"
}

cmd_stop() {
  local run=${1:-$DEFAULT_RUNDIR}
  [ -d "$run" ] || die "no such run directory: $run"
  # Reverse order of start; only the PIDs that `start` recorded.
  for p in kube-controller-manager kube-apiserver etcd; do
    local f=$run/$p.pid
    [ -f "$f" ] || continue
    local pid
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
}

cmd_env() {
  local run=${1:-$DEFAULT_RUNDIR}
  [ -f "$run/admin.kubeconfig" ] || die "not started in $run"
  run=$(cd "$run" && pwd)
  printf 'KUBECONFIG=%s\n' "$run/admin.kubeconfig"
  printf 'BG_AGENT_ENVTEST_USER_KUBECONFIG=%s\n' "$run/bg-agent.kubeconfig"
  printf 'BG_AGENT_ENVTEST_BIN=%s\n' "$CACHE"
}

case "${1:-}" in
  install) cmd_install ;;
  bin) printf '%s\n' "$CACHE" ;;
  start) cmd_start "${2:-}" ;;
  stop) cmd_stop "${2:-}" ;;
  env) cmd_env "${2:-}" ;;
  *) die "usage: $0 install|bin|start [RUNDIR]|stop [RUNDIR]|env [RUNDIR]" ;;
esac
