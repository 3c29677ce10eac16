#!/bin/sh
# MLflow server for the cluster: backend store and artifact destination from the environment (the
# duelguard-mlflow-server Secret in infra/). MLflow checks Host headers (exact or fnmatch, port included):
# the default admits the in-cluster Service names mlflow, mlflow:5000, mlflow.<ns>.svc.cluster.local[:5000].
#
# Authentication is always on: MLflow's basic-auth app (`--app-name basic-auth`) answers 401 to every
# request without valid credentials but /health (the probes). There is no switch to turn it off here;
# a missing admin password or Flask secret stops the container instead of serving an open registry.
# The admin user is created from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD the first time
# the user store is empty (MLflow reads both variables itself; later changes need the update-password
# API). The user store defaults to the backend store's database (its tables and its migration table,
# alembic_version_auth, do not collide with the tracking schema); MLFLOW_AUTH_DATABASE_URI moves it.
set -eu
: "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI, e.g. postgresql://mlflow:PASSWORD@postgres:5432/mlflow}"
: "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION, e.g. s3://duelguard-mlflow}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?set MLFLOW_AUTH_ADMIN_USERNAME: the registry admin (the clients' MLFLOW_TRACKING_USERNAME)}"
: "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD: the registry admin password (the clients' MLFLOW_TRACKING_PASSWORD)}"
: "${MLFLOW_FLASK_SERVER_SECRET_KEY:?set MLFLOW_FLASK_SERVER_SECRET_KEY: a random string shared by every replica (CSRF)}"
case "$MLFLOW_AUTH_ADMIN_PASSWORD $MLFLOW_FLASK_SERVER_SECRET_KEY $MLFLOW_BACKEND_STORE_URI" in
  *CHANGE_ME*|*change_me*) echo "mlflow-serve: a credential is still a CHANGE_ME placeholder (infra/secrets.example)" >&2; exit 1 ;;
esac
export MLFLOW_AUTH_CONFIG_PATH="${MLFLOW_AUTH_CONFIG_PATH:-${TMPDIR:-/tmp}/mlflow-basic-auth.ini}"
umask 077  # the ini holds the user store's URI (with its password)
cat > "$MLFLOW_AUTH_CONFIG_PATH" <<EOF
[mlflow]
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DATABASE_URI:-$MLFLOW_BACKEND_STORE_URI}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
exec mlflow server \
  --app-name basic-auth \
  --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
  --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
  --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-localhost,localhost:*,127.0.0.1,127.0.0.1:*,mlflow,mlflow:*,mlflow.*}" \
  --workers "${MLFLOW_WORKERS:-2}" "$@"
