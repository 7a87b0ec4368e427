#!/usr/bin/env bash
# Print the base image for the Dockerfile's BASE_IMAGE; make one when python:3.11-slim is missing.
#
# In order: python:3.11-slim already on the engine; our local base already on the engine; a pull of
# python:3.11-slim (one quick attempt, skipped with SCICAT_BASE_PULL=0); else build the local base:
# a Debian bookworm root file system made with debootstrap (minbase + python3 3.11, python3-venv,
# ca-certificates), with a virtual environment at /usr/local so that, like the official image,
# /usr/local/bin/python and pip come first on PATH and `pip install` needs no
# --break-system-packages.
# The root file system is cached as a tarball under ~/.cache/scicat-ingestor/, so a fresh engine
# imports it again without debootstrap. Building it needs root and debootstrap (installed with
# apt-get when missing). Everything but the image name goes to stderr.
set -euo pipefail

OFFICIAL=python:3.11-slim
LOCAL=${SCICAT_BASE_TAG:-scicat-ingestor-base:bookworm-python3.11}
CACHE_DIR=${SCICAT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/scicat-ingestor}
ROOTFS_TAR="$CACHE_DIR/bookworm-python3.11-rootfs.tar.gz"
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES=python3,python3-venv,ca-certificates

say() { echo "base-image: $*" >&2; }
present() { docker image inspect "$1" >/dev/null 2>&1; }

make_rootfs() {
    if [ "$(id -u)" != 0 ]; then
        say "debootstrap needs root; run as root once, or provide $OFFICIAL on the engine"
        exit 1
    fi
    if ! command -v debootstrap >/dev/null 2>&1; then
        say "installing debootstrap with apt-get"
        {
            apt-get update -qq &&
                DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                    debootstrap
        } >&2
    fi
    mkdir -p "$CACHE_DIR"
    local root
    root=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
    # shellcheck disable=SC2064 # expand $root now
    trap "rm -rf '$root'" EXIT
    say "debootstrap bookworm ($PACKAGES) from $MIRROR"
    debootstrap --variant=minbase --include="$PACKAGES" bookworm "$root" "$MIRROR" \
        >"$CACHE_DIR/debootstrap.log" 2>&1 || {
        say "debootstrap failed; last lines of $CACHE_DIR/debootstrap.log:"
        tail -n 15 "$CACHE_DIR/debootstrap.log" >&2
        exit 1
    }
    # The official image's layout: python, python3 and pip in /usr/local/bin (here: a venv).
    chroot "$root" /usr/bin/python3 -m venv /usr/local
    chroot "$root" /usr/local/bin/python -m pip --version >&2
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
        "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
        "$root"/debootstrap
    find "$root"/usr -name __pycache__ -prune -exec rm -rf {} +
    tar --numeric-owner -C "$root" -czf "$ROOTFS_TAR.tmp" .
    mv "$ROOTFS_TAR.tmp" "$ROOTFS_TAR"
    rm -rf "$root"
    trap - EXIT
    say "root file system cached: $ROOTFS_TAR ($(du -h "$ROOTFS_TAR" | cut -f1))"
}

if present "$OFFICIAL"; then
    echo "$OFFICIAL"
    exit 0
fi
if present "$LOCAL"; then
    say "using the cached local base $LOCAL"
    echo "$LOCAL"
    exit 0
fi
if [ "${SCICAT_BASE_PULL:-1}" = 1 ] && timeout 60 docker pull -q "$OFFICIAL" >/dev/null 2>&1; then
    echo "$OFFICIAL"
    exit 0
fi
say "$OFFICIAL is not on the engine and cannot be pulled: building $LOCAL"
[ -s "$ROOTFS_TAR" ] || make_rootfs
description="Debian bookworm + Python 3.11, venv at /usr/local: python:3.11-slim stand-in"
docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change "LABEL org.opencontainers.image.description=\"$description\"" \
    --change 'CMD ["python3"]' \
    "$ROOTFS_TAR" "$LOCAL" >/dev/null
say "imported $LOCAL from $ROOTFS_TAR"
echo "$LOCAL"
