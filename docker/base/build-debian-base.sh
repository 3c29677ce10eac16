#!/bin/sh
# Build the local base image `duelguard-base:bookworm-python3` without any image registry: debootstrap a
# minimal Debian 12 root filesystem (python3 + venv + the shared libpython that Triton's Python-backend
# stub links against) from the Debian mirror and `docker import` it. Needs root, debootstrap and a
# Docker engine ($DOCKER_HOST). The serving image's CPU variant builds FROM it (docker/serving/Dockerfile,
# `make image-serving-cpu`); NVIDIA's image replaces it where nvcr.io is reachable.
set -eu
tag="${1:-duelguard-base:bookworm-python3}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/duelguard-base.XXXXXX")"
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,libpython3.11,ca-certificates bookworm "$work/rootfs" "$mirror"
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"*
tar -C "$work/rootfs" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8' \
  --change 'CMD ["/bin/bash"]' - "$tag"
echo "built $tag"
