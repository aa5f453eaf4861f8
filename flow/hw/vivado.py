"""FINN's Vivado half on the folded model: IP generation (Vitis HLS for the HLS nodes and the IODMAs), FIFO depths,
the stitched IP, the Zynq project and bitfile (ZynqBuild), FINN's PYNQ driver and its deployment package. Needs
Vivado and Vitis HLS, finn-hlslib and the Pynq-Z2 board files (`finn_deps`).

The test suite runs all of it against `tests/vivado_standin/` (checking stand-ins for `vivado`, `vitis_hls` and
`vitis-run`); what those write is marked (STANDIN_MARKER) and never deployed.
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
# What finn-plus 1.6.1 runs: finn/util/hls.py calls `vitis_hls SCRIPT` up to 2024.2 and `vitis-run --mode hls --tcl
# SCRIPT` after it; finn/util/basic.py reads the version from XILINX_VIVADO with `(20\d{2})\.(1|2)`.
SUPPORTED_VIVADO = ("2022.2", "2023.1", "2023.2", "2024.1", "2024.2", "2025.1", "2025.2")
# `vivado -version` prints "Vivado v2022.2.1 (64-bit)" up to 2022.2 and "vivado v2023.1 (64-bit)" on Linux from 2023.1
# on (tests/vivado_standin/fixtures/banner_*.txt); a patch release adds a third number.
VIVADO_BANNER = re.compile(r"^\s*vivado v(\d{4}\.\d)(?:\.\d+)?\b", re.IGNORECASE | re.MULTILINE)
STANDIN_MARKER = b"LPYOLO-FLOW VIVADO STAND-IN OUTPUT"  # tests/vivado_standin/standin.tcl writes it in every file
# FINN's dependency list (finn/interface/external_dependencies.yaml) names what the Vivado half reads:
NEEDED_DEPS = {"finn-hlslib": ("git_deps", "finn-hlslib"), "board_files/pynq-z2": ("direct_download_deps", "pynq-z2")}


# ------------------------------------------------------------------------------------------------------ tools
def vivado_version(banner: str) -> str | None:
    """The release ("2024.2") in what `vivado -version` printed, in either case; None when there is none."""
    m = VIVADO_BANNER.search(banner)
    return m.group(1) if m else None


def hls_tool(version: str) -> str:
    """The HLS command finn-plus 1.6.1 calls for this Vivado release (finn/util/hls.py)."""
    year, minor = (int(x) for x in version.split("."))
    return "vitis-run" if (year, minor) > (2024, 2) else "vitis_hls"


def hls_candidates(vivado_root: Path, version: str, tool: str) -> list[Path]:
    """Where an installation keeps the HLS tool when sourcing Vivado's settings64.sh alone leaves it off the PATH:
    Vitis_HLS/<version>/bin up to 2024.1, Vitis/<version>/bin from 2024.2 (FINN's interface_utils.py knows the move),
    <root>/<version>/Vitis/bin for the 2025 layout (<root>/<version>/Vivado)."""
    hls = os.environ.get("XILINX_HLS")
    xilinx = vivado_root.parent.parent if vivado_root.parent.name == "Vivado" else vivado_root.parent
    found = [Path(hls) / "bin" / tool] if hls else []
    found += [xilinx / "Vitis" / version / "bin" / tool, xilinx / "Vitis_HLS" / version / "bin" / tool,
              vivado_root.parent / "Vitis" / "bin" / tool]
    return found


def vivado_tools() -> dict:
    """Vivado on the PATH, Vivado's own word on its version (`vivado -version`), the HLS tool FINN calls for that
    version (vitis_hls, or vitis-run after 2024.2) and XILINX_VIVADO, which FINN reads (its version picks the HLS
    tool). Raises FlowError for a version finn-plus 1.6.1 does not run. `missing` says what is not on the PATH and,
    where the installation has it, where it is."""
    tools = {"vivado": shutil.which("vivado"), "hls": None, "missing": ""}
    if not tools["vivado"]:
        tools.update(usable=False, missing="vivado not on the PATH")
        return tools
    try:
        out = subprocess.run([tools["vivado"], "-version"], capture_output=True, text=True, timeout=300).stdout
    except (OSError, subprocess.TimeoutExpired) as e:
        raise FlowError(f"{tools['vivado']} -version failed ({e}): check the Vivado installation") from e
    version = vivado_version(out)
    if version not in SUPPORTED_VIVADO:
        said = out.strip().splitlines()[0] if out.strip() else "nothing"
        raise FlowError(f"{tools['vivado']} is Vivado {version or f'of unknown version (`vivado -version` said: {said})'}"
                        f"; finn-plus 1.6.1 runs {', '.join(SUPPORTED_VIVADO)}: source one of those versions' "
                        "settings64.sh (or set FINN_XILINX_VERSION for docker)")
    env = os.environ.get("XILINX_VIVADO")
    root = Path(tools["vivado"]).resolve().parent.parent
    if env is None:  # settings64.sh not sourced: the installation holding the binary
        env = str(root)
    if version not in env:
        raise FlowError(f"XILINX_VIVADO={env} does not name the Vivado on the PATH ({tools['vivado']}, {version}); "
                        "FINN reads the version from it: source that Vivado's settings64.sh")
    os.environ["XILINX_VIVADO"] = env
    tool = hls_tool(version)
    tools.update(version=version, hls_name=tool, hls=shutil.which(tool))
    if not tools["hls"]:
        where = [p for p in hls_candidates(Path(env), version, tool) if p.is_file()]
        tools["missing"] = (f"{tool} not on the PATH (finn-plus 1.6.1 calls {tool} for Vivado {version})"
                            + (f"; this installation has it at {where[0]}: source {where[0].parent.parent}/settings64.sh"
                               if where else "; Vivado 2024.2 and later install Vitis HLS under Vitis/<version>, "
                               "so sourcing Vivado's settings64.sh alone leaves it off the PATH: source Vitis's too"))
    tools["usable"] = bool(tools["hls"])
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


# ---------------------------------------------------------------------------------------------- Vivado's reports
TIMING_COLUMNS = ("wns_ns", "tns_ns", "tns_failing_endpoints", "tns_total_endpoints", "whs_ns", "ths_ns",
                  "ths_failing_endpoints", "ths_total_endpoints")
# report_utilization's rows: 7-series parts (the Z2's xc7z020) say "Slice", UltraScale+ parts say "CLB"
UTILIZATION_ROWS = {"LUT": ("Slice LUTs", "CLB LUTs"), "FF": ("Slice Registers", "CLB Registers"),
                    "BRAM_36K": ("Block RAM Tile",), "DSP": ("DSPs",)}


def parse_timing_summary(text: str, source: str = "report_timing_summary") -> dict:
    """WNS/TNS/WHS/THS of the whole design (the "Design Timing Summary" table), Vivado's verdict line, the clock and
    the worst setup path (its slack, start and end points) from `report_timing_summary` text."""
    lines = text.splitlines()
    try:
        head = next(i for i, ln in enumerate(lines) if ln.strip().startswith("WNS(ns)"))
        values = lines[head + 2].split()
        out = {k: (int(v) if "endpoints" in k else float(v)) for k, v in zip(TIMING_COLUMNS, values, strict=False)}
    except (StopIteration, IndexError, ValueError):
        raise FlowError(f"{source}: no Design Timing Summary (WNS(ns) ...) in it: not a report_timing_summary "
                        "of a routed design") from None
    if len(out) < len(TIMING_COLUMNS):
        raise FlowError(f"{source}: the Design Timing Summary row has {len(values)} numbers, not "
                        f"{len(TIMING_COLUMNS)}+")
    out["met"] = "All user specified timing constraints are met." in text
    if not out["met"] and "Timing constraints are not met." not in text:  # neither verdict: decide from the numbers
        out["met"] = out["wns_ns"] >= 0 and out["whs_ns"] >= 0
    clock = re.search(r"^(\S+)\s+\{[\d. ]+\}\s+([\d.]+)\s+([\d.]+)\s*$", text, re.M)
    if clock:
        out["clock"] = {"name": clock.group(1), "period_ns": float(clock.group(2)), "mhz": float(clock.group(3))}
    path = re.search(r"^Slack \((MET|VIOLATED)\)\s*:\s*(-?[\d.]+)ns.*\n\s+Source:\s+(\S+).*\n(?:.*\n)?"
                     r"\s+Destination:\s+(\S+)", text, re.M)
    if path:
        out["worst_setup_path"] = {"slack_ns": float(path.group(2)), "from": path.group(3), "to": path.group(4)}
    return out


def parse_utilization(text: str, source: str = "report_utilization") -> dict:
    """Used / available / percent per resource (LUT, FF, BRAM_36K tiles, DSP) from `report_utilization` text."""
    out = {}
    for key, names in UTILIZATION_ROWS.items():
        for name in names:
            m = re.search(rf"^\|\s*{re.escape(name)}\s*\|\s*(\d+)\s*\|[^|]*\|(?:[^|]*\|)?\s*(\d+)\s*\|\s*([\d.<]+)\s*\|",
                          text, re.M)
            if m:
                out[key] = {"used": int(m.group(1)), "available": int(m.group(2)),
                            "percent": float(m.group(3).lstrip("<"))}
                break
    if not out:
        raise FlowError(f"{source}: no Slice/CLB LUTs, Registers, Block RAM Tile or DSPs rows: not a report_utilization")
    return out


def timing_verdict(timing: dict, clk_ns: float) -> str | None:
    """None when the routed design meets timing; else one line: the worst path, its slack and what to lower."""
    if timing["met"] and timing["wns_ns"] >= 0 and timing["whs_ns"] >= 0:
        return None
    worst = timing.get("worst_setup_path", {})
    if timing["wns_ns"] < 0:
        fmax = 1e3 / (clk_ns - timing["wns_ns"])
        return (f"setup slack {timing['wns_ns']:.3f} ns at {1e3 / clk_ns:.0f} MHz ({timing['tns_failing_endpoints']} "
                f"failing endpoints; worst path {worst.get('from', '?')} -> {worst.get('to', '?')}): the design runs at "
                f"about {fmax:.0f} MHz; lower the clock (a period of {clk_ns - timing['wns_ns']:.2f} ns or more, "
                "FinnConfig.clk_ns) or the folding (a --folding with less parallelism on that path's layer, or a lower "
                "--target-fps) and run `make bitstream` again")
    return (f"hold slack {timing['whs_ns']:.3f} ns ({timing['ths_failing_endpoints']} failing endpoints): a hold "
            "violation is not fixed by a slower clock; see the post-route timing report")


def write_vivado_report(run_dir: Path, bit: Path, standin: bool) -> dict:
    """finn/report/vivado.json: Vivado's post-route timing and utilisation of the bitfile `bit` (its sha256 ties
    them), beside FINN's estimate and Yosys's figures for the same build (estimate.json, synth.json), from the
    reports the implementation run wrote."""
    from flow.files import atomic_write_json, sha256

    d = Path(run_dir) / "finn"
    out = d / "vivado" / "report"
    timing_rpt = out / "post_route_timing.rpt"  # FINN's copy of impl_1/top_wrapper_timing_summary_routed.rpt
    util = sorted(d.glob("tmp/vivado_zynq_proj_*/finn_zynq_link.runs/impl_1/top_wrapper_utilization_placed.rpt"),
                  key=lambda f: f.stat().st_mtime)
    if not timing_rpt.is_file():
        raise FlowError(f"{timing_rpt}: FINN's bitfile step left no post-route timing report; the bitfile cannot be "
                        "checked. See " + str(d / "vivado" / "build_dataflow.log"))
    cfg = json.loads((d / "build_config.json").read_text())
    report = {"clock_ns": cfg["clk_ns"], "timing": parse_timing_summary(timing_rpt.read_text(errors="replace"),
                                                                      str(timing_rpt)),
              "reports": {"timing": str(timing_rpt)}, "standin": standin, "bitfile_sha256": sha256(bit)}
    if util:
        shutil.copy(util[-1], out / "post_place_utilization.rpt")
        report["utilization"] = parse_utilization(util[-1].read_text(errors="replace"), str(util[-1]))
        report["reports"]["utilization"] = str(out / "post_place_utilization.rpt")
    for name, key in (("estimate.json", "total_with_overhead"), ("synth.json", "total")):
        f = d / "report" / name
        if f.is_file():
            report[f"{name.split('.')[0]}_total"] = json.loads(f.read_text()).get(key)
    report["verdict"] = timing_verdict(report["timing"], cfg["clk_ns"]) or "timing met"
    atomic_write_json(d / "report" / "vivado.json", report)
    return report


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
    vivado = write_vivado_report(run_dir, bit, standin)  # the bitfile's post-route timing, before it goes anywhere
    met = vivado["verdict"] == "timing met"
    if met and not standin:  # RUN/deploy only ever gets Vivado's files, and only when they meet timing
        deploy = Path(run_dir) / "deploy"
        deploy.mkdir(exist_ok=True)
        bit, hwh = Path(shutil.copy(bit, deploy / "finn-accel.bit")), Path(shutil.copy(hwh, deploy / "finn-accel.hwh"))
        shutil.copy(Path(run_dir) / "manifest.json", deploy / "manifest.json")
        for f in (bit, hwh):
            record(f, [d / "build_done.json"], command)
        record(deploy / "manifest.json", [Path(run_dir) / "manifest.json"], command)
    reports = {name: str(out / "report" / name) for name in ("post_synth_resources.json", "post_route_timing.rpt",
                                                             "post_place_utilization.rpt", "post_synth_report.xml")
               if (out / "report" / name).exists()}
    reports["vivado.json"] = str(d / "report" / "vivado.json")
    return {"bitfile": str(bit), "hwh": str(hwh), "driver": str(out / "deploy" / "driver"),
            "stitched_ip": str(out / "stitched_ip"), "reports": reports, "standin": standin,
            "timing": vivado["verdict"], "timing_met": met}
