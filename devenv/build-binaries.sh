#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules into a cache outside the repo.
#
# Why a wrapper module for Kubernetes: k8s.io/kubernetes replaces its staging modules
# (k8s.io/api, k8s.io/apiserver, ...) with ./staging paths, so `go install` refuses it.
# A tiny module that requires it and replaces each staging module with the matching
# published v0.x tag builds the same code. etcd's server module has the same problem.
#
# Usage: build-binaries.sh [name|control-plane|node|all ...]   (default: control-plane).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEALTHNAV_CACHE:-$HOME/.cache/healthnav}
command -v go >/dev/null || { echo "error: Go (1.26+) is needed to build the test control plane's binaries; install it from https://go.dev/dl and re-run." >&2; exit 2; }
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf '[build-binaries] %s\n' "$*" >&2; }

have() { [ -x "$cache/bin/$1-$2/$1" ]; }

# k8s_module DIR PKG...: a wrapper module in DIR that requires k8s.io/kubernetes at
# KUBERNETES_VERSION, replaces its staging modules with their published tags and imports PKG...
k8s_module() {
  local work=$1 v=$KUBERNETES_VERSION minor staging pkg; shift
  minor=${v#v1.}; minor=${minor%%.*}
  (cd "$work" && go mod init healthnav.local/k8sbuild >/dev/null 2>&1 && go mod download -json "k8s.io/kubernetes@$v" >/dev/null)
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$v.mod")
  {
    printf 'module healthnav.local/k8sbuild\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n' "$v"
    for m in $staging; do printf 'replace %s => %s v0.%s.%s\n' "$m" "$m" "$minor" "${v##*.}"; done
  } > "$work/go.mod"
  { printf 'package tools\n\nimport (\n'; for pkg in "$@"; do printf '\t_ "%s"\n' "$pkg"; done; printf ')\n'; } > "$work/tools.go"
  (cd "$work" && go mod tidy >/dev/null)
}

k8s_ldflags() {
  local v=$KUBERNETES_VERSION minor; minor=${v#v1.}; minor=${minor%%.*}
  printf '%s' "-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
}

# k8s_build NAME:APP_PACKAGE...: build the named k8s.io/kubernetes/cmd/NAME binaries (skips cached ones).
k8s_build() {
  local v=$KUBERNETES_VERSION work out spec name pkgs=() cmds=() missing=0
  for spec in "$@"; do have "${spec%%:*}" "$v" || missing=1; done
  [ $missing -eq 0 ] && return
  work=$(mktemp -d); out=$(mktemp -d)
  for spec in "$@"; do
    name=${spec%%:*}; pkgs+=("${spec#*:}")
    case $name in kubectl) cmds+=(k8s.io/kubernetes/cmd/kubectl) ;; *) cmds+=("k8s.io/kubernetes/cmd/$name") ;; esac
  done
  k8s_module "$work" "${pkgs[@]}"
  (cd "$work" && go build -trimpath -ldflags "$(k8s_ldflags)" -o "$out/" "${cmds[@]}")
  for spec in "$@"; do
    name=${spec%%:*}; mkdir -p "$cache/bin/$name-$v"; mv "$out/$name" "$cache/bin/$name-$v/$name"
  done
  rm -rf "$work" "$out"
}

build_kubernetes() {
  log "kubernetes $KUBERNETES_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl): cold build takes several minutes"
  k8s_build kube-apiserver:k8s.io/kubernetes/cmd/kube-apiserver/app \
    kube-controller-manager:k8s.io/kubernetes/cmd/kube-controller-manager/app \
    kube-scheduler:k8s.io/kubernetes/cmd/kube-scheduler/app kubectl:k8s.io/kubectl/pkg/cmd
}

# The real node's Kubernetes half: the kubelet and kube-proxy from the same release.
build_kubelet() {
  log "kubernetes $KUBERNETES_VERSION (kubelet, kube-proxy)"
  k8s_build kubelet:k8s.io/kubernetes/cmd/kubelet/app kube-proxy:k8s.io/kubernetes/cmd/kube-proxy/app
}

build_etcd() {
  local v=$ETCD_VERSION work
  have etcd "$v" && return
  log "etcd $v"
  work=$(mktemp -d)
  printf 'module healthnav.local/etcdbuild\n\ngo 1.26\n' > "$work/go.mod"
  printf 'package tools\n\nimport _ "go.etcd.io/etcd/server/v3/etcdmain"\n' > "$work/tools.go"
  (cd "$work" && go get "go.etcd.io/etcd/server/v3@$v" >/dev/null 2>&1 && go mod tidy >/dev/null && \
     mkdir -p "$cache/bin/etcd-$v" && go build -trimpath -ldflags "-s -w" -o "$cache/bin/etcd-$v/etcd" go.etcd.io/etcd/server/v3)
  rm -rf "$work"
}

