#!/bin/sh
# MLflow server for the cluster: backend store and artifact destination from the environment (the
# duelguard-mlflow-server Secret in infra/). MLflow checks Host headers (exact or fnmatch, port included):
# the default admits the in-cluster Service names mlflow, mlflow:5000, mlflow.<ns>.svc.cluster.local[:5000].
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://mlflow:PASSWORD@postgres:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://duelguard-mlflow}"
exec mlflow server \
  --host 0.0.0.0 --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*,mlflow.*}" \
  --workers "${MLFLOW_WORKERS:-2}" "$@"
