#!/usr/bin/env bash
# Build the local control plane's binaries from their Go modules into a cache outside the repo.
#
# Why a wrapper module for Kubernetes: k8s.io/kubernetes replaces its staging modules
# (k8s.io/api, k8s.io/apiserver, ...) with ./staging paths, so `go install` refuses it.
# A tiny module that requires it and replaces each staging module with the matching
# published v0.x tag builds the same code. etcd's server module has the same problem.
#
# Usage: build-binaries.sh [name ...]   (default: all). Prints the cache dir of each binary.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${HEALTHNAV_CACHE:-$HOME/.cache/healthnav}
command -v go >/dev/null || { echo "error: Go (1.26+) is needed to build the test control plane's binaries; install it from https://go.dev/dl and re-run." >&2; exit 2; }
export GOFLAGS=-buildvcs=false CGO_ENABLED=0

log() { printf '[build-binaries] %s\n' "$*" >&2; }

have() { [ -x "$cache/bin/$1-$2/$1" ]; }

build_kubernetes() {
  local v=$KUBERNETES_VERSION minor staging work out
  if have kube-apiserver "$v" && have kube-controller-manager "$v" && have kube-scheduler "$v" && have kubectl "$v"; then return; fi
  minor=${v#v1.}; minor=${minor%%.*}
  work=$(mktemp -d); out=$(mktemp -d)
  log "kubernetes $v (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl): cold build takes several minutes"
  (cd "$work" && go mod init healthnav.local/k8sbuild >/dev/null 2>&1 && go mod download -json "k8s.io/kubernetes@$v" >/dev/null)
  staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[a-z0-9-]*\) => ./staging/.*#\1#p' "$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$v.mod")
  {
    printf 'module healthnav.local/k8sbuild\n\ngo 1.26\n\nrequire k8s.io/kubernetes %s\n\n' "$v"
    for m in $staging; do printf 'replace %s => %s v0.%s.%s\n' "$m" "$m" "$minor" "${v##*.}"; done
  } > "$work/go.mod"
  printf 'package tools\n\nimport (\n\t_ "k8s.io/kubernetes/cmd/kube-apiserver/app"\n\t_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"\n\t_ "k8s.io/kubernetes/cmd/kube-scheduler/app"\n\t_ "k8s.io/kubectl/pkg/cmd"\n)\n' > "$work/tools.go"
  local ld="-s -w -X k8s.io/component-base/version.gitVersion=$v -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$v -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor"
  (cd "$work" && go mod tidy >/dev/null && go build -trimpath -ldflags "$ld" -o "$out/" \
      k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
      k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    mkdir -p "$cache/bin/$b-$v"; mv "$out/$b" "$cache/bin/$b-$v/$b"
  done
  rm -rf "$work" "$out"
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

targets=("$@"); [ ${#targets[@]} -eq 0 ] && targets=(etcd kubernetes kwok helm)
for t in "${targets[@]}"; do
  start=$SECONDS
  "build_$t"
  log "$t ready ($((SECONDS - start)) s)"
done