go_install() {  # name version package
  have "$1" "$2" && return
  log "$1 $2"
  mkdir -p "$cache/bin/$1-$2"
  GOBIN="$cache/bin/$1-$2" go install -trimpath -ldflags "-s -w ${4:-}" "$3@$2"
}

build_kwok() { go_install kwok "$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"; }
build_helm() { go_install helm "$HELM_VERSION" helm.sh/helm/v3/cmd/helm "-X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"; }

# containerd, its runc shim and ctr (the CLI that imports images), from containerd's Go module.
build_containerd() {
  local v=$CONTAINERD_VERSION dir
  have containerd "$v" && have containerd-shim-runc-v2 "$v" && have ctr "$v" && return
  log "containerd $v (containerd, containerd-shim-runc-v2, ctr)"
  dir="$cache/bin/containerd-$v"; mkdir -p "$dir"
  GOBIN="$dir" go install -trimpath -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$v" \
    "github.com/containerd/containerd/v2/cmd/containerd@$v" \
    "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$v" \
    "github.com/containerd/containerd/v2/cmd/ctr@$v"
  for b in containerd-shim-runc-v2 ctr; do mkdir -p "$cache/bin/$b-$v"; mv "$dir/$b" "$cache/bin/$b-$v/$b"; done
}

# runc needs cgo and libseccomp (Debian: libseccomp-dev) for its seccomp filters.
build_runc() {
  local v=$RUNC_VERSION
  have runc "$v" && return
  if ! pkg-config --exists libseccomp 2>/dev/null && [ ! -e /usr/include/seccomp.h ]; then
    echo "error: runc $v needs libseccomp's headers: apt-get install libseccomp-dev (Debian/Ubuntu) or dnf install libseccomp-devel" >&2
    exit 2
  fi
  log "runc $v"
  mkdir -p "$cache/bin/runc-$v"
  CGO_ENABLED=1 GOBIN="$cache/bin/runc-$v" go install -trimpath -tags seccomp \
    -ldflags "-s -w -X main.version=${v#v}" "github.com/opencontainers/runc@$v"
}

# The CNI reference plugins the node's pod network uses: bridge, host-local IPAM, loopback.
build_cni() {
  local v=$CNI_PLUGINS_VERSION m=github.com/containernetworking/plugins/plugins dir
  dir="$cache/bin/cni-plugins-$v"
  [ -x "$dir/bridge" ] && [ -x "$dir/host-local" ] && [ -x "$dir/loopback" ] && return
  log "CNI plugins $v (bridge, host-local, loopback)"
  mkdir -p "$dir"
  GOBIN="$dir" go install -trimpath -ldflags "-s -w" "$m/main/bridge@$v" "$m/ipam/host-local@$v" "$m/main/loopback@$v"
}

# CoreDNS with only the plugins the local cluster uses (answers cluster.local from the API server,
# refuses every other name: nothing is ever forwarded off the machine).
build_coredns() {
  local v=$COREDNS_VERSION work
  have coredns "$v" && return
  log "coredns $v"
  work=$(mktemp -d)
  printf 'module healthnav.local/corednsbuild\n\ngo 1.26\n' > "$work/go.mod"
  cat > "$work/main.go" <<'GO'
// CoreDNS built with the plugins the local cluster's DNS needs, nothing that forwards upstream.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"
	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/health"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/log"
	_ "github.com/coredns/coredns/plugin/ready"
	_ "github.com/coredns/coredns/plugin/template"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "log", "health", "ready", "cache", "kubernetes", "template"}
}

func main() { coremain.Run() }
GO
  (cd "$work" && go get "github.com/coredns/coredns@$v" >/dev/null 2>&1 && go mod tidy >/dev/null && \
     mkdir -p "$cache/bin/coredns-$v" && go build -trimpath -ldflags "-s -w" -o "$cache/bin/coredns-$v/coredns" .)
  rm -rf "$work"
}

# crictl: the CRI client `hnav dev cluster down` uses to stop and remove pod sandboxes the
# kubelet left behind (a proper CNI teardown), and a debugging tool for the node.
build_crictl() { go_install crictl "$CRICTL_VERSION" sigs.k8s.io/cri-tools/cmd/crictl "-X sigs.k8s.io/cri-tools/pkg/version.Version=$CRICTL_VERSION"; }

# KubeRay's ray-operator: turns RayServices into RayClusters and Ray pods on the real node.
build_kuberay() { go_install ray-operator "$KUBERAY_VERSION" github.com/ray-project/kuberay/ray-operator; }

targets=()
for t in "${@:-control-plane}"; do
  case $t in
    control-plane) targets+=(etcd kubernetes kwok helm) ;;
    node) targets+=(kubelet containerd runc cni coredns crictl kuberay) ;;
    all) targets+=(etcd kubernetes kwok helm kubelet containerd runc cni coredns crictl kuberay) ;;
    *) targets+=("$t") ;;
  esac
done
for t in "${targets[@]}"; do
  start=$SECONDS
  "build_$t"
  log "$t ready ($((SECONDS - start)) s)"
done
