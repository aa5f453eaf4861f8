#!/usr/bin/env bash
# Run a command in the FINN image with the host's Vivado mounted, e.g.
#   FINN_XILINX_PATH=/tools/Xilinx FINN_XILINX_VERSION=2024.2 docker/run.sh make bitstream RUN=runs/4w4a
# Variables (FINN's names): FINN_XILINX_PATH, FINN_XILINX_VERSION, PYNQ_BOARD (Pynq-Z2), FINN_HOST_BUILD_DIR,
# NUM_DEFAULT_WORKERS; FINN_DOCKER_TAG picks the image (built here on first use).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tag="${FINN_DOCKER_TAG:-lpyolo-flow-finn:latest}"
: "${FINN_XILINX_PATH:?set FINN_XILINX_PATH to the host Xilinx install root (the folder holding Vivado/)}"
: "${FINN_XILINX_VERSION:?set FINN_XILINX_VERSION, e.g. 2024.2}"
if [[ ! -d "$FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION" ]]; then
    echo "error: no Vivado at $FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION" >&2
    exit 2
fi
build_dir="${FINN_HOST_BUILD_DIR:-/tmp/finn_dev_$(id -un)}"
mkdir -p "$build_dir"

if ! docker image inspect "$tag" >/dev/null 2>&1; then
    docker build -f "$repo/docker/finn.Dockerfile" -t "$tag" "$repo"
fi

tty_flags=()
if [[ -t 0 ]]; then
    tty_flags=(-it)
fi
exec docker run --rm --init "${tty_flags[@]}" \
    -u "$(id -u):$(id -g)" \
    -e HOME=/tmp \
    -e FINN_XILINX_PATH="$FINN_XILINX_PATH" \
    -e FINN_XILINX_VERSION="$FINN_XILINX_VERSION" \
    -e PYNQ_BOARD="${PYNQ_BOARD:-Pynq-Z2}" \
    -e FINN_HOST_BUILD_DIR="$build_dir" \
    -e NUM_DEFAULT_WORKERS="${NUM_DEFAULT_WORKERS:-4}" \
    -e LPYOLO_VENV=/opt/venv \
    -v "$FINN_XILINX_PATH:$FINN_XILINX_PATH:ro" \
    -v "$build_dir:$build_dir" \
    -v "$repo:/workspace" \
    -w /workspace \
    "$tag" "$@"
