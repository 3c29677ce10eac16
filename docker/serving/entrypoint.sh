#!/bin/sh
# Start Triton on the champion's model repository. If $MODEL_REPOSITORY is empty, export it first from
# the MLflow registry ($DUELGUARD_MODEL_URI, default models:/duelguard-classifier@champion; the tracking
# server comes from $MLFLOW_TRACKING_URI). Extra arguments go to tritonserver.
set -eu
repo="${MODEL_REPOSITORY:-/models}"
model="${DUELGUARD_MODEL_URI:-models:/duelguard-classifier@champion}"
if [ -z "$(ls -A "$repo" 2>/dev/null)" ]; then
  echo "duelguard-serve: exporting $model into $repo" >&2
  duelguard export-triton --model "$model" --out "$repo"
fi
exec tritonserver --model-repository="$repo" --http-port=8000 --grpc-port=8001 --metrics-port=8002 "$@"
