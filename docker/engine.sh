#!/usr/bin/env bash
# A Docker engine for `make image` / `make container-test`, started only where none answers.
#
#   eval "$(docker/engine.sh start)"   sets DOCKER_HOST ('' = the default engine) and ENGINE_PID
#   docker/engine.sh stop "$ENGINE_PID"  stops the dockerd that this `start` started, if any
#
# ENGINE_PID is empty unless that `start` started the engine, so only its starter stops it. An
# engine that already answers (`docker info` with the caller's environment) is used as it is.
# Otherwise, as root only, this script installs Debian's docker.io when dockerd is missing
# (apt-get) and starts a private dockerd: its own socket, exec root and pid file under
# /run/scicat-ingestor-docker, its own containerd namespace, images kept under
# ~/.cache/scicat-ingestor/docker (so a second run finds the base and the layers), no bridge and
# no iptables rules (builds and containers use the host network), so it cannot disturb another
# engine or the host's firewall. `stop PID` sends SIGTERM to that dockerd and waits for it; a
# second user of the private dockerd (a `start` that found it running) gets ENGINE_PID='', unless
# the process that started it is gone (a killed run): then the new caller takes it over.
#
# `check` answers whether `start` can give an engine, without starting or installing anything.
# Exit status of `check` and `start`: 0 engine ready; 3 no engine can run here (not root and none
# answers, or no dockerd and no apt-get), reason on stderr; 1 something that should work failed
# (log named). `start` prints only the two shell lines on stdout.
set -euo pipefail

RUN_DIR=${SCICAT_ENGINE_RUN_DIR:-/run/scicat-ingestor-docker}
CACHE_DIR=${SCICAT_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/scicat-ingestor}
SOCK="$RUN_DIR/docker.sock"
PIDFILE="$RUN_DIR/dockerd.pid"
OWNED="$RUN_DIR/started-by-engine-sh"
LOG="$CACHE_DIR/dockerd.log"
START_TIMEOUT=${SCICAT_ENGINE_START_TIMEOUT:-60}

say() { echo "engine: $*" >&2; }
emit() { printf 'export DOCKER_HOST=%q\nENGINE_PID=%q\n' "$1" "$2"; }

answers() { # answers [DOCKER_HOST]: the engine behind that host (or the default) responds
    if [ -n "${1:-}" ]; then
        DOCKER_HOST="$1" timeout 20 docker info >/dev/null 2>&1
    else
        command -v docker >/dev/null 2>&1 && timeout 20 docker info >/dev/null 2>&1
    fi
}

install_docker() {
    say "installing Debian's docker.io (dockerd, containerd, runc) with apt-get, as root"
    # Where systemd runs, installing would start docker.service and containerd.service: a
    # policy-rc.d for the duration of the install keeps this script to the one dockerd it stops.
    local policy=/usr/sbin/policy-rc.d ours=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && ours=1
    fi
    local status=0
    {
        apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker.io
    } >"$CACHE_DIR/apt-docker.log" 2>&1 || status=$?
    [ -z "$ours" ] || rm -f "$policy"
    if [ "$status" != 0 ]; then
        say "apt-get install docker.io failed; see $CACHE_DIR/apt-docker.log"
        exit 1
    fi
}

startable() { # exit 3 with the reason unless this script may start (and install) a dockerd
    if [ "$(id -u)" != 0 ]; then
        say "no Docker engine answers and starting one needs root: no container engine can run here"
        exit 3
    fi
    if ! command -v dockerd >/dev/null 2>&1 && ! command -v apt-get >/dev/null 2>&1; then
        say "no dockerd and no apt-get to install docker.io: no container engine can run here"
        exit 3
    fi
}

check() { # no side effects: exit 0 when `start` can give an engine, 3 (reason) when not
    answers "${DOCKER_HOST:-}" || answers "unix://$SOCK" || startable
}

start() {
    if answers "${DOCKER_HOST:-}"; then
        say "using the running engine (${DOCKER_HOST:-default socket}); it will not be stopped"
        emit "${DOCKER_HOST:-}" ""
        return
    fi
    if answers "unix://$SOCK"; then
        local daemon starter
        read -r daemon starter <"$OWNED" 2>/dev/null || true
        if [ -n "${daemon:-}" ] && [ -n "${starter:-}" ] && ! kill -0 "$starter" 2>/dev/null; then
            # Its starter died without stopping it (a killed test run): this caller takes it over.
            echo "$daemon $PPID" >"$OWNED"
            say "taking over the private dockerd (pid $daemon) its dead starter left running"
            emit "unix://$SOCK" "$daemon"
        else
            say "using the private dockerd already running on $SOCK; its starter stops it"
            emit "unix://$SOCK" ""
        fi
        return
    fi
    startable
    mkdir -p "$RUN_DIR" "$CACHE_DIR/docker"
    command -v dockerd >/dev/null 2>&1 || install_docker
    echo '{}' >"$RUN_DIR/daemon.json" # never pick up /etc/docker/daemon.json
    say "starting a private dockerd on $SOCK (log $LOG)"
    setsid dockerd \
        --host "unix://$SOCK" \
        --config-file "$RUN_DIR/daemon.json" \
        --data-root "$CACHE_DIR/docker" \
        --exec-root "$RUN_DIR/exec" \
        --pidfile "$PIDFILE" \
        --containerd-namespace scicat-ingestor \
        --containerd-plugins-namespace scicat-ingestor-plugins \
        --bridge none --iptables=false --ip6tables=false --ip-masq=false \
        --storage-driver overlay2 \
        </dev/null >"$LOG" 2>&1 &
    local pid=$!
    echo "$pid $PPID" >"$OWNED" # the dockerd, and the caller that is to stop it
    local waited=0
    until answers "unix://$SOCK"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            rm -f "$OWNED"
            say "dockerd exited at start; last lines of $LOG:"
            tail -n 15 "$LOG" >&2
            exit 1
        fi
        if [ "$waited" -ge "$START_TIMEOUT" ]; then
            say "dockerd did not answer within ${START_TIMEOUT} s; stopping it (log $LOG)"
            stop "$pid" || true
            exit 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
    say "private dockerd ready (pid $pid)"
    emit "unix://$SOCK" "$pid"
}

stop() { # stop PID: the dockerd this script started with that pid; nothing for an empty PID
    local pid=${1:-}
    if [ -z "$pid" ]; then
        return
    fi
    local daemon=""
    read -r daemon _ <"$OWNED" 2>/dev/null || true
    if [ "$daemon" != "$pid" ]; then
        say "pid $pid is not the dockerd this script started: not stopping it"
        return 1
    fi
    rm -f "$OWNED"
    if [ "$(cat "/proc/$pid/comm" 2>/dev/null)" != dockerd ]; then
        say "the dockerd started earlier (pid $pid) is gone"
        return
    fi
    say "stopping the private dockerd (pid $pid)"
    kill -TERM "$pid"
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.5
    done
    say "dockerd (pid $pid) still running after 30 s; see $LOG"
    return 1
}

case "${1:-}" in
check) check ;;
start) start ;;
stop) stop "${2:-}" ;;
*)
    echo "usage: $0 check | start | stop PID" >&2
    exit 2
    ;;
esac
