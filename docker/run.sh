#!/usr/bin/env bash
# Run a command in the FINN image with the host's Vivado mounted, e.g.
#   FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2024.2 docker/run.sh make bitstream RUN=runs/4w4a
# Variables (FINN's names): FINN_XILINX_PATH, FINN_XILINX_VERSION, PYNQ_BOARD (Pynq-Z2), NUM_DEFAULT_WORKERS;
# FINN_DOCKER_TAG picks the image (built here on first use). FINN's intermediate files go to RUN/finn/tmp (in the
# mounted repository), so there is no separate build folder to mount.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${FINN_DOCKER_TAG:-lpyolo-flow-finn:latest}"
: "${FINN_XILINX_PATH:?set FINN_XILINX_PATH to the host Xilinx install root (the folder holding Vivado/)}"
: "${FINN_XILINX_VERSION:?set FINN_XILINX_VERSION, e.g. 2024.2}"
# Vivado/<version> up to 2024.2; 2025.x installs to <version>/Vivado
if [[ ! -d "$FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION" && ! -d "$FINN_XILINX_PATH/$FINN_XILINX_VERSION/Vivado" ]]; then
    echo "error: no Vivado at $FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION (nor $FINN_XILINX_PATH/$FINN_XILINX_VERSION/Vivado)" >&2
    exit 2
fi
# DRY_RUN=1: print the docker command instead of building the image and running it (the test suite's check that
# what `make docker-bitstream` passes, HLS=1 included, reaches the command run in the container)
if [[ -z "${DRY_RUN:-}" ]] && ! docker image inspect "$tag" >/dev/null 2>&1; then
    docker build -f "$repo/docker/finn.Dockerfile" -t "$tag" "$repo"
fi

tty_flags=()
if [[ -t 0 ]]; then
    tty_flags=(-it)
fi
# As FINN's run-docker.sh: the host's user and group names for `-u uid:gid` (read-only), and libudev preloaded for
# Vivado's licence code. /opt/venv is the image's prepared environment (LPYOLO_VENV, read by the Makefile).
run=(docker run --rm --init "${tty_flags[@]}" \
    -u "$(id -u):$(id -g)" \
    -v /etc/passwd:/etc/passwd:ro \
    -v /etc/group:/etc/group:ro \
    -e LD_PRELOAD=/lib/x86_64-linux-gnu/libudev.so.1 \
    -e HOME=/tmp \
    -e FINN_XILINX_PATH="$FINN_XILINX_PATH" \
    -e FINN_XILINX_VERSION="$FINN_XILINX_VERSION" \
    -e PYNQ_BOARD="${PYNQ_BOARD:-Pynq-Z2}" \
    -e NUM_DEFAULT_WORKERS="${NUM_DEFAULT_WORKERS:-4}" \
    -e LPYOLO_VENV=/opt/venv \
    -v "$FINN_XILINX_PATH:$FINN_XILINX_PATH:ro" \
    -v "$repo:/workspace" \
    -w /workspace \
    "$tag" "$@")
if [[ -n "${DRY_RUN:-}" ]]; then
    printf '%q ' "${run[@]}"
    echo
    exit 0
fi
exec "${run[@]}"
