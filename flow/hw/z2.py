"""The PYNQ-Z2's facts, read by every hardware stage: the part, the clock, the resources of the xc7z020, FINN's
planning limits, the allowance for the Zynq shell, and the fit of a resource total against them. The bottom of
`flow/hw/`: it imports nothing of the flow."""

from __future__ import annotations

BOARD = "Pynq-Z2"  # FINN's board name (its board files and PYNQ shell)
PART = "xc7z020clg400-1"
CLK_NS = 10.0  # 100 MHz, the clock every estimate, simulation and build here assumes
# The xc7z020 (AMD DS190, Zynq-7000 overview) and FINN's planning limits (finn/util/platforms.py DEFAULT_RES_LIMITS)
Z2_RESOURCES = {"LUT": 53200, "FF": 106400, "BRAM_18K": 280, "DSP": 220}
PLANNING_LIMITS = {"LUT": 0.70, "FF": 0.50, "BRAM_18K": 0.80, "DSP": 0.80}
# What FINN's per-layer estimates leave out: its Zynq shell (ZynqBuild: two HLS IODMAs, an AXI interconnect and a
# smartconnect, a clock wizard, a reset block), counted explicitly so the fit is not flattered. An assumption until
# a Vivado build's post-route utilisation replaces it.
SHELL_OVERHEAD = {"LUT": 4200, "BRAM_18K": 6, "DSP": 0}


def z2_fit(total: dict) -> dict:
    """Resources of the accelerator (FINN's estimate or Yosys's count) -> the shell allowance added, utilisation
    of the xc7z020 and what exceeds the planning limits."""
    with_overhead = {k: total[k] + SHELL_OVERHEAD.get(k, 0) for k in total}
    util = {k: with_overhead[k] / Z2_RESOURCES[k] for k in with_overhead}
    over = {k: round(util[k] - PLANNING_LIMITS[k], 4) for k in util if util[k] > PLANNING_LIMITS[k]}
    return {"shell_overhead": SHELL_OVERHEAD, "total_with_overhead": with_overhead,
            "utilisation": {k: round(v, 4) for k, v in util.items()}, "planning_limits": PLANNING_LIMITS,
            "fits": not over, "over_budget": over}
