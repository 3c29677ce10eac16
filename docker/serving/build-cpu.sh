#!/bin/bash
# Build the serving image's CPU variant offline: every wheel it needs goes into a wheelhouse here, which a
# loopback HTTP server hands to the build (PIP_NO_INDEX + PIP_FIND_LINKS, `docker build --network host`),
# FROM the local base image of docker/base/build-debian-base.sh. Same Dockerfile as the NVIDIA variant.
#   usage: docker/serving/build-cpu.sh [TAG]      (env: PYTHON, BASE_IMAGE, WHEELHOUSE, WHEELHOUSE_PORT, DOCKER_HOST)
# The wheelhouse URL is a build argument, so its port is fixed (a new port would defeat the layer cache).
set -euo pipefail
tag="${1:-duelguard-serving-cpu:$(git rev-parse --short=12 HEAD 2>/dev/null || echo dev)}"
python="${PYTHON:-.venv/bin/python}"
base="${BASE_IMAGE:-duelguard-base:bookworm-python3}"
wheelhouse="${WHEELHOUSE:-build/wheelhouse}"
docker image inspect "$base" > /dev/null 2>&1 || { echo "no base image $base: run docker/base/build-debian-base.sh" >&2; exit 1; }
mkdir -p "$wheelhouse"
"$python" -m pip wheel -q -w "$wheelhouse" --constraint requirements.lock ".[serving]" "setuptools>=77" wheel
rm -f "$wheelhouse"/duelguard-*.whl   # the image builds the library from its own copy of libs/
port="${WHEELHOUSE_PORT:-38517}"
"$python" -m http.server --bind 127.0.0.1 --directory "$wheelhouse" "$port" > /dev/null 2>&1 &
server=$!
trap 'kill $server' EXIT
docker build --network host -f docker/serving/Dockerfile -t "$tag" \
  --build-arg BASE_IMAGE="$base" --build-arg SERVING_TARGET=local \
  --build-arg PIP_NO_INDEX=1 --build-arg PIP_FIND_LINKS="http://127.0.0.1:$port/" --build-arg PIP_EXTRA_INDEX_URL= \
  --build-arg GIT_COMMIT="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)" .
echo "built $tag"
