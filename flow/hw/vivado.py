"""FINN's Vivado half on the folded model: IP generation (Vitis HLS for the HLS nodes and the IODMAs), FIFO depths,
the stitched IP, the Zynq project and bitfile (ZynqBuild), FINN's PYNQ driver and its deployment package. Needs
Vivado and Vitis HLS, finn-hlslib and the Pynq-Z2 board files (`finn_deps`).

The test suite runs all of it against `tests/vivado_standin/` (checking stand-ins for `vivado` and `vitis_hls`);
what those write is marked (STANDIN_MARKER) and never deployed.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

from flow.errors import FlowError

VIVADO_STEPS = ["hw_codegen", "hw_ipgen", "set_fifo_depths", "create_stitched_ip", "synthesize_bitfile",
                "make_driver", "deployment_package"]
SUPPORTED_VIVADO = ("2022.2", "2023.1", "2023.2", "2024.1", "2024.2")  # FINN 1.6 calls vitis_hls up to 2024.2
STANDIN_MARKER = b"LPYOLO-FLOW VIVADO STAND-IN OUTPUT"  # tests/vivado_standin/standin.tcl writes it in every file
# FINN's dependency list (finn/interface/external_dependencies.yaml) names what the Vivado half reads:
NEEDED_DEPS = {"finn-hlslib": ("git_deps", "finn-hlslib"), "board_files/pynq-z2": ("direct_download_deps", "pynq-z2")}


# ------------------------------------------------------------------------------------------------------ tools
def vivado_tools() -> dict:
    """Vivado and Vitis HLS on the PATH, Vivado's own word on its version (`vivado -version`) and XILINX_VIVADO, which
    FINN reads (its version picks the HLS tool's command line). Raises FlowError for a version FINN does not support."""
    tools = {t: shutil.which(t) for t in ("vivado", "vitis_hls")}
    tools["usable"] = bool(tools["vivado"] and tools["vitis_hls"])
    if not tools["usable"]:
        return tools
    try:
        out = subprocess.run([tools["vivado"], "-version"], capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FlowError(f"{tools['vivado']} -version failed ({e}): check the Vivado installation") from e
    m = re.search(r"Vivado v(\d{4}\.\d)", out)
    version = m.group(1) if m else None
    if version not in SUPPORTED_VIVADO:
        raise FlowError(f"{tools['vivado']} is Vivado {version or '(no version in `vivado -version`)'}; finn-plus 1.6.1 "
                        f"runs {', '.join(SUPPORTED_VIVADO)}: source that version's settings64.sh (or set "
                        "FINN_XILINX_VERSION for docker)")
    env = os.environ.get("XILINX_VIVADO")
    if env is None:  # settings64.sh not sourced: the installation holding the binary
        env = str(Path(tools["vivado"]).resolve().parent.parent)
    if version not in env:
        raise FlowError(f"XILINX_VIVADO={env} does not name the Vivado on the PATH ({tools['vivado']}, {version}); "
                        "FINN reads the version from it: source that Vivado's settings64.sh")
    os.environ["XILINX_VIVADO"] = env
    tools["version"] = version
    return tools


# ------------------------------------------------------------------------------------------------ finn_deps
def _deps_list() -> dict:
    import finn
    import yaml

    return yaml.safe_load((Path(finn.__file__).parent / "interface" / "external_dependencies.yaml").read_text())


def default_deps_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "lpyolo-flow" / "finn_deps"


def missing_deps(deps: Path) -> list[str]:
    return [name for name in NEEDED_DEPS if not (deps / name).is_dir()]


def fetch_commands(deps: Path) -> list[str]:
    """The shell commands that get what FINN's dependency list pins, into `deps`."""
    d = _deps_list()
    hls, board = d["git_deps"]["finn-hlslib"], d["direct_download_deps"]["pynq-z2"]
    return [f"git clone {hls['url']} {deps}/finn-hlslib && git -C {deps}/finn-hlslib checkout {hls['commit']}",
            f"wget -O /tmp/pynq-z2.zip {board['url']} && unzip /tmp/pynq-z2.zip -d {deps}/{board['target_directory']}"]


def fetch_deps(deps: Path, listing: dict | None = None) -> None:
    """finn-hlslib at FINN's pinned commit and the Pynq-Z2 board files from FINN's URL, into `deps` (what FINN's own
    `finn deps update` would fetch for this board, without the other boards and libraries). Each lands whole or
    not at all (fetched beside, then renamed)."""
    import io
    import urllib.request
    import zipfile

    d = listing or _deps_list()
    deps.mkdir(parents=True, exist_ok=True)
    if not (deps / "finn-hlslib").is_dir():
        hls = d["git_deps"]["finn-hlslib"]
        tmp = deps / f".finn-hlslib-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        for cmd in (["git", "clone", "--quiet", hls["url"], str(tmp)],
                    ["git", "-C", str(tmp), "checkout", "--quiet", hls["commit"]]):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            if p.returncode:
                shutil.rmtree(tmp, ignore_errors=True)
                raise OSError(f"{' '.join(cmd)}: {p.stderr.strip()[-300:]}")
        tmp.rename(deps / "finn-hlslib")
    if not (deps / "board_files" / "pynq-z2").is_dir():
        board = d["direct_download_deps"]["pynq-z2"]
        with urllib.request.urlopen(board["url"], timeout=120) as r:  # noqa: S310 - FINN's own pinned URL
            data = r.read()
        tmp = deps / f".board_files-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        zipfile.ZipFile(io.BytesIO(data)).extractall(tmp)
        if not (tmp / "pynq-z2").is_dir():
            raise OSError(f"{board['url']} holds no pynq-z2/ folder")
        (deps / board["target_directory"]).mkdir(exist_ok=True)
        (tmp / "pynq-z2").rename(deps / board["target_directory"] / "pynq-z2")
        shutil.rmtree(tmp, ignore_errors=True)


def ensure_finn_deps() -> Path:
    """FINN_DEPS if set (it must hold them: nothing is written there), else our cache, fetched when missing; exported
    as FINN_DEPS, which FINN's settings read (HLS include path, `$BOARDFILES$`). Stops with what is missing and the
    commands that get it."""
    given = os.environ.get("FINN_DEPS")
    deps = Path(given) if given else default_deps_dir()
    error = None
    if missing_deps(deps) and not given:
        print(f"fetching finn-hlslib and the Pynq-Z2 board files (FINN's pinned versions) into {deps}")
        try:
            fetch_deps(deps)
        except (OSError, subprocess.SubprocessError) as e:  # offline, or a URL moved
            error = e
    missing = missing_deps(deps)
    if missing:
        why = f"FINN_DEPS={deps} lacks them" if given else f"fetching them failed ({error})"
        raise FlowError(f"FINN's Vivado half needs {', '.join(missing)} in {deps}; {why}. Get them with:\n  "
                        + "\n  ".join(fetch_commands(deps))
                        + ("" if given else "\nor set FINN_DEPS to a folder that holds finn-hlslib/ and board_files/pynq-z2/"))
    os.environ["FINN_DEPS"] = str(deps.resolve())
    return deps


# ------------------------------------------------------------------------------------------------------ build
def is_standin(path: Path) -> bool:
    with open(path, "rb") as f:
        return STANDIN_MARKER in f.read(4096)


def _failed_step(out: Path, error: str) -> FlowError:
    """Which FINN step stopped, what the tools said, and where the logs and what was built are."""
    done = {}
    if (out / "report" / "time_per_step.json").exists():
        done = json.loads((out / "report" / "time_per_step.json").read_text())
    step = next((s for s in VIVADO_STEPS if f"step_{s}" not in done), "?")
    log = out / "build_dataflow.log"
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    said = [ln.strip() for ln in lines if "ERROR" in ln and ln.strip()][-4:] or [error]
    return FlowError(f"FINN step {step} failed: " + "\n  ".join(said) + f"\nlog: {log}; what was built before it is "
                     f"kept in {out} and {out.parent / 'tmp'}")


def run_vivado_steps(run_dir: Path) -> dict:
    """The Vivado half through FINN's own builder on the model the estimate just folded, with that build's clock,
    part and board (finn/build_config.json); then RUN/deploy gets the bitfile, hwh and manifest. Returns what was
    made, and whether by the test suite's stand-in."""
    from finn.builder.build_dataflow import build_dataflow_cfg
    from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType

    from flow.hw.build import FinnConfig, intermediate_model
    from flow.hw.compat import init_finn

    d = Path(run_dir) / "finn"
    cfg = FinnConfig(**json.loads((d / "build_config.json").read_text()))
    init_finn(d / "tmp")
    out = d / "vivado"  # fresh: the estimate before it (prepare_build_dir) cleared finn/
    dcfg = DataflowBuildConfig(
        output_dir=str(out), synth_clk_period_ns=cfg.clk_ns, board=cfg.board, fpga_part=cfg.part,
        shell_flow_type="vivado_zynq", auto_fifo_depths=False, fifo_config_file=d / "report" / "fifo_config.json",
        steps=["step_" + s for s in VIVADO_STEPS],
        generate_outputs=[DataflowOutputType.STITCHED_IP, DataflowOutputType.BITFILE, DataflowOutputType.PYNQ_DRIVER,
                          DataflowOutputType.DEPLOYMENT_PACKAGE])
    import sys

    streams = sys.stdout, sys.stderr  # FINN's builder swaps in its loggers and does not always put them back
    try:
        rc = build_dataflow_cfg(str(intermediate_model(d, "generate_estimate_reports")), dcfg)
    except Exception as e:  # noqa: BLE001 - FINN re-raises anything under pytest; same message as its return code
        raise _failed_step(out, f"{type(e).__name__}: {e}") from e
    finally:
        sys.stdout, sys.stderr = streams
    if rc != 0:
        raise _failed_step(out, f"build_dataflow_cfg returned {rc}")
    bit, hwh = out / "bitfile" / "finn-accel.bit", out / "bitfile" / "finn-accel.hwh"
    for f in (bit, hwh):
        if not f.is_file():
            raise FlowError(f"FINN's bitfile step finished without {f}; see {out / 'build_dataflow.log'}")
    from flow.provenance import record

    command = f"python -m flow bitstream --run {run_dir}"
    for f in (bit, hwh):
        record(f, [d / "build_done.json"], command)  # which build (hence which model) each file is
    standin = is_standin(bit)
    if not standin:  # a stand-in's files stay where FINN put them: RUN/deploy only ever gets Vivado's
        deploy = Path(run_dir) / "deploy"
        deploy.mkdir(exist_ok=True)
        bit, hwh = Path(shutil.copy(bit, deploy / "finn-accel.bit")), Path(shutil.copy(hwh, deploy / "finn-accel.hwh"))
        shutil.copy(Path(run_dir) / "manifest.json", deploy / "manifest.json")
        for f in (bit, hwh):
            record(f, [d / "build_done.json"], command)
        record(deploy / "manifest.json", [Path(run_dir) / "manifest.json"], command)
    reports = {name: str(out / "report" / name) for name in ("post_synth_resources.json", "post_route_timing.rpt",
                                                             "post_synth_report.xml")
               if (out / "report" / name).exists()}
    return {"bitfile": str(bit), "hwh": str(hwh), "driver": str(out / "deploy" / "driver"),
            "stitched_ip": str(out / "stitched_ip"), "reports": reports, "standin": standin}
