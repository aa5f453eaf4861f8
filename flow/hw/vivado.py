"""FINN's Vivado half on the folded model: IP generation, FIFO depths, stitched IP, the Zynq project, the bitfile
and the deployment package. Needs Vivado and Vitis HLS."""

from __future__ import annotations

import shutil
from pathlib import Path

from flow.hw.z2 import BOARD, CLK_NS, PART

VIVADO_STEPS = ["hw_codegen", "hw_ipgen", "set_fifo_depths", "create_stitched_ip", "measure_rtlsim_performance",
                "out_of_context_synthesis", "synthesize_bitfile", "deployment_package"]


def run_vivado_steps(run_dir: Path) -> int:
    """The Vivado half through FINN's own builder on the folded model. Not exercised here (no Vivado)."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    d = run_dir / "finn"
    model = sorted((d / "intermediate_models").glob("*_generate_estimate_reports.onnx"))[-1]
    cfg = DataflowBuildConfig(
        output_dir=str(d / "vivado"), synth_clk_period_ns=CLK_NS, board=BOARD, fpga_part=PART,
        shell_flow_type="vivado_zynq", auto_fifo_depths=False, fifo_config_file=d / "report" / "fifo_config.json",
        steps=["step_" + s for s in VIVADO_STEPS],
        generate_outputs=[DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER, DataflowOutputType.DEPLOYMENT_PACKAGE])
    rc = build_dataflow_cfg(str(model), cfg)
    if rc != 0:
        return rc
    deploy = run_dir / "deploy"
    deploy.mkdir(exist_ok=True)
    from flow.provenance import record

    bit = next((d / "vivado" / "bitfile").glob("*.bit"))
    shutil.copy(bit, deploy / "finn-accel.bit")
    shutil.copy(bit.with_suffix(".hwh"), deploy / "finn-accel.hwh")
    shutil.copy(run_dir / "manifest.json", deploy / "manifest.json")
    command = f"python -m flow bitstream --run {run_dir}"
    for b in (bit, bit.with_suffix(".hwh"), deploy / "finn-accel.bit", deploy / "finn-accel.hwh"):
        record(b, [d / "build_done.json"], command)  # which build (hence which model) each file is
    record(deploy / "manifest.json", [run_dir / "manifest.json"], command)
    return 0
