#!/usr/bin/env bash
# make kind-demo: on the cluster from `make kind-up`, stage a small local base model and the demo
# dataset in MinIO, fine-tune it (examples/kind/finetunejob.yaml, LoRA on the CPU), serve it
# (examples/kind/modelserve.yaml, transformers engine), and ask the served adapter a question.
# Uses the project's virtualenv (.venv, `make venv`) for the model and dataset tooling.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
CLUSTER="${KIND_CLUSTER:-healthnav}"
NS=healthnav-system
DEMO_NS=default
PY="${PY:-.venv/bin/python}"
HNAV="${HNAV:-.venv/bin/hnav}"
S3_PORT="${S3_PORT:-19000}"
SERVE_PORT="${SERVE_PORT:-18000}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

kubectl config use-context "kind-$CLUSTER" >/dev/null
[ -x "$PY" ] || { echo "kind-demo: $PY not found; run 'make venv' first" >&2; exit 1; }

wait_port() {  # wait_port PORT: until a local port-forward answers
  for _ in $(seq 1 50); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.2; done
  echo "kind-demo: port-forward on $1 did not come up" >&2; exit 1
}

echo "--- staging the base model and the dataset in MinIO"
kubectl -n "$NS" port-forward svc/minio "$S3_PORT:9000" >"$WORK/pf-minio.log" 2>&1 &
PIDS+=($!)
wait_port "$S3_PORT"
AWS_ACCESS_KEY_ID="$(kubectl -n "$NS" get secret minio-creds -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d)"
AWS_SECRET_ACCESS_KEY="$(kubectl -n "$NS" get secret minio-creds -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d)"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL_S3="http://127.0.0.1:$S3_PORT"
"$PY" - "$WORK" <<'PYEOF'
import sys
from pathlib import Path

import boto3
from healthnav.contracts import storage
from healthnav.trainer.tinymodel import create_tiny_model

s3 = boto3.client("s3")
existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
for bucket in ("models", "data"):
    if bucket not in existing:
        s3.create_bucket(Bucket=bucket)
model_dir = Path(sys.argv[1]) / "tiny-mistral"
create_tiny_model(model_dir, family="mistral")
storage.upload_dir(model_dir, "s3://models/tiny-mistral/")
print("base model: s3://models/tiny-mistral/")
PYEOF
"$HNAV" data build examples/datasets/triage-v1.yaml --output "$WORK/triage-v1" --no-progress
"$HNAV" data stage "$WORK/triage-v1" s3://data/datasets/triage/v1/

echo "--- fine-tuning (examples/kind/finetunejob.yaml)"
kubectl apply -f examples/kind/finetunejob.yaml
kubectl -n "$DEMO_NS" wait ftj/triage-demo --for=jsonpath='{.status.phase}'=Succeeded --timeout=45m \
  || { kubectl -n "$DEMO_NS" describe ftj/triage-demo; exit 1; }
kubectl -n "$DEMO_NS" get ftj triage-demo -o jsonpath='{.status.output}{"\n"}'

echo "--- serving (examples/kind/modelserve.yaml)"
kubectl apply -f examples/kind/modelserve.yaml
kubectl -n "$DEMO_NS" wait ms/navigator-demo --for=jsonpath='{.status.phase}'=Ready --timeout=30m \
  || { kubectl -n "$DEMO_NS" describe ms/navigator-demo; exit 1; }
kubectl -n "$DEMO_NS" get ms navigator-demo

kubectl -n "$DEMO_NS" port-forward svc/navigator-demo-serve-svc "$SERVE_PORT:8000" >"$WORK/pf-serve.log" 2>&1 &
PIDS+=($!)
wait_port "$SERVE_PORT"
curl -fsS "http://127.0.0.1:$SERVE_PORT/v1/models"; echo
curl -fsS "http://127.0.0.1:$SERVE_PORT/v1/chat/completions" -H 'Content-Type: application/json' -d '{
  "model": "triage-demo",
  "messages": [{"role": "user", "content": "I have had a mild sore throat for two days. What should I do?"}],
  "max_tokens": 64
}'; echo
echo "kind-demo: done. Clean up with: kind delete cluster --name $CLUSTER"
