#!/bin/sh
# Builds a local stand-in for python:3.13-slim-trixie from Debian's own packages, for
# machines that reach Debian's archive but no container registry:
#   debootstrap --variant=minbase trixie  ->  docker import  ->  IMAGE
# docker/app/Dockerfile.debian then builds on it with
#   --build-arg BASE_IMAGE=thoughts-backend/debian-python:trixie
# and so does the PostgreSQL stand-in of docker/db-standin/.
#
# Usage (as root, dockerd running):  docker/build_debian_base.sh [IMAGE]
# Environment: DEBIAN_MIRROR (default: debootstrap's own default mirror),
#              DEBIAN_SECURITY_MIRROR (default: the mirror's URL with "-security" added,
#              which is where Debian's default mirror keeps the security updates).
# Installs debootstrap and docker.io with apt-get when they are missing.
set -eu

image=${1:-thoughts-backend/debian-python:trixie}
suite=trixie
# What python:3.13-slim-trixie gives the Dockerfile: an interpreter with venv and the
# shared libpython that uWSGI links against, plus CA certificates for pip.
packages=python3,python3-venv,libpython3.13,ca-certificates

if [ "$(id -u)" -ne 0 ]; then
    echo "build_debian_base.sh: debootstrap needs root" >&2
    exit 1
fi

missing=""
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
if [ -n "$missing" ]; then
    apt-get update
    # shellcheck disable=SC2086  # $missing is a word list on purpose
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
fi

if ! docker info >/dev/null 2>&1; then
    echo "build_debian_base.sh: the Docker daemon is not reachable; start dockerd first" >&2
    exit 1
fi

rootfs=$(mktemp -d /var/tmp/thoughts-rootfs.XXXXXX)
trap 'rm -rf "$rootfs"' EXIT

# With no mirror given, debootstrap uses its own default and writes it to sources.list.
# shellcheck disable=SC2086  # ${DEBIAN_MIRROR:-}: no argument at all when unset
debootstrap --variant=minbase --include="$packages" "$suite" "$rootfs" ${DEBIAN_MIRROR:-}
mirror=$(awk '$1 == "deb" { print $2; exit }' "$rootfs/etc/apt/sources.list")
security_mirror=${DEBIAN_SECURITY_MIRROR:-$mirror-security}
if [ -z "$mirror" ]; then
    echo "build_debian_base.sh: debootstrap wrote no mirror to sources.list" >&2
    exit 1
fi

cat > "$rootfs/etc/apt/sources.list" <<SOURCES
deb $mirror $suite main
deb $mirror $suite-updates main
deb $security_mirror $suite-security main
SOURCES
# As in Debian's own slim images: no manuals or documentation (copyright notices stay),
# neither now nor from packages installed later.
cat > "$rootfs/etc/dpkg/dpkg.cfg.d/01-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
SLIM
# debootstrap only reads the release itself: take the point-release and security fixes.
chroot "$rootfs" apt-get update
chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive apt-get -y upgrade
chroot "$rootfs" apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/log/*.log \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/*
find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
# python:*-slim images answer to `python` as well as `python3`.
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"

tar --numeric-owner -C "$rootfs" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["python3"]' \
    --change "LABEL org.opencontainers.image.description=\"Debian $suite minbase with python3, built by docker/build_debian_base.sh\"" \
    - "$image"
echo "built $image"
