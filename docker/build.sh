#!/usr/bin/env bash
# Build the image (`make image`): docker/build.sh [TAG]   (default scicat-ingestor:latest)
#
# Needs a running engine (docker/engine.sh start gives one) and BuildKit, for the CA secret: `docker
# build` is BuildKit with buildx (Docker >= 23); a client older than 23 gets DOCKER_BUILDKIT=1.
# The base is python:3.11-slim, or the debootstrap-built stand-in docker/base-image.sh makes.
#
# CA bundle for pip (TLS-inspecting proxies): PIP_CA_BUNDLE=FILE, default $PIP_CERT or else the
# host's /etc/ssl/certs/ca-certificates.crt (it holds the locally added CAs); PIP_CA_BUNDLE= (empty)
# passes none. It reaches pip as a BuildKit secret, so no layer and no `docker history` holds it.
# BUILD_NETWORK (default host) is the network of the RUN steps.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-scicat-ingestor:latest}
say() { echo "build: $*" >&2; }

buildkit_client() { # prints the docker client that can build with BuildKit, with its environment
    local cli version
    for cli in docker /usr/bin/docker; do
        command -v "$cli" >/dev/null 2>&1 || continue
        if "$cli" buildx version >/dev/null 2>&1; then
            echo "$cli"
            return
        fi
        version=$("$cli" version --format '{{.Client.Version}}' 2>/dev/null || true)
        if [ -n "$version" ] && [ "${version%%.*}" -lt 23 ] 2>/dev/null; then
            echo "env DOCKER_BUILDKIT=1 $cli"
            return
        fi
    done
    say "no docker client with BuildKit: install the buildx plugin (docker-buildx-plugin)"
    exit 1
}

if [ -z "${PIP_CA_BUNDLE+set}" ]; then
    PIP_CA_BUNDLE=${PIP_CERT:-}
    if [ -z "$PIP_CA_BUNDLE" ] && [ -s /etc/ssl/certs/ca-certificates.crt ]; then
        PIP_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
    fi
fi
secret=()
if [ -n "$PIP_CA_BUNDLE" ]; then
    [ -s "$PIP_CA_BUNDLE" ] || { say "PIP_CA_BUNDLE=$PIP_CA_BUNDLE: no such file"; exit 1; }
    secret=(--secret "id=ca-bundle,src=$PIP_CA_BUNDLE")
    say "pip trusts the CA bundle $PIP_CA_BUNDLE (BuildKit secret)"
fi

base=$(docker/base-image.sh)
# The version the checkout's install got from git (setuptools-scm), e.g. 0.1.1.dev5+g1234abc.
version=${VERSION:-$(.venv/bin/python -c 'from importlib.metadata import version; print(version("scicat-ingestor"))' 2>/dev/null || echo 0.0.0+unknown)}
read -r -a client <<<"$(buildkit_client)"
previous=$(docker image inspect --format '{{.Id}}' "$TAG" 2>/dev/null || true)
started=$(date +%s%N)
"${client[@]}" build --network "${BUILD_NETWORK:-host}" --build-arg "BASE_IMAGE=$base" \
    --build-arg "VERSION=$version" \
    "${secret[@]}" --tag "$TAG" .
elapsed_ms=$((($(date +%s%N) - started) / 1000000))
current=$(docker image inspect --format '{{.Id}}' "$TAG")
if [ -n "$previous" ] && [ "$previous" != "$current" ]; then
    # The image this tag named before, and nothing else: kept if a container or tag still uses it.
    docker rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect --format '{{.Size}}' "$TAG")
seconds="$((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100))"
say "$TAG built on $base in $seconds s; $((size / 1000000)) MB"
