#!/usr/bin/env bash
# Inside the FINN image: put the mounted Vivado / Vitis HLS on the PATH, then run the command.
set -euo pipefail

: "${FINN_XILINX_PATH:?FINN_XILINX_PATH is not set: docker/run.sh mounts the host Xilinx tools there}"
: "${FINN_XILINX_VERSION:?FINN_XILINX_VERSION is not set (e.g. 2024.2)}"

vivado_settings="$FINN_XILINX_PATH/Vivado/$FINN_XILINX_VERSION/settings64.sh"
if [[ ! -f "$vivado_settings" ]]; then  # 2025.x: <version>/Vivado
    vivado_settings="$FINN_XILINX_PATH/$FINN_XILINX_VERSION/Vivado/settings64.sh"
fi
if [[ ! -f "$vivado_settings" ]]; then
    echo "error: $vivado_settings not found; check FINN_XILINX_PATH/FINN_XILINX_VERSION on the host" >&2
    exit 2
fi
# settings64.sh reads unset variables; source it without -u
set +u
# shellcheck disable=SC1090
source "$vivado_settings"
# Vitis HLS moved under Vitis/ in 2024.2 (vitis_hls), and under <version>/Vitis in 2025.x (vitis-run)
for hls in "$FINN_XILINX_PATH/Vitis_HLS/$FINN_XILINX_VERSION/settings64.sh" \
           "$FINN_XILINX_PATH/Vitis/$FINN_XILINX_VERSION/settings64.sh" \
           "$FINN_XILINX_PATH/$FINN_XILINX_VERSION/Vitis/settings64.sh"; do
    if [[ -f "$hls" ]]; then
        # shellcheck disable=SC1090
        source "$hls"
        break
    fi
done
set -u
exec "$@"
