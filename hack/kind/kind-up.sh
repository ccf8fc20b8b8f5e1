#!/usr/bin/env bash
# make kind-up: a kind cluster with healthnav's images, KubeRay, an in-cluster MinIO and the chart.
# Needs docker, kind, helm and kubectl on PATH (helm/kubectl: `make binaries` builds them too).
# Idempotent: re-running rebuilds and reloads the images and upgrades the releases.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-healthnav}"
TAG="${TAG:-dev}"
MINIO_IMAGE="${MINIO_IMAGE:-quay.io/minio/minio:RELEASE.2025-04-22T22-12-26Z}"
KUBERAY_VERSION="$(sed -n 's/^KUBERAY_VERSION=v\{0,1\}//p' devenv/versions.env)"
NS=healthnav-system
DEMO_NS=default

need() { command -v "$1" >/dev/null 2>&1 || { echo "kind-up: '$1' is not on PATH ($2)" >&2; exit 1; }; }
need docker "https://docs.docker.com/get-docker/"
need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
need helm "make binaries, then add \$HEALTHNAV_CACHE/bin/helm-*/ to PATH"
need kubectl "make binaries, then add \$HEALTHNAV_CACHE/bin/kubectl-*/ to PATH"

if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  kind create cluster --name "$CLUSTER" --config hack/kind/kind-config.yaml --wait 120s
fi
kubectl config use-context "kind-$CLUSTER" >/dev/null

echo "--- images (tag $TAG)"
for image in operator trainer server; do
  docker build -f "images/$image/Dockerfile" -t "healthnav/$image:$TAG" .
  kind load docker-image "healthnav/$image:$TAG" --name "$CLUSTER"
done

echo "--- KubeRay $KUBERAY_VERSION (its own chart)"
helm repo add kuberay https://ray-project.github.io/kuberay-helm/ --force-update >/dev/null
helm upgrade --install kuberay-operator kuberay/kuberay-operator --version "$KUBERAY_VERSION" \
  --namespace kuberay-system --create-namespace --wait --timeout 5m

echo "--- MinIO (in-cluster S3)"
kubectl create namespace "$NS" --dry-run=client -o yaml | kubectl apply -f -
if ! kubectl -n "$NS" get secret minio-creds >/dev/null 2>&1; then
  kubectl -n "$NS" create secret generic minio-creds \
    --from-literal=AWS_ACCESS_KEY_ID=healthnav \
    --from-literal=AWS_SECRET_ACCESS_KEY="$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')"
fi
# The FineTuneJob/ModelServe examples reference the same keys from their own namespace.
kubectl -n "$NS" get secret minio-creds -o json \
  | python3 -c 'import json,sys; s=json.load(sys.stdin); print(json.dumps({"apiVersion":"v1","kind":"Secret","metadata":{"name":"minio-creds"},"type":"Opaque","data":s["data"]}))' \
  | kubectl -n "$DEMO_NS" apply -f -
sed "s|MINIO_IMAGE|$MINIO_IMAGE|" hack/kind/minio.yaml | kubectl apply -f -
kubectl -n "$NS" rollout status deployment/minio --timeout=180s

echo "--- healthnav chart"
helm upgrade --install healthnav charts/healthnav --namespace "$NS" \
  -f charts/healthnav/values-kind.yaml \
  --set image.tag="$TAG" \
  --set trainer.image="healthnav/trainer:$TAG" \
  --set serving.image="healthnav/server:$TAG" \
  --wait --timeout 5m
kubectl -n "$NS" rollout status statefulset/healthnav --timeout=120s
echo "kind-up: ready. Next: make kind-demo"
